"""What every doctor check returns: one `Check` per line of the report."""

from __future__ import annotations

from dataclasses import dataclass

from ...core.words import one_line

OK, WARN, FAIL = "ok", "warn", "fail"
LEVELS = (OK, WARN, FAIL)


@dataclass(frozen=True)
class Check:
    name: str  # stable, lower-case, never a PID: what scripts select on
    level: str  # ok | warn | fail
    saw: str  # what was found, in one line
    advice: str = ""  # what to do about it ("" when ok)
    subject: str = ""  # which one, for a check that repeats (a PID, a process name)

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"unknown check level {self.level!r}")
        object.__setattr__(self, "saw", one_line(self.saw, 600))
        object.__setattr__(self, "advice", one_line(self.advice, 600))


def ok(name: str, saw: str, subject: str = "") -> Check:
    return Check(name, OK, saw, "", subject)


def warn(name: str, saw: str, advice: str, subject: str = "") -> Check:
    return Check(name, WARN, saw, advice, subject)


def fail(name: str, saw: str, advice: str, subject: str = "") -> Check:
    return Check(name, FAIL, saw, advice, subject)
