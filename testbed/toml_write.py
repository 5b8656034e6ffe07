"""One TOML writer for the tests: any value a test puts in a configuration,
hostile ones included, written as TOML text the parser then judges."""

from __future__ import annotations

import dataclasses
import datetime
import math
from typing import Any, Dict


def toml_string(text: str) -> str:
    """A TOML basic string; every control character and non-ASCII one escaped."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif code < 0x20 or code >= 0x7F:
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_key(k: str) -> str:
    return k if k and all(c.isascii() and (c.isalnum() or c in "-_") for c in k) \
        else toml_string(k)


@dataclasses.dataclass(frozen=True)
class Raw:
    """TOML text written as is: values Python cannot even print (a decimal of
    5,000 digits) and the TOML spellings of values it cannot hold."""

    text: str


def toml_value(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        # hex for the huge ones: a decimal of over 4,300 digits cannot even be written
        return str(value) if abs(value) < 10**4000 else hex(abs(value))
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}"
                               for k, x in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def toml_document(doc: Dict[str, Any]) -> str:
    """{section: {key: value}} as tables; a section whose body is not a dict is a
    top-level key (written before any table)."""
    lines = []
    for section, body in doc.items():
        if isinstance(body, dict):
            lines.append(f"[{toml_key(section)}]")
            lines.extend(f"{toml_key(k)} = {toml_value(x)}" for k, x in body.items())
        else:
            lines.insert(0, f"{toml_key(section)} = {toml_value(body)}")
    return "\n".join(lines) + "\n"
