"""Exits of tracked processes as they happen, as a loop component: one pidfd per
tracked process, readable once its whole thread group has exited (zombie or
reaped), which prunes the tracker at once.

Why not wait for the liveness pass: a v0 server keeps a dead gNB's PIDs until
the next push, and a local user who has forked the PID counter up to just
below them takes one within milliseconds of the exit — the server then boosts
that stranger for up to `liveness_interval`.  Threads that exit while their
process lives are found by the tracker once the kernel hands their ID out
again (TaskTracker._age), else by the liveness pass (a pidfd per thread needs
Linux 6.9 and one fd per task).
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Callable, Dict, FrozenSet, Optional, Set, Tuple

from ..core.component import Component
from ..core.procfs import STARVED
from ..core.tracker import TaskTracker

log = logging.getLogger(__name__)

MAX_WATCHED = 64  # pidfds held at most: any user's nr-gnb processes must not use up our fds

Identity = Tuple[int, int]  # (tgid, start time)


class ExitWatch(Component):
    name = "exit watch"

    def __init__(self, tracker: TaskTracker, on_change: Callable[[], None],
                 open_pidfd: Optional[Callable[[int], int]]) -> None:
        """`open_pidfd`: os.pidfd_open for the real /proc, None to watch nothing."""
        self.tracker = tracker
        self._on_change = on_change
        self._open = open_pidfd
        self._fds: Dict[Identity, int] = {}
        self._owner: Dict[int, Identity] = {}
        self._done: Set[Identity] = set()  # exited (or not watchable): never opened again
        self._watched: FrozenSet[int] = frozenset()
        self._generation = -1  # the tracker's generation _sync last saw

    def watched_fds(self) -> FrozenSet[int]:
        if self._open is not None:
            self._sync()
        return self._watched

    def _sync(self) -> None:
        """Hold a pidfd for each tracked process, and none for any other: once per
        change of the tracked processes (one integer compared per turn)."""
        if self.tracker.generation == self._generation:
            return
        self._generation = self.tracker.generation
        tracked = {(tgid, p.info.start_time) for tgid, p in self.tracker.processes.items()}
        for ident in [i for i in self._fds if i not in tracked]:
            self._close(ident)
        self._done &= tracked
        room = max(0, MAX_WATCHED - len(self._fds))
        for ident in sorted(tracked - self._fds.keys() - self._done)[:room]:
            self._watch(ident)
        if self._watched != self._owner.keys():  # a new object only for new fds
            self._watched = frozenset(self._owner)

    def _watch(self, ident: Identity) -> None:
        tgid, start = ident
        open_pidfd = self._open
        assert open_pidfd is not None
        try:
            fd = open_pidfd(tgid)
        except OSError as exc:
            if exc.errno in STARVED:
                self._retry()
                return
            if exc.errno == errno.ESRCH:  # gone already
                self._exited(ident)
            else:  # e.g. ENOSYS before Linux 5.3, EPERM from a seccomp filter
                self._done.add(ident)
                log.debug("cannot watch process %d for its exit (%s): the liveness pass "
                          "will notice it", tgid, exc.strerror)
            return
        procfs = self.tracker.procfs
        starved = procfs.starved
        stat = procfs.stat(tgid, tgid)
        if stat is None and procfs.starved != starved:  # the pidfd took our last fd
            os.close(fd)
            self._retry()
            return
        if stat is None or stat.start_time != start:
            os.close(fd)  # the ID was reused before the pidfd pinned it: ours is gone
            self._exited(ident)
            return
        self._fds[ident], self._owner[fd] = fd, ident

    def _retry(self) -> None:
        """Out of fds or memory: not a reason to give up watching the process (its
        exit would wait for the liveness pass), so `_sync` tries again next turn
        (a failed syscall per turn per unwatched process, only while starved)."""
        self._generation = -1

    def on_readable(self, fd: int) -> None:
        # Closed mid-turn: safe because the loop drops every stale registration before
        # it makes any new one, so a new fd that got the same number is registered
        # (daemon.py's _sync_watched).
        ident = self._owner.get(fd)
        if ident is not None:
            self._close(ident)
            self._watched = frozenset(self._owner)
            self._exited(ident)

    def _exited(self, ident: Identity) -> None:
        self._done.add(ident)  # never watched again
        if self.tracker.prune():
            self._on_change()

    def _close(self, ident: Identity) -> None:
        fd = self._fds.pop(ident)
        del self._owner[fd]
        os.close(fd)

    def close(self) -> None:
        for ident in list(self._fds):
            self._close(ident)
        self._watched = frozenset()
