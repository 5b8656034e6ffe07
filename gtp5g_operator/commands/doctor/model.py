"""What every doctor check returns: one `Check` per line of the report."""

from __future__ import annotations

from dataclasses import dataclass

OK, WARN, FAIL = "ok", "warn", "FAIL"
LEVELS = (OK, WARN, FAIL)


def one_line(text: object, limit: int = 600) -> str:
    """Server messages and file names may hold newlines: a report line must not."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit] + "…"


@dataclass(frozen=True)
class Check:
    name: str
    level: str  # ok | warn | FAIL
    saw: str  # what was found, in one line
    advice: str = ""  # what to do about it ("" when ok)

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"unknown check level {self.level!r}")
        object.__setattr__(self, "saw", one_line(self.saw))
        object.__setattr__(self, "advice", one_line(self.advice))


def ok(name: str, saw: str) -> Check:
    return Check(name, OK, saw)


def warn(name: str, saw: str, advice: str) -> Check:
    return Check(name, WARN, saw, advice)


def fail(name: str, saw: str, advice: str) -> Check:
    return Check(name, FAIL, saw, advice)


def plural(n: int, word: str, many: str = "") -> str:
    """"1 process", "2 processes", "3 strategies" (with many="strategies")."""
    if n == 1:
        return f"{n} {word}"
    return f"{n} {many or (word + 'es' if word.endswith('s') else word + 's')}"


def duration(seconds: float) -> str:
    """A lifetime or an age, the way a person reads it: 45 s, 12 min, 23 h 59 min."""
    s = round(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"
