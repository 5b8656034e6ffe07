"""Go's regexp.Compile (RE2 syntax) on top of Python's `re`: a pattern is translated,
or refused where Go refuses it.

The fake Decision Maker matches rules with this; the contract tests
(tests/contract/test_dm_strategies.py) check it against the real DM.  Covered as in
Go 1.25: flags i, m, s, U anywhere (a mid-pattern `(?i)` lasts to the end of its
group, across `|`), greediness swapped by U, `$` as the end of the text without m,
ASCII \\d \\s \\w \\b and POSIX classes (also negated, also inside brackets), \\pL,
\\p{Lu}, \\PL and \\p{^L} for Unicode general categories (Python's tables), \\Q...\\E,
\\x{10FFFF}, octal \\123, `(?<name>` and `(?P<name>`, `{` that starts no repetition as a
literal, and the refusals: repetition of a repetition (so possessive `*+`), counts
over 1000, back-references, look-arounds, `(?#`, flags other than imsU, unknown
escapes (\\Z, \\G, \\C, \\u, ...).  Not covered: Unicode scripts (\\p{Greek}: refused
here, accepted by Go), and case folding where Python's differs from Go's simple
folding (Python's (?i)[a-z] also matches U+0130 and U+0131).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Pattern, Tuple

__all__ = ["RE2Error", "compile_re2", "translate"]

Ranges = List[Tuple[int, int]]
MAX_RUNE = 0x10FFFF
MAX_REPEAT = 1000
_PERL = {"d": [(0x30, 0x39)], "s": [(0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20)],
         "w": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]}
_POSIX = {"alnum": [(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)],
          "alpha": [(0x41, 0x5A), (0x61, 0x7A)], "ascii": [(0x00, 0x7F)],
          "blank": [(0x09, 0x09), (0x20, 0x20)], "cntrl": [(0x00, 0x1F), (0x7F, 0x7F)],
          "digit": [(0x30, 0x39)], "graph": [(0x21, 0x7E)], "lower": [(0x61, 0x7A)],
          "print": [(0x20, 0x7E)],
          "punct": [(0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)],
          "space": [(0x09, 0x0D), (0x20, 0x20)], "upper": [(0x41, 0x5A)],
          "word": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
          "xdigit": [(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)]}
_SIMPLE_ESCAPES = {"a": "\\a", "f": "\\f", "t": "\\t", "n": "\\n", "r": "\\r", "v": "\\v"}
_REPEAT = re.compile(r"\{(\d+)(?:(,)(\d*))?\}")
_POSIX_CLASS = re.compile(r"\[:(\^?)([a-z]+):\]")
_GROUP_NAME = re.compile(r"[A-Za-z0-9_]+")


class RE2Error(ValueError):
    """Go's regexp.Compile would return an error for this pattern (or the
    translation does not support it)."""


def _negate(ranges: Ranges) -> Ranges:
    out, low = [], 0
    for lo, hi in sorted(ranges):
        if lo > low:
            out.append((low, lo - 1))
        low = max(low, hi + 1)
    if low <= MAX_RUNE:
        out.append((low, MAX_RUNE))
    return out


@functools.lru_cache(maxsize=1)
def _category_table() -> Dict[str, Ranges]:
    """Every two-letter general category's ranges (one pass over the code points)."""
    table: Dict[str, Ranges] = {}
    for cp in range(MAX_RUNE + 1):
        ranges = table.setdefault(unicodedata.category(chr(cp)), [])
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    return table


def _category(name: str) -> Ranges:
    """Go's \\p{name} for a general category ("L", "Lu", ...) or "Any"."""
    if name == "Any":
        return [(0, MAX_RUNE)]
    table = _category_table()
    if len(name) == 2 and name in table:
        return list(table[name])
    if name == "LC" or (len(name) == 1 and name in "CLMNPSZ"):
        members = ("Lu", "Ll", "Lt") if name == "LC" else [c for c in table if c[0] == name]
        return sorted(r for cat in members for r in table.get(cat, []))
    raise RE2Error(f"invalid or unsupported character class range: \\p{{{name}}}")


@functools.lru_cache(maxsize=1)
def _fold_index() -> Dict[str, List[str]]:
    """simple case fold -> the characters that fold to it (cased scripts end below
    U+1F000)."""
    index: Dict[str, List[str]] = {}
    for cp in range(0x1F000):
        char = chr(cp)
        folded = char.casefold()
        if len(folded) == 1 and folded != char:
            index.setdefault(folded, []).append(char)
    return index


def _fold_key(char: str) -> str:
    folded = char.casefold()
    return folded if len(folded) == 1 else char


def fold_orbit(char: str) -> List[str]:
    """The characters Go's (?i) treats as equal to `char` (its simple case-fold orbit:
    k, K and the Kelvin sign; s, S and the long s; but the dotless i only itself)."""
    key = _fold_key(char)
    return sorted({char, key, *_fold_index().get(key, [])} if key != char or
                  key in _fold_index() else {char})


def _folded(ranges: Ranges) -> Ranges:
    """The ranges with every member's fold orbit added (a large class, such as a
    category or a negation, is taken as closed under folding already)."""
    if sum(hi - lo + 1 for lo, hi in ranges) > 20000:
        return ranges
    extra = [(ord(c), ord(c)) for lo, hi in ranges for cp in range(lo, hi + 1)
             for c in fold_orbit(chr(cp))]
    return sorted(set(ranges + extra))


def _class_text(ranges: Ranges) -> str:
    if not ranges:
        return "[^\\x00-\\U0010ffff]"  # matches nothing
    return "[" + "".join(f"\\U{lo:08x}" if lo == hi else f"\\U{lo:08x}-\\U{hi:08x}"
                         for lo, hi in sorted(ranges)) + "]"


@dataclass
class _Frame:
    """One group being translated: its flags, and the scoped groups a mid-group
    `(?flags)` opened (closed before `|` and `)`, reopened after `|`)."""

    flags: str
    start: int = 0  # where the group's text begins in the output
    implicit: List[str] = field(default_factory=list)


class _Translator:
    def __init__(self, pattern: str) -> None:
        self.src = pattern
        self.pos = 0
        self.out: List[str] = []
        self.frames = [_Frame("")]
        self.atom = False  # the last thing emitted can take a repetition
        self.repeated = False  # the last thing emitted was a repetition
        self.flag_openers = 0  # (?flags) openers emitted since the last atom
        self.atom_start = 0  # where the last atom begins in the output

    # --- helpers -------------------------------------------------------------------

    def peek(self, n: int = 1) -> str:
        return self.src[self.pos:self.pos + n]

    def take(self) -> str:
        if self.pos >= len(self.src):
            raise RE2Error("trailing backslash or unexpected end")
        char = self.src[self.pos]
        self.pos += 1
        return char

    def emit(self, text: str, atom: bool = True) -> None:
        self.atom_start = len(self.out)
        self.out.append(text)
        self.atom, self.repeated = atom, False
        self.flag_openers = 0

    @staticmethod
    def python_flags(flags: str) -> str:
        """A Python scoped group for Go's flags (i and U are done by the translation)."""
        on = "".join(f for f in "ms" if f in flags)
        off = "".join(f for f in "ms" if f not in flags)
        return f"(?{on}{'-' + off if off else ''}:"

    # --- the pattern -------------------------------------------------------------------

    def run(self) -> str:
        while self.pos < len(self.src):
            self.step()
        if len(self.frames) != 1:
            raise RE2Error("missing closing )")
        self.out.append(")" * len(self.frames[0].implicit))
        return "".join(self.out)

    def step(self) -> None:
        char = self.take()
        frame = self.frames[-1]
        if char == "\\":
            self.escape()
        elif char == "[":
            self.emit_class(*self.bracket())
        elif char == "(":
            self.open_group()
        elif char == ")":
            if len(self.frames) == 1:
                raise RE2Error("unexpected )")
            self.out.append(")" * len(frame.implicit) + ")")
            self.atom_start = self.frames.pop().start
            self.atom, self.repeated, self.flag_openers = True, False, 0
        elif char == "|":
            self.out.append(")" * len(frame.implicit) + "|" + "".join(frame.implicit))
            self.atom = self.repeated = False
            self.flag_openers = 0
        elif char in "*+?":
            self.repetition(char)
        elif char == "{":
            match = _REPEAT.match(self.src, self.pos - 1)
            if match is None:
                self.emit("\\{")  # not a repetition: a literal
            else:
                self.pos = match.end()
                low = int(match.group(1))
                high = low if match.group(2) is None else (
                    int(match.group(3)) if match.group(3) else None)
                if low > MAX_REPEAT or (high is not None and (high > MAX_REPEAT or high < low)):
                    raise RE2Error(f"invalid repeat count: {match.group(0)}")
                self.repetition(match.group(0))
        elif char == "$":
            self.emit("(?:$)" if "m" in frame.flags else "(?:\\Z)")
        elif char == "^":
            self.emit("(?:^)")
        elif char == ".":
            self.emit(char)
        else:
            self.emit_literal(char)

    def emit_literal(self, char: str) -> None:
        if "i" in self.frames[-1].flags and len(fold_orbit(char)) > 1:
            self.emit_class([(ord(char), ord(char))], False)
        else:
            self.emit(re.escape(char))

    def emit_class(self, ranges: Ranges, negate: bool) -> None:
        """A class: folded first under (?i), then negated (as Go's parser does)."""
        if "i" in self.frames[-1].flags:
            ranges = _folded(ranges)
        self.emit(_class_text(_negate(ranges) if negate else ranges))

    def repetition(self, operator: str) -> None:
        if self.repeated:
            raise RE2Error(f"invalid nested repetition operator: {operator}")
        if not self.atom:
            raise RE2Error(f"missing argument to repetition operator: {operator}")
        lazy = self.peek() == "?"
        if lazy:
            self.pos += 1
        if lazy != ("U" in self.frames[-1].flags):  # U swaps greedy and lazy
            operator += "?"
        # The atom (maybe itself a repetition, maybe followed by (?flags), which Go
        # looks through) in a group of its own: Python would read `a{2}+` as possessive.
        end = len(self.out) - self.flag_openers
        self.out[self.atom_start:end] = ["(?:" + "".join(self.out[self.atom_start:end]) + ")"
                                         + operator]
        self.repeated = True

    def open_group(self) -> None:
        frame = self.frames[-1]
        if self.peek() != "?":
            self.frames.append(_Frame(frame.flags, len(self.out)))
            self.out.append("(")
            self.atom, self.flag_openers = False, 0
            return
        self.pos += 1
        for prefix in ("P<", "<"):
            if self.src.startswith(prefix, self.pos) and not self.src.startswith("<=", self.pos) \
                    and not self.src.startswith("<!", self.pos):
                end = self.src.find(">", self.pos)
                name = self.src[self.pos + len(prefix):end] if end >= 0 else ""
                if end < 0 or not _GROUP_NAME.fullmatch(name):
                    raise RE2Error(f"invalid named capture: {name!r}")
                self.pos = end + 1
                self.frames.append(_Frame(frame.flags, len(self.out)))
                self.out.append("(")  # the name does not matter for matching
                self.atom, self.flag_openers = False, 0
                return
        flags, negated, sign_seen = set(frame.flags), False, False
        while True:
            char = self.take()
            if char in "imsU":
                (flags.discard if negated else flags.add)(char)
                sign_seen = sign_seen or negated
            elif char == "-" and not negated:
                negated = True
            elif char in ":)":
                if negated and not sign_seen:
                    raise RE2Error("missing flags after -")
                break
            else:
                raise RE2Error(f"invalid or unsupported Perl syntax: (?{char}")
        new = "".join(sorted(flags))
        scoped = self.python_flags(new)
        if char == ":":
            self.frames.append(_Frame(new, len(self.out)))
            self.out.append(scoped)
            self.atom, self.flag_openers = False, 0
        else:  # (?flags): the rest of the current group; the atom before stays repeatable
            self.out.append(scoped)
            frame.implicit.append(scoped)
            frame.flags = new
            self.flag_openers += 1
        self.repeated = False

    # --- escapes and classes -------------------------------------------------------------

    def escape(self) -> None:
        char = self.take()
        if char in "dDsSwW" or char in "pP":
            self.emit_class(self.class_escape(char), False)
        elif char == "Q":
            end = self.src.find("\\E", self.pos)
            literal = self.src[self.pos:] if end < 0 else self.src[self.pos:end]
            self.pos = len(self.src) if end < 0 else end + 2
            for each in literal:
                self.emit_literal(each)
            self.repeated = False  # \\Q...\\E is a token of its own, even when empty
        elif char == "A":
            self.emit("(?:\\A)")  # empty-width assertions can be repeated in Go
        elif char == "z":
            self.emit("(?:\\Z)")
        elif char in "bB":
            self.emit(f"(?a:\\{char})")
        else:
            self.emit_literal(chr(self.char_escape(char)))

    def char_escape(self, char: str) -> int:
        """The code point of a one-character escape (after the backslash)."""
        if char == "x":
            if self.peek() == "{":
                end = self.src.find("}", self.pos)
                digits = self.src[self.pos + 1:end] if end >= 0 else ""
                if not re.fullmatch(r"[0-9A-Fa-f]+", digits) or int(digits, 16) > MAX_RUNE:
                    raise RE2Error("invalid escape sequence: \\x{")
                self.pos = end + 1
                return int(digits, 16)
            digits = self.peek(2)
            if not re.fullmatch(r"[0-9A-Fa-f]{2}", digits):
                raise RE2Error("invalid escape sequence: \\x")
            self.pos += 2
            return int(digits, 16)
        if char in "01234567":
            if char != "0" and not ("0" <= self.peek() <= "7"):
                raise RE2Error(f"invalid escape sequence: \\{char} (back-reference)")
            value = int(char)
            for _ in range(2):
                if not ("0" <= self.peek() <= "7"):
                    break
                value = value * 8 + int(self.take())
            return value
        if char in _SIMPLE_ESCAPES:
            return ord(_SIMPLE_ESCAPES[char].encode().decode("unicode_escape"))
        if char < "\x80" and not char.isalnum():
            return ord(char)  # escaped punctuation is itself
        raise RE2Error(f"invalid escape sequence: \\{char}")

    def class_escape(self, char: str) -> Ranges:
        if char.lower() in _PERL:
            ranges = _PERL[char.lower()]
            return _negate(ranges) if char.isupper() else list(ranges)
        negate = char == "P"
        if self.peek() == "{":
            end = self.src.find("}", self.pos)
            if end < 0:
                raise RE2Error("invalid character class range: \\p{")
            name = self.src[self.pos + 1:end]
            self.pos = end + 1
            if name.startswith("^"):
                negate, name = not negate, name[1:]
        else:
            name = self.take()
        ranges = _category(name)
        return _negate(ranges) if negate else ranges

    def bracket(self) -> Tuple[Ranges, bool]:
        """A [...] class (the `[` taken): its ranges, and whether it is negated."""
        negate = self.peek() == "^"
        if negate:
            self.pos += 1
        ranges: Ranges = []
        first = True
        while True:
            if self.pos >= len(self.src):
                raise RE2Error("missing closing ]")
            if self.peek() == "]" and not first:
                self.pos += 1
                break
            first = False
            posix = _POSIX_CLASS.match(self.src, self.pos)
            if posix is not None:
                if posix.group(2) not in _POSIX:
                    raise RE2Error(f"invalid character class range: {posix.group(0)}")
                self.pos = posix.end()
                found = _POSIX[posix.group(2)]
                ranges += _negate(found) if posix.group(1) else found
                continue
            char = self.take()
            if char == "\\" and (self.peek() in ("d", "D", "s", "S", "w", "W", "p", "P")):
                ranges += self.class_escape(self.take())
                continue
            low = self.class_char(char)
            high = low
            if self._range_follows():
                self.pos += 1
                nxt = self.take()
                if nxt == "\\" and self.peek() in ("d", "D", "s", "S", "w", "W", "p", "P"):
                    raise RE2Error("invalid character class range")
                high = self.class_char(nxt)
                if high < low:
                    raise RE2Error("invalid character class range")
            ranges.append((low, high))
        return ranges, negate

    def _range_follows(self) -> bool:
        after = self.peek(2)
        return len(after) == 2 and after[0] == "-" and after[1] != "]"

    def class_char(self, char: str) -> int:
        if char != "\\":
            return ord(char)
        return self.char_escape(self.take())


def translate(pattern: str) -> str:
    """The Python `re` pattern that matches as Go's would; RE2Error where Go refuses."""
    return _Translator(pattern).run()


@functools.lru_cache(maxsize=256)
def compile_re2(pattern: str) -> Optional[Pattern[str]]:
    """regexp.Compile: the compiled pattern, or None where Go would return an error."""
    try:
        return re.compile(translate(pattern))
    except (RE2Error, re.error, OverflowError, RecursionError):
        return None
