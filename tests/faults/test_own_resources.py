"""The daemon's own resources fail it: a full runtime filesystem, a runtime file
another user planted, no file descriptor left to read /proc with.  Each is a
warning and the gNB stays boosted: never a crash (SIGBUS from the mmap'd
heartbeat), never a live gNB taken for exited and un-boosted.

README "Faults tried" lists the outcomes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import select
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest

from gtp5g_operator.config import MatchConfig
from gtp5g_operator.core.procfs import ProcFS
from gtp5g_operator.core.tracker import TaskTracker
from gtp5g_operator.service.exits import ExitWatch
from testbed.harness import GnbProcess, wait_until
from tests.conftest import Env
from tests.faults.test_faults import lines_for, pids

pytestmark = pytest.mark.faults

NOBODY = 65534


@contextlib.contextmanager
def full_tmpfs(where: Path, full: bool = True) -> Iterator[Path]:
    """A 64 KiB tmpfs at `where`, filled to the last byte unless not `full` (root only)."""
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        if full:
            fill(where)
        yield where
    finally:
        subprocess.run(["umount", "--lazy", str(where)], check=False)


def fill(where: Path) -> None:
    """`where`'s filesystem full to the last byte (a file named filler; remove it to free)."""
    fd = os.open(where / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (4096, 512, 1):  # its last block too (short writes then ENOSPC)
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, bytes(size))
        with pytest.raises(OSError) as exc:
            os.write(fd, b"x")
        assert exc.value.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_a_full_runtime_filesystem_is_a_warning_not_a_crash(
        env: Env, gnb: Callable[..., GnbProcess], tmp_path: Path) -> None:
    """/run full at start: the heartbeat's page cannot be had.  A store into a
    sparse mapping would be SIGBUS; the daemon must say so and go on."""
    with full_tmpfs(tmp_path / "full") as full:
        d = env.start(env={"RUNTIME_DIRECTORY": str(full / "run")})
        g = gnb(threads=("nr-gnb-rlc",))
        env.writer.write(lines_for(g))
        env.api.wait_post(lambda s: pids(s) == set(g.tids), timeout=10)  # turns, each a beat
        assert d.proc.poll() is None, f"exit {d.proc.returncode}:\n{d.log()}"
        assert "heartbeat: [Errno 28] No space left on device" in d.log()
        assert not (full / "run" / "heartbeat").exists()  # no half heartbeat for /health


def test_a_heartbeat_not_made_at_start_is_made_once_the_runtime_filesystem_has_room(
        env: Env, tmp_path: Path) -> None:
    """/run full at start (journal files, a runaway writer): the heartbeat cannot be
    made.  It was never tried again, and /health answered 503 "stalled" for the whole
    life of a daemon whose loop turned, long after /run had room again (state.json
    and health.json were written by then)."""
    from tests.integration.test_observability import free_port, probe

    port = free_port()
    with full_tmpfs(tmp_path / "full") as full:
        d = env.start(env={"RUNTIME_DIRECTORY": str(full / "run")},
                      metrics={"listen": f"127.0.0.1:{port}"})
        d.wait_log("heartbeat: [Errno 28] No space left on device")
        assert probe(port)[0] == 503
        (full / "filler").unlink()
        wait_until(lambda: probe(port)[0] == 200, 20, "/health 200 once /run has room")
        assert d.log().count("heartbeat:") == 1, d.log()  # said once, not at every pass


def test_state_json_not_written_while_the_runtime_filesystem_was_full_is_written_once_it_has_room(
        env: Env, gnb: Callable[..., GnbProcess], tmp_path: Path) -> None:
    """/run fills while the daemon runs and a gNB starts meanwhile: state.json keeps its
    last good content (never half a file), one line says so, and once there is room the
    new state is written at the next liveness pass.  It was written only when the state
    changed again (the next resync): `status` and doctor showed the gNB of before."""
    with full_tmpfs(tmp_path / "run-fs", full=False) as fs:
        run = fs / "run"
        d = env.start(env={"RUNTIME_DIRECTORY": str(run)},
                      strategy={"resync_interval": 3600.0, "liveness_interval": 0.5})
        first = gnb(threads=("nr-gnb-rlc",))
        env.writer.write(lines_for(first))
        env.api.wait_post(lambda s: pids(s) == set(first.tids), timeout=10)
        state = run / "state.json"

        def listed() -> set[int]:
            return {p["tgid"] for p in json.loads(state.read_text())["processes"]}

        wait_until(lambda: listed() == {first.pid}, 20, "state.json listing the first gNB")
        fill(fs)
        second = gnb(threads=("nr-gnb-rlc",))
        env.writer.write(lines_for(second))
        env.api.wait_post(lambda s: pids(s) == set(first.tids) | set(second.tids), timeout=10)
        d.wait_log(f"cannot write {state}: No space left on device")
        assert listed() == {first.pid}  # the last good state, whole
        (fs / "filler").unlink()
        wait_until(lambda: listed() == {first.pid, second.pid}, 10,
                   "state.json listing both gNBs once /run has room")
        d.wait_log(f"{state} written again")
        log = d.log()
        assert log.count(f"cannot write {state}") == 1, log
        assert d.proc.poll() is None


def test_a_heartbeat_another_user_planted_is_replaced_not_mapped(
        env: Env, public_tmp: Path) -> None:
    """A runtime directory made beforehand by another user, a heartbeat file of
    theirs in it (and a link of theirs to it): mapped, they could truncate it
    under the daemon, whose next beat would die of SIGBUS (or forge a beat)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    run = public_tmp / "run"
    run.mkdir()
    planted, kept = run / "heartbeat", public_tmp / "their-link"
    planted.write_bytes(b"")
    os.link(planted, kept)
    for path in (run, planted):
        os.chown(path, NOBODY, NOBODY)
    d = env.start(env={"RUNTIME_DIRECTORY": str(run)})
    st = planted.stat()
    assert (st.st_uid, st.st_ino) != (NOBODY, kept.stat().st_ino), "the planted file is mapped"
    subprocess.run(["truncate", "-s", "0", str(kept)], user=NOBODY, group=NOBODY, check=True)
    before = planted.read_bytes()
    wait_until(lambda: planted.read_bytes() != before or d.proc.poll() is not None, 20,
               "a beat (at least one every MAX_SLEEP)")
    assert d.proc.poll() is None, f"exit {d.proc.returncode}:\n{d.log()}"


def test_a_live_gnb_is_not_taken_for_exited_when_the_daemon_runs_out_of_fds(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    """EMFILE makes every /proc read fail; that says nothing about the gNB, which
    must stay tracked and pushed (not 'exited' and the empty set), and once fds
    are back a real exit is seen again."""
    d = env.start(strategy={"resync_interval": 2.0, "liveness_interval": 0.5})
    g = gnb(threads=("nr-gnb-rlc",))
    env.writer.write(lines_for(g))
    first = env.api.wait_post(lambda s: pids(s) == set(g.tids), timeout=10)
    limits = resource.prlimit(d.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(d.pid, resource.RLIMIT_NOFILE,
                     (len(os.listdir(f"/proc/{d.pid}/fd")), limits[1]))
    try:
        n = len(env.api.posts())
        env.api.wait_post(lambda s: True, timeout=10, after=n)  # a resync meanwhile
        d.wait_log("kept as tracked, not taken for exited")  # a liveness pass meanwhile
        since = env.api.posts()[env.api.posts().index(first):]
        assert all(pids(p.body["strategies"]) == set(g.tids) for p in since), (
            "the gNB was un-boosted while the daemon could not read /proc")
        assert "removed (exited)" not in d.log() and "removed: exited" not in d.log()
        assert "kept as tracked, not taken for exited" in d.log()
    finally:
        resource.prlimit(d.pid, resource.RLIMIT_NOFILE, limits)
    d.wait_log("/proc files can be read again", timeout=10)
    g.stop()
    env.api.wait_post(lambda s: pids(s) == set(), timeout=10)
    wait_until(lambda: "removed: exited" in d.log(), 5, "the exit logged")


@contextlib.contextmanager
def no_fd_left(spare: int = 0) -> Iterator[None]:
    """This process's descriptors used up but `spare` (then every open() fails with
    EMFILE) while in it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 1024), hard))
    held = []
    try:
        with contextlib.suppress(OSError):
            while True:
                held.append(os.open("/dev/null", os.O_RDONLY))
        for _ in range(spare):
            os.close(held.pop())
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_gnb_thread_first_seen_without_fds_is_tracked_at_its_next_line(
        gnb: Callable[..., GnbProcess]) -> None:
    """A failed /proc look-up for want of fds says nothing about the task: it must
    not be cached as 'not a target' (the gNB thread unboosted until the liveness
    pass), while an ID that is really gone still is (no look-up per line for it)."""
    g = gnb(threads=("nr-gnb-rlc",))
    dead = GnbProcess(threads=())
    dead.stop()
    t = TaskTracker(ProcFS(), MatchConfig())
    rlc = g.threads["nr-gnb-rlc"]
    with no_fd_left():
        with pytest.raises(OSError) as exc:
            os.close(os.open("/proc/self/status", os.O_RDONLY))
        assert exc.value.errno == errno.EMFILE
        assert t.observe({rlc}) is False
    assert t.observe({rlc, dead.pid}) is True
    assert [(v.tgid, v.tids) for v in t.snapshot()] == [(g.pid, (rlc,))]
    lookups = t.lookups
    assert t.observe({rlc, dead.pid}) is False
    assert t.lookups == lookups  # the dead ID's verdict is cached


@pytest.mark.parametrize("spare", [0, 1], ids=["no-fd-for-the-pidfd", "no-fd-to-check-it"])
def test_a_gnb_tracked_while_fds_ran_out_gets_its_exit_watch_once_they_are_back(
        gnb: Callable[..., GnbProcess], spare: int) -> None:
    """Out of fds when a new gNB is tracked, its pidfd cannot be opened (or, the last
    fd taken by it, its start time cannot be checked): that must not give up watching
    it for good, or its exit is seen only at the next liveness pass or push (while a
    v0 server keeps boosting its PIDs, which a stranger may take)."""
    g = gnb(threads=("nr-gnb-rlc",))
    t = TaskTracker(ProcFS(), MatchConfig())
    assert t.observe(set(g.tids))
    changes: list[None] = []
    watch = ExitWatch(t, lambda: changes.append(None), os.pidfd_open)
    try:
        with no_fd_left(spare):
            assert watch.watched_fds() == frozenset()
        fds = watch.watched_fds()  # the next turn, fds back
        assert len(fds) == 1
        g.stop()
        ready, _, _ = select.select(list(fds), [], [], 10)
        assert ready, "the pidfd did not report the exit"
        watch.on_readable(ready[0])
        assert changes and t.snapshot() == []
    finally:
        watch.close()
