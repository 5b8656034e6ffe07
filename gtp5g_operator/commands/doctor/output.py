"""Pure formatting of the checks: text (one line each) or JSON, and the exit status.

JSON is for scripts: a list of objects with the same five lower-case keys in
the same order, levels "ok", "warn", "fail", and the varying part of a
repeated check (a PID) in `subject`, never in `name`.  Text is for the eye:
FAIL in capitals, the subject beside the name.
"""

from __future__ import annotations

import json
from typing import Sequence

from .model import FAIL, OK, Check

ADVICE_MARK = " -> "
EXIT_OK, EXIT_FAILED = 0, 1  # 2 is argparse's, for a wrong command line


def label(check: Check) -> str:
    return f"{check.name} {check.subject}" if check.subject else check.name


def format_line(check: Check, name_width: int) -> str:
    level = check.level.upper() if check.level == FAIL else check.level
    line = f"{level:<4}  {label(check):<{name_width}}  {check.saw}"
    if check.level != OK and check.advice:
        line += ADVICE_MARK + check.advice
    return line


def format_text(checks: Sequence[Check]) -> str:
    width = max((len(label(c)) for c in checks), default=0)
    return "\n".join(format_line(c, width) for c in checks)


def format_json(checks: Sequence[Check]) -> str:
    return json.dumps([{"name": c.name, "subject": c.subject or None, "level": c.level,
                        "saw": c.saw, "advice": c.advice} for c in checks], indent=2)


def exit_status(checks: Sequence[Check]) -> int:
    """0 when nothing failed (warnings do not fail), 1 otherwise."""
    return EXIT_FAILED if any(c.level == FAIL for c in checks) else EXIT_OK
