"""A file the daemon keeps up to date, whose failed writes are retried and said once."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Optional

from ..files import atomic_write
from .once import StateLog

log = logging.getLogger(__name__)


class KeptFile:
    """A file the daemon keeps saying what it last wrote there (None: no file at all):
    the state directory's proof of ownership, the runtime files, the metrics textfile.

    A write that fails (disk full, read-only, EIO, a quota, a directory in its place)
    leaves the file as it was (atomic_write), is logged once per cause and once when
    writing works again, and stays `failing` until then: callers that skip unchanged
    content write again anyway, at their next turn.  Before, a proof file that could
    not be written when the rule changed was never written once the disk had room
    again (nothing had changed since), and after a restart this host took its own rule
    for someone else's; state.json kept showing the tasks of before the disk filled."""

    def __init__(self, path: str, mode: int = 0o644, durable: bool = False,
                 consequence: str = "", make_directory: bool = True) -> None:
        self.path = path
        self._make_directory = make_directory
        self._mode = mode
        self._durable = durable
        self._consequence = consequence  # what a failure means, said with it
        self._last: object = None  # the key of the last write that worked
        self._state = StateLog(log)  # the cause of the last failure; "" when it worked

    def write(self, data: Optional[bytes], key: object = None) -> None:
        """`key`: what must change for `data` to be written again (default: `data`)."""
        key = data if key is None else key
        # Unchanged, and still there: removed under the running daemon (systemd removes
        # RuntimeDirectory= when a refused start of the unit stops, tmpfiles, an rm), it
        # is written again, its directory too, or /health and `status` stay blind.
        if (data is not None and key == self._last and not self.failing
                and os.path.lexists(self.path)):
            return
        try:
            if data is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
            else:
                atomic_write(self.path, data, self._mode, self._durable, self._make_directory)
        except OSError as exc:
            cause = exc.strerror or str(exc)
            self._state.problem(cause, logging.WARNING, "cannot write %s: %s%s", self.path,
                                cause, self._consequence)
            return
        self._state.recovered("%s written again", self.path)
        self._last = key

    @property
    def failing(self) -> bool:
        """The last write failed: write again at the next turn, even unchanged content."""
        return self._state.failing

    def remove(self) -> None:
        """At the daemon's stop, or for a file it no longer keeps: best effort."""
        with contextlib.suppress(OSError):
            os.unlink(self.path)
