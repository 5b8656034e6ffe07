"""files.py against a real file system: what another local user can do to the files
the service writes."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

from gtp5g_operator.files import atomic_write

NOBODY = 65534


@pytest.mark.skipif(os.geteuid() != 0 or "FAKEROOTKEY" in os.environ,
                    reason="planting a file as another user needs root (not fakeroot)")
def test_a_temporary_name_planted_in_a_sticky_directory_does_not_stop_the_writes() -> None:
    """The textfile's directory may be sticky and writable by others (as /tmp is): one of
    them plants PATH.tmp.<our PID> (the PID is public), which we may not remove.  The
    write goes on under a name nobody can guess; the planted file is left alone."""
    # not under pytest's tmp_path: its parent is root's alone, and the writer is nobody
    with tempfile.TemporaryDirectory(prefix="gtp5g-sticky-") as where:
        shared = Path(where)
        shared.chmod(0o1777)
        _write_beside_a_planted_name(shared)


def _write_beside_a_planted_name(shared: Path) -> None:
    target = shared / "gtp5g_operator.prom"
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the service's unprivileged user
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(write, b"%d\n" % os.getpid())
            os.close(write)
            deadline = time.monotonic() + 60
            while not (shared / f"gtp5g_operator.prom.tmp.{os.getpid()}").exists():
                if time.monotonic() > deadline:
                    os._exit(3)
                time.sleep(0.01)
            atomic_write(str(target), b"metric 1\n")
            os._exit(0)
        except BaseException:
            os._exit(1)
    os.close(write)
    pid = int(os.read(read, 64))
    os.close(read)
    planted = shared / f"gtp5g_operator.prom.tmp.{pid}"
    planted.write_bytes(b"planted by root, whom nobody may not unlink\n")
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert target.read_bytes() == b"metric 1\n"
    assert planted.read_bytes().startswith(b"planted")
    assert sorted(p.name for p in shared.iterdir()) == [target.name, planted.name]


def test_a_directory_planted_under_the_temporary_name_does_not_stop_the_writes(
        tmp_path: Path) -> None:
    """Run by hand as root, the service may remove another user's file from a sticky
    directory, but not a directory: unlink(2) says EISDIR, which stopped every write of
    the textfile (the PID in the name is public).  The write goes on under a name nobody
    can guess; the planted directory is left alone."""
    target = tmp_path / "gtp5g_operator.prom"
    planted = tmp_path / f"gtp5g_operator.prom.tmp.{os.getpid()}"
    planted.mkdir()
    atomic_write(str(target), b"metric 1\n")
    assert target.read_bytes() == b"metric 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name, planted.name]
