"""The one face every timed part of the loop shows it.

The loop (service/daemon.py) knows nothing else about its parts: each turn
it asks every component for the fds it wants watched and for its next
deadline, selects until the earliest one, hands ready fds to their owners
and lets every component whose deadline has come run.  On reload each
component takes its own part of the new configuration.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Collection

if TYPE_CHECKING:
    from ..config import Config

NEVER = math.inf


class Component:
    """Base with the defaults: no fds, no deadline, nothing to reconfigure."""

    name = "component"

    def watched_fds(self) -> Collection[int]:
        """The fds to watch for reading now (may change after any call).

        Contract: return the *same object* for as long as the fds are unchanged, and a
        new object whenever they change.  The loop compares it with what it registered
        by identity (`is`), once per turn, and re-registers only on a new object — so a
        component that mutated a collection in place would never be re-registered, and
        one that built a new tuple every turn would cost a selector update per turn."""
        return ()

    def on_readable(self, fd: int) -> None:
        """`fd` (one of `watched_fds()` when select returned) is readable."""

    def fd_failed(self, fd: int, exc: OSError) -> None:
        """The loop could not watch `fd` (e.g. a regular file cannot be polled)."""
        raise exc

    def next_deadline(self) -> float:
        """Monotonic time at which `run_due` must run next (NEVER if nothing is due)."""
        return NEVER

    def run_due(self, now: float) -> None:
        """Do whatever is due at `now`."""

    def reconfigure(self, old: Config, new: Config) -> bool:
        """Take this component's part of a new configuration; True = push at once."""
        return False

    def close(self) -> None:
        """Release fds and threads."""
