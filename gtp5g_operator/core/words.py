"""Numbers and values in words, the same way in logs, `status`, `doctor` and /health."""

from __future__ import annotations

import math
import time

# The endpoint process imports this module (health.py): `typing` would cost it about
# 2 MB of memory, and the annotations need it only for the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Optional


def u64(text: str) -> Optional[int]:
    """`text` as an unsigned 64-bit ASCII decimal (systemd's variables, the kernel's
    counters), else None.  str.isdigit() alone takes '²' (which int() refuses) and any
    length (too large for a float): either crashed the start."""
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        return None
    value = int(text)
    return value if value < 2**64 else None


def plural(n: int, word: str, many: str = "") -> str:
    """"1 process", "2 processes", "3 strategies" (with many="strategies")."""
    if n == 1:
        return f"{n} {word}"
    return f"{n} {many or (word + 'es' if word.endswith('s') else word + 's')}"


DAY = 86400


def duration(seconds: float) -> str:
    """A lifetime or an age, the way a person reads it: 45 s, 12 min, 23 h 59 min, 9 d 4 h
    (a service runs for months: "2400 h 0 min" had to be worked out)."""
    s = round(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 2 * DAY:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // DAY} d {s % DAY // 3600} h"


def printable(text: str) -> str:
    """`text` with every character a terminal or the journal would act on (ESC and
    the other controls, newlines, bidi overrides, lone surrogates) escaped as
    Python writes it: a process's name or path is anyone's choice, and reaches
    the logs, `status` and `doctor`."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def one_line(value: Any, limit: int = 200) -> str:
    """Any value on one line, shortened and `printable`: server messages and file
    names may hold newlines and control sequences, and a report or status line must
    not ("?" for None).  Shortened in the middle: a line's end is its verdict (doctor's
    "...: not boosted: its uid 1000 is not in match.uid"), and an executable's path
    (anyone's choice, up to 4 KiB) before it cut that off, leaving text of the path's
    own (", 1 thread: would be boosted") as the line's last word."""
    if value is None:
        return "?"
    flat = printable(" ".join(str(value).split()))
    if len(flat) <= limit:
        return flat
    head = limit // 2
    return flat[:head] + "…" + flat[len(flat) - (limit - head):]


def shown(value: Any) -> str:
    """A value of unknown JSON in an error message: its repr (a container's type), short."""
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def obj(value: Any) -> Dict[str, Any]:
    """A JSON object, or {} for anything else (a state.json's part of any shape)."""
    return value if isinstance(value, dict) else {}


def finite(value: Any) -> Optional[float]:
    """A finite number, else None (NaN or infinity cannot be a time or a count)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def elapsed(at: Any, at_mono: Any, now: float, now_mono: Optional[float]) -> float:
    """Seconds since something the daemon did at wall-clock `at`, monotonic `at_mono`
    (this boot's: the runtime directory does not outlive it): by the monotonic clock
    when both are known, as /health judges, since NTP or a resumed VM may have
    stepped the wall clock in between; else by the wall clock.  Never negative."""
    then, mono = finite(at_mono), finite(now_mono)
    if then is not None and mono is not None and then <= mono:
        return mono - then
    wall = finite(at)
    return max(0.0, now - wall) if wall is not None else 0.0


def when(ts: Any, now: float) -> str:
    """A wall-clock time and its age: "2026-12-06 14:03:12 (5s ago)", or "-"."""
    t = finite(ts)
    if t is None:
        return "-"
    age = max(0, int(now - t))
    ago = (f"{age}s" if age < 120 else f"{age // 60}m" if age < 7200 else
           f"{age // 3600}h" if age < 2 * DAY else f"{age // DAY}d")
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f" ({ago} ago)"
    except (OverflowError, OSError, ValueError):
        return "-"
