"""What every doctor check returns: one `Check` per line of the report."""

from __future__ import annotations

from dataclasses import dataclass

from ...core.words import duration, one_line, plural

__all__ = ["FAIL", "LEVELS", "OK", "WARN", "Check", "duration", "fail", "ok", "plural", "warn"]

OK, WARN, FAIL = "ok", "warn", "FAIL"
LEVELS = (OK, WARN, FAIL)


@dataclass(frozen=True)
class Check:
    name: str
    level: str  # ok | warn | FAIL
    saw: str  # what was found, in one line
    advice: str = ""  # what to do about it ("" when ok)

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"unknown check level {self.level!r}")
        object.__setattr__(self, "saw", one_line(self.saw, 600))
        object.__setattr__(self, "advice", one_line(self.advice, 600))


def ok(name: str, saw: str) -> Check:
    return Check(name, OK, saw)


def warn(name: str, saw: str, advice: str) -> Check:
    return Check(name, WARN, saw, advice)


def fail(name: str, saw: str, advice: str) -> Check:
    return Check(name, FAIL, saw, advice)


