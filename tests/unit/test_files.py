"""files.py against a real file system: what another local user can do to the files
the service writes."""

from __future__ import annotations

import os
import subprocess
import sys
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


def test_the_first_write_removes_what_a_killed_writer_left_and_nothing_else(
        tmp_path: Path) -> None:
    """A writer killed between atomic_write's create and rename (SIGKILL during the
    fsync of owned.json) left PATH.tmp.PID for ever.  The next process's first write of
    PATH removes those of writers that no longer run; never a live writer's, another
    user's, nor another file's (the textfile's directory is node-exporter's)."""
    target = tmp_path / "gtp5g_operator.prom"
    # What a killed writer leaves: its temporary file, named after its PID, and no process.
    killed = subprocess.run(
        [sys.executable, "-c", "import os, sys; open(f'{sys.argv[1]}.tmp.{os.getpid()}', 'w')"
         ".write('half'); print(os.getpid())", str(target)],
        capture_output=True, text=True, check=True)
    dead = int(killed.stdout)
    hexed = tmp_path / f"{target.name}.tmp.{dead}.0123456789abcdef"  # the unguessable one
    hexed.write_bytes(b"half")
    live = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    kept = [tmp_path / f"{target.name}.tmp.{live.pid}",  # a writer still running
            tmp_path / f"{target.name}.tmp.{dead}.bak", tmp_path / f"other.prom.tmp.{dead}"]
    if os.geteuid() == 0:
        kept.append(tmp_path / f"{target.name}.tmp.{dead}.fedcba9876543210")
    for path in kept:
        path.write_bytes(b"not ours to remove")
    if os.geteuid() == 0:
        os.chown(kept[-1], NOBODY, NOBODY)  # another user's
    try:
        atomic_write(str(target), b"metric 1\n")
    finally:
        live.communicate(b"")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [target.name, *(p.name for p in kept)])


def test_status_beside_a_daemon_that_keeps_replacing_and_removing_state_json(
        tmp_path: Path) -> None:
    """status from cron beside a daemon that rewrites state.json atomically and removes
    it at each clean stop: a removal between status's existence check and its open said
    "cannot read .../state.json: No such file or directory" (exit 1, 1 in ~400,000 runs
    beside real restarts) rather than "not running" (exit 3)."""
    import subprocess
    import sys

    from gtp5g_operator.commands.status import NOT_RUNNING, show_status

    path = tmp_path / "state.json"
    churn = subprocess.Popen([sys.executable, "-c", f"""
import os
path = {str(path)!r}
while True:  # the daemon: atomic rewrites, and the removal of a clean stop
    with open(path + ".tmp", "w") as f:
        f.write('{{"pid": 1}}')
    os.replace(path + ".tmp", path)
    os.unlink(path)
"""])
    seen: set[bool] = set()
    try:
        end = time.monotonic() + 1.0
        while time.monotonic() < end or (len(seen) < 2 and time.monotonic() < end + 20):
            code, text = show_status(str(tmp_path), False)
            assert code == NOT_RUNNING, text
            seen.add("stale" in text)  # PID 1 is no gtp5g-operator: both ways "not running"
    finally:
        churn.kill()
        churn.wait()
    assert seen == {True, False}, "the file was never seen both present and absent"
