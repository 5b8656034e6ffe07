"""Pure formatting of the checks: text (one line each) or JSON, and the exit status."""

from __future__ import annotations

import dataclasses
import json
from typing import Sequence

from .model import FAIL, OK, Check

ADVICE_MARK = " -> "


def format_line(check: Check, name_width: int) -> str:
    line = f"{check.level:<4}  {check.name:<{name_width}}  {check.saw}"
    if check.level != OK and check.advice:
        line += ADVICE_MARK + check.advice
    return line


def format_text(checks: Sequence[Check]) -> str:
    width = max((len(c.name) for c in checks), default=0)
    return "\n".join(format_line(c, width) for c in checks)


def format_json(checks: Sequence[Check]) -> str:
    return json.dumps([dataclasses.asdict(c) for c in checks], indent=2)


def exit_status(checks: Sequence[Check]) -> int:
    """0 when nothing failed (warnings do not fail), 1 otherwise."""
    return 1 if any(c.level == FAIL for c in checks) else 0
