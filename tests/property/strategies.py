"""Strategies that reach the interesting inputs of the parsers, not only random bytes.

* numbers a JSON answer can hold that a naive decoder trips on: integers of
  thousands of digits (float() overflows; json.loads refuses more than 4,300),
  NaN and infinities (json.loads accepts them by default), -0.0, 2**63;
* JSON values of every type at every place, with the keys the decoders look
  for (so the generator does not need luck to hit "token" or "pid");
* JSON *text* as a server would send it, including nesting far past the
  recursion limit, truncations and byte flips of valid answers;
* mutations of real samples (captured trace text, ring-buffer pages and the
  kernel's layout files), so that inputs stay close enough to valid to get
  deep into the parser.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, List, Sequence

from hypothesis import strategies as st

# --- numbers and JSON values ---------------------------------------------------------------

HOSTILE_NUMBERS: List[Any] = [
    0, -1, 1, True, False, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64, -(2**63) - 1,
    10**20, 10**309, -(10**309), 10**4299,  # 4,300 digits: the most json.loads reads
    1e308, -1e308, 1.7976931348623157e308, 5e-324, -0.0, 0.5, 1e-300,
    math.inf, -math.inf, math.nan,
]

numbers = st.one_of(st.integers(), st.floats(), st.sampled_from(HOSTILE_NUMBERS))
finite_numbers = st.one_of(st.integers(min_value=-(2**64), max_value=2**64),
                           st.floats(allow_nan=False, allow_infinity=False))

# Keys the decoders under test look for: drawn often, so that a generated
# answer usually has the right shape in some places and the wrong one in others.
KEYS = ["token", "data", "expired_at", "exp", "iat", "nbf", "success", "error", "message",
        "scheduling", "strategies", "pid", "selectors", "rootHash", "policyID", "policies",
        "id", "items", "nodeNames", "commandRegex", "priority", "executionTime",
        "access_token", "refresh_token", "version", "status", "at", "ok", "count",
        "tracked_processes", "last_push", "at_mono", "error_kind", "resync_interval",
        "last_success_mono", "started_mono", "processes", "tids", "tgid", "since", "config",
        "api", "trace", "scheduler", "token_expires_at", "lines", "duration_s", ""]

# JSON strings can carry lone surrogates (a "\ud800" escape): str has no other limit.
surrogates = st.integers(0xD800, 0xDFFF).map(chr)
strings = st.one_of(
    st.text(max_size=30),
    st.sampled_from(KEYS),
    st.lists(st.one_of(st.characters(), surrogates), max_size=10).map("".join),
    st.sampled_from(["", " ", "\n", "\x00", "é", "\u2028", "a\nb", "x" * 5000]),
)
keys = st.one_of(st.sampled_from(KEYS), strings)
scalars = st.one_of(st.none(), st.booleans(), numbers, strings)


def json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """Any value json.loads can return (every type, hostile numbers and strings)."""
    return st.recursive(
        scalars,
        lambda children: st.one_of(st.lists(children, max_size=6),
                                   st.dictionaries(keys, children, max_size=6)),
        max_leaves=max_leaves)


def json_objects(max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """Any JSON object (small values: generating big ones costs more than testing them)."""
    return st.dictionaries(keys, json_values(max_leaves), max_size=8)


# --- JSON text as a server sends it -----------------------------------------------------------


def deep_text(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"data":' * depth + b"1" + b"}" * depth
    return b'{"token":' + b"[" * depth + b"]" * depth + b"}"  # deep in the right place


deep_texts = st.builds(deep_text, st.integers(1, 100_000),
                       st.sampled_from(["list", "object", "inside"]))


def _dumps(value: Any) -> bytes:
    # surrogatepass: a lone surrogate travels as its \u escape, as a server would send it
    return json.dumps(value).encode("utf-8", "surrogatepass")


json_texts = st.one_of(
    json_values().map(_dumps),  # NaN and Infinity appear as the tokens json.loads accepts
    deep_texts,
    st.sampled_from([b"", b" ", b"null", b"1" * 5000, b"1e99999", b"-1e99999", b"NaN",
                     b"\xef\xbb\xbf{}", b'"\\ud800"', b"{", b"[1,", b'{"a":1}{"b":2}',
                     '{"token": "x"}'.encode("utf-16"), b"\xff\xfe\x00"]),
    st.binary(max_size=200),
)


@st.composite
def mutated_bytes(draw: st.DrawFn, samples: st.SearchStrategy[bytes],
                  max_edits: int = 6) -> bytes:
    """A sample damaged the ways a bug, a bad read or an attacker could damage it."""
    data = bytearray(draw(samples))
    for _ in range(draw(st.integers(0, max_edits))):
        at = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["set", "insert", "delete", "cut", "repeat"]))
        if how == "set" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif how == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        elif how == "cut":
            del data[at:]
        elif how == "repeat":
            data[at:at] = data[at:at + draw(st.integers(1, 200))] * draw(st.integers(1, 8))
    return bytes(data)


json_answers = st.one_of(json_texts, mutated_bytes(json_texts))


def shallow(text: bytes) -> bool:
    """Nested far less deep than json.loads's recursion limit (about 1,000)."""
    return text.count(b"[") + text.count(b"{") < 500


# --- text files the kernel writes --------------------------------------------------------------

# What a number in a kernel file could be replaced with: too large for int(),
# negative, another script's digits, nothing.
HOSTILE_DIGITS = ["0", "-1", "9" * 5000, "18446744073709551616", "4294967296", "1_0", "٣",
                  "+5", " 7", "", "0x10", "1e3", "nan", "inf"]
_NUMBER = re.compile(r"\d+")


@st.composite
def mutated_text(draw: st.DrawFn, samples: Sequence[str]) -> str:
    """A kernel file with numbers replaced, lines dropped or doubled, bytes damaged."""
    text = draw(st.sampled_from(list(samples)))
    for _ in range(draw(st.integers(0, 4))):
        how = draw(st.sampled_from(["number", "drop-line", "double-line", "bytes"]))
        if how == "number":
            spots = list(_NUMBER.finditer(text))
            if spots:
                m = draw(st.sampled_from(spots))
                new = draw(st.one_of(st.sampled_from(HOSTILE_DIGITS),
                                     st.integers(0, 2**70).map(str)))
                text = text[:m.start()] + new + text[m.end():]
        elif how in ("drop-line", "double-line"):
            lines = text.splitlines(keepends=True)
            if lines:
                i = draw(st.integers(0, len(lines) - 1))
                lines[i:i + 1] = [] if how == "drop-line" else [lines[i], lines[i]]
                text = "".join(lines)
        else:
            raw = draw(mutated_bytes(st.just(text.encode()), max_edits=3))
            text = raw.decode("utf-8", "replace")  # as files.read_small_text decodes
    return text


def texts_of(samples: Sequence[str]) -> st.SearchStrategy[str]:
    """Arbitrary text, and the samples mutated."""
    return st.one_of(st.text(max_size=300), mutated_text(samples))


