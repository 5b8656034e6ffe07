"""testbed/go_regexp.py: Go's regexp (RE2 syntax) on Python's re.  Each expectation
was read from Go 1.25's regexp; tests/contract/ compares the same with the real
Decision Maker where one is built."""

from __future__ import annotations

from typing import Dict, Optional

import pytest

from testbed.go_regexp import compile_re2

KELVIN, LONG_S, DOTLESS_I = "\u212a", "\u017f", "\u0131"

MATCHES: Dict[str, Dict[str, bool]] = {
    "^(?:nr-gnb|nr-gnb-rlc)$": {"nr-gnb": True, "nr-gnb-rlc": True, "nr-gnbx": False,
                                "gnb worker": False},
    r"^gnb\ worker$": {"gnb worker": True},  # escaped punctuation is itself
    r"[[:alpha:]]{2}\d": {"Ab9": True, "A9": False},
    r"^[[:^digit:]]+$": {"ab": True, "a1": False},
    r"^\pL+$": {"\u00e9t\u00e9": True, "a1": False},
    r"^\p{Lu}": {"\u00c9a": True, "\u00e9a": False},
    r"^\PL": {"1": True, "a": False},
    "(?i)^k$": {"K": True, KELVIN: True, "k": True},  # Go's simple case folding
    "(?i)^[^k]$": {KELVIN: False, "x": True},  # folded first, then negated
    "(?i)^[a-z]$": {DOTLESS_I: False, LONG_S: True, "Q": True},
    "(?i)^\u00e9$": {"\u00c9": True},
    "^a(?i)b|c$": {"aB": True, "C": True, "xc": True},  # (?i) lasts across the |
    "^a{,2}b$": {"a{,2}b": True, "ab": False},  # not a repetition: literal
    "^a{2}(?s)+$": {"aaaa": True, "aaa": False},  # (?s) is transparent to the +
    r"^\Qa.b\E$": {"a.b": True, "axb": False},
    r"^\x{41}\101$": {"AA": True},
    "a$": {"a\n": False, "a": True},  # $ is the end of the text without (?m)
    "(?m)a$": {"a\nb": True},
    r"^\s$": {"\v": False, " ": True},  # Go's \s has no \v
    r"\bx\b": {"\u00e9x\u00e9": True, "a x": True},  # ASCII word boundaries
    "^^*a": {"a": True},  # an assertion can be repeated
    "(?P<1a>x)(?P<1a>y)": {"xy": True},  # Go allows such names, even twice
    r"[\d-z]": {"-": True},
    "": {"anything": True},
}
REFUSED = ["(", "a**", "a*+", "a{1001}", "a{2,1}", "(?=a)", "(?!a)", "(?<=a)b", r"(a)\1",
           r"\Z", "(?x)a", "(?#c)a", r"\C", r"\u0041", "[z-a]"]


@pytest.mark.parametrize("pattern", sorted(MATCHES))
def test_matches_as_go_does(pattern: str) -> None:
    compiled = compile_re2(pattern)
    assert compiled is not None
    got: Dict[str, Optional[bool]] = {text: bool(compiled.search(text))
                                      for text in MATCHES[pattern]}
    assert got == MATCHES[pattern]


@pytest.mark.parametrize("pattern", REFUSED)
def test_refused_where_go_refuses(pattern: str) -> None:
    assert compile_re2(pattern) is None
