"""Go's encoding/json as Gthulhu's Go services use it, for the fakes: decoding a
request body into a struct (json.NewDecoder(body).Decode, as their JSONBind does),
json.Unmarshal's errors for a token's header and claims, and the encoder's output.

Checked against the real Decision Maker by tests/contract/.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional, Tuple, Union

__all__ = ["GoJSONError", "Kind", "go_decode", "go_fold", "go_json", "go_unmarshal_object",
           "zero_value"]


Kind = Union[str, Tuple[str, Any], Dict[str, Any]]
"""A field's Go type: "string", "int", "int64", "bool", ("list", Kind) or a struct
given as {json name: Kind}."""

_INT_RANGES = {"int": (-(1 << 63), (1 << 63) - 1), "int64": (-(1 << 63), (1 << 63) - 1)}


class GoJSONError(ValueError):
    """What json.Decoder.Decode would have returned as an error."""


class _Obj(list):  # type: ignore[type-arg]
    """A JSON object as its (key, value) pairs, in order, duplicates kept."""


class _Slice(list):  # type: ignore[type-arg]
    """A decoded Go slice: its elements, and the backing array behind them.  Decoding
    into the same slice again (a duplicate key) reuses the backing array's elements
    without zeroing them: decode.go array() sets the length, never clears."""

    def __init__(self, visible: List[Any], backing: List[Any]) -> None:
        super().__init__(visible)
        self.backing = backing


def zero_value(kind: Kind) -> Any:
    """The Go zero value of a field of this kind."""
    if isinstance(kind, dict):
        return {name: zero_value(k) for name, k in kind.items()}
    if isinstance(kind, tuple):
        return _Slice([], [])
    return {"string": "", "int": 0, "int64": 0, "bool": False}[kind]


def _plain(value: Any) -> Any:
    """Decoded value without the slices' backing arrays."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _type_name(value: Any) -> str:
    if isinstance(value, _Obj):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    return "number"


def _fold_rune(char: str) -> str:
    """fold.go foldRune: the smallest rune of the character's case-fold orbit."""
    orbit, todo = {char}, [char]
    while todo:
        current = todo.pop()
        for other in (current.lower(), current.upper(), current.casefold()):
            if len(other) == 1 and other not in orbit:
                orbit.add(other)
                todo.append(other)
    return min(orbit)


def go_fold(name: str) -> str:
    """fold.go foldName: how a JSON key is compared with a field name when the exact
    name does not match (ASCII upper-cased; others by simple case folding, so the
    Kelvin sign matches k and the long s matches s)."""
    return "".join(c.upper() if c < "\x80" else _fold_rune(c) for c in name)


def _field(key: str, kind: Dict[str, Kind]) -> Optional[str]:
    if key in kind:
        return key
    folded = go_fold(key)
    return next((name for name in kind if go_fold(name) == folded), None)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _decode(value: Any, kind: Kind, where: str, into: Any) -> Any:
    """`value` decoded into the Go value `into` of type `kind` (null leaves a struct or a
    scalar unchanged and makes a slice nil)."""
    if isinstance(kind, dict):
        if value is None:
            return into
        if not isinstance(value, _Obj):
            raise GoJSONError(f"json: cannot unmarshal {_type_name(value)} into Go value {where}")
        result = dict(into)
        for key, item in value:
            name = _field(key, kind)
            if name is not None:  # unknown fields are ignored (no DisallowUnknownFields)
                result[name] = _decode(item, kind[name], f"{where}.{name}", result[name])
        return result
    if isinstance(kind, tuple):
        if value is None:
            return _Slice([], [])
        if not isinstance(value, list) or isinstance(value, _Obj):
            raise GoJSONError(f"json: cannot unmarshal {_type_name(value)} into Go value {where}")
        if not value:
            return _Slice([], [])  # an empty array: a new empty slice
        backing = list(into.backing if isinstance(into, _Slice) else into)
        for i, item in enumerate(value):
            base = backing[i] if i < len(backing) else zero_value(kind[1])
            decoded = _decode(item, kind[1], f"{where}[{i}]", base)
            if i < len(backing):
                backing[i] = decoded
            else:
                backing.append(decoded)
        return _Slice(backing[:len(value)], backing)
    if value is None:
        return into
    if kind == "string":
        if isinstance(value, str):
            return _SURROGATE.sub("\ufffd", value)  # Go decodes a lone \ud800 as U+FFFD
    elif kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        # type() is int: excludes bool; json gives a float for 1.5, 1.0 and 1e3, which Go
        # refuses for an int as well
        if type(value) is int and low <= value <= high:
            return value
    else:
        raise AssertionError(f"unknown kind {kind!r}")
    raise GoJSONError(f"json: cannot unmarshal {_type_name(value)} into Go struct field "
                      f"{where} of type {kind}")


def _reject_constant(name: str) -> Any:
    raise GoJSONError(f"invalid character {name[0]!r} looking for beginning of value")


def go_decode(raw: bytes, schema: Dict[str, Kind]) -> Dict[str, Any]:
    """Decode a request body into the struct `schema` the way JSONBind does.

    Only the first JSON value is read (trailing bytes are ignored, as by
    json.Decoder); an empty body is an error (EOF); a top-level `null` gives the
    zero struct; a duplicate key decodes into what the first one left (merging
    objects, reusing slice elements).  Raises GoJSONError.
    """
    text = raw.decode("utf-8", errors="replace").lstrip(" \t\r\n")
    if not text:
        raise GoJSONError("EOF")
    decoder = json.JSONDecoder(object_pairs_hook=_Obj, parse_constant=_reject_constant)
    try:
        value, _ = decoder.raw_decode(text)
    except json.JSONDecodeError as e:
        raise GoJSONError(str(e)) from None
    return _plain(_decode(value, schema, "request", zero_value(schema)))  # type: ignore[no-any-return]


def go_json(value: Any) -> bytes:
    """json.NewEncoder(w).Encode(value): compact, HTML characters escaped, newline."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return (text + "\n").encode()


_JSON_STARTS = set('{["-0123456789tfn')


def _go_quote_char(byte: int) -> str:
    """encoding/json quoteChar: how a syntax error names the offending byte."""
    if byte == ord("'"):
        return "'\\''"
    if byte == ord('"'):
        return "'\"'"
    text = json.dumps(chr(byte))[1:-1] if byte < 0x80 else f"\\u{byte:04x}"
    return "'" + (chr(byte) if 0x20 <= byte < 0x7F else text) + "'"


def go_unmarshal_object(data: bytes, go_type: str) -> Dict[str, Any]:
    """json.Unmarshal into an object of `go_type`; ValueError with Go's text.  The text
    is Go's for an empty or truncated input, a bad first character and a value that is
    not an object; other syntax errors get a Go-like approximation."""
    stripped = data.lstrip(b" \t\r\n")
    if stripped and chr(stripped[0]) not in _JSON_STARTS:
        raise ValueError(f"invalid character {_go_quote_char(stripped[0])} "
                         "looking for beginning of value")
    try:
        value = json.loads(data.decode("utf-8", errors="replace"),
                           parse_constant=_reject_constant)
    except (json.JSONDecodeError, GoJSONError) as e:
        if isinstance(e, json.JSONDecodeError) and e.pos >= len(e.doc.rstrip()):
            raise ValueError("unexpected end of JSON input") from None
        raise ValueError(f"invalid character in JSON input ({e})") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"json: cannot unmarshal {_type_name(value)} into Go value of type "
                         + go_type)
    return value
