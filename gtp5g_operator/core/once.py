"""Log a condition once per episode, not once per occurrence.

A broken API, a missing trace source or an unwritable file fails on every
retry; logging each retry would flood the journal, logging none would hide
the cause.  `StateLog` logs each cause the first time it shows in an episode,
and the way back to normal, which ends the episode.
"""

from __future__ import annotations

import logging
from typing import Any, Set

MAX_SAID = 32  # causes remembered per episode: a key that varies cannot grow it for ever


class StateLog:
    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self.state = ""  # "" = fine; otherwise the key of the current problem
        # The causes said in this episode.  Keyed by the last one alone, a server that
        # failed one way, then another (a proxy's 502, then a timeout, then a reset),
        # logged a line at every retry for as long as the outage lasted (29 WARNING
        # lines in a minute of retries): each cause is said once, the recovery once.
        self._said: Set[str] = set()

    @property
    def failing(self) -> bool:
        return self.state != ""

    def problem(self, key: str, level: int, msg: str, *args: Any) -> bool:
        """Report a problem identified by `key`; logged only the first time that key
        shows in this episode (True then)."""
        self.state = key
        if key in self._said:
            return False
        if len(self._said) >= MAX_SAID:
            self._said.clear()
        self._said.add(key)
        self._log.log(level, msg, *args)
        return True

    def recovered(self, msg: str = "", *args: Any) -> bool:
        """Back to normal; `msg` is logged (info) only if there was a problem."""
        self._said.clear()
        if not self.state:
            return False
        self.state = ""
        if msg:
            self._log.info(msg, *args)
        return True
