"""Atomic file writes: readers see the old file or the new one, never half."""

from __future__ import annotations

import os


def atomic_write(path: str, data: bytes, mode: int = 0o644, durable: bool = False) -> None:
    """Write data to a temporary file beside path and rename it over path.

    The mode is set explicitly (the unit's UMask=0077 would make files
    unreadable for `gtp5g-operator status` or node-exporter).  `durable`
    fsyncs first, for files that must survive a power loss; runtime files on
    tmpfs gain nothing from it and would pay a blocking wait.
    """
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
