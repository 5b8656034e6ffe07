"""Log a condition once per change of state, not once per occurrence.

A broken API, a missing trace source or an unwritable file fails on every
retry; logging each retry would flood the journal, logging none would hide
the cause.  `StateLog` remembers the last state it reported and logs only
when the state changes — including the way back to normal.
"""

from __future__ import annotations

import logging
from typing import Any


class StateLog:
    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self.state = ""  # "" = fine; otherwise the key of the current problem

    @property
    def failing(self) -> bool:
        return self.state != ""

    def problem(self, key: str, level: int, msg: str, *args: Any) -> bool:
        """Report a problem identified by `key`; logged only if the key changed
        (True then)."""
        if key == self.state:
            return False
        self.state = key
        self._log.log(level, msg, *args)
        return True

    def recovered(self, msg: str = "", *args: Any) -> bool:
        """Back to normal; `msg` is logged (info) only if there was a problem."""
        if not self.state:
            return False
        self.state = ""
        if msg:
            self._log.info(msg, *args)
        return True
