"""Identity decisions over a fake /proc tree (the integration tests use the real one)."""

from __future__ import annotations

import os
import shutil
import tracemalloc
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import pytest

from gtp5g_operator.config import MatchConfig
from gtp5g_operator.core.procfs import ProcessInfo, ProcFS, parse_stat
from gtp5g_operator.core.tracker import AGE_EVERY, MAX_NEGATIVE, TaskTracker


class FakeProc:
    def __init__(self, root: Path) -> None:
        self.root = root

    def add(self, tid: int, tgid: int, comm: str, start: int, uid: int = 0,
            exe: str | None = "/usr/bin/nr-gnb", state: str = "S") -> None:
        d = self.root / str(tid)
        d.mkdir(exist_ok=True)
        rest = " ".join(["0"] * 17)
        # pid (comm) state ppid pgrp ... field 22 = starttime
        (d / "stat").write_text(f"{tid} ({comm}) {state} 1 {rest} {start} 0 0\n")
        (d / "status").write_text(f"Name:\t{comm}\nTgid:\t{tgid}\nPid:\t{tid}\n"
                                  f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
        (d / "comm").write_text(comm + "\n")
        task = self.root / str(tgid) / "task" / str(tid)
        task.mkdir(parents=True, exist_ok=True)
        (task / "stat").write_text((d / "stat").read_text())
        (task / "comm").write_text(comm + "\n")
        for link in (d / "exe", task / "exe"):
            if link.is_symlink():
                link.unlink()
            if exe is not None:  # None: unreadable, as for a zombie leader
                os.symlink(exe, link)

    def rename(self, tid: int, comm: str) -> None:
        """prctl(PR_SET_NAME): the name changes, PID and start time stay."""
        for f in self.root.glob(f"{tid}/comm"):
            f.write_text(comm + "\n")
        for f in self.root.glob(f"*/task/{tid}/comm"):
            f.write_text(comm + "\n")

    def remove(self, tid: int) -> None:
        shutil.rmtree(self.root / str(tid))
        for task in self.root.glob(f"*/task/{tid}"):
            shutil.rmtree(task)


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path)


class Steps:
    """A clock that moves AGE_EVERY on at each reading: every turn of these tests may
    read the kernel's last allocated PID (the daemon reads it at most once a turn in
    AGE_EVERY)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += AGE_EVERY
        return self.now


def tracker(proc: FakeProc, clock: Optional[Callable[[], float]] = None,
            **match: object) -> TaskTracker:
    return TaskTracker(ProcFS(str(proc.root)), MatchConfig(**match),  # type: ignore[arg-type]
                       clock or Steps())


def b(*tids: int) -> set[int]:
    return set(tids)


def snap(t: TaskTracker) -> list[tuple[int, list[int]]]:
    return [(v.tgid, list(v.tids)) for v in t.snapshot()]


def test_parse_stat_handles_parens_in_comm() -> None:
    rest = " ".join(["0"] * 17)
    st = parse_stat(f"5 (a) b) c) R 1 {rest} 4242 0\n".encode())
    assert st is not None and st.start_time == 4242 and st.state == "R"
    assert parse_stat(b"garbage") is None


def test_threads_of_a_matching_process_count_whatever_their_names(proc: FakeProc) -> None:
    proc.add(100, 100, "nr-gnb", 1)
    proc.add(101, 100, "gnb worker", 2)
    t = tracker(proc)
    assert t.observe(b(101)) is True
    assert snap(t) == [(100, [101])]
    assert t.observe(b(100, 101)) is True
    assert snap(t) == [(100, [100, 101])]


def test_decoys_are_never_tracked(proc: FakeProc) -> None:
    proc.add(200, 200, "nr-gnbx", 1)
    proc.add(300, 300, "nr-ue", 1)
    proc.add(301, 300, "nr-gnb", 1)  # a thread named nr-gnb in a non-matching process
    t = tracker(proc)
    assert t.observe(b(200, 300, 301, 0, 999)) is False  # 999 does not exist
    assert snap(t) == []


def test_known_ids_cost_no_lookup(proc: FakeProc) -> None:
    proc.add(100, 100, "nr-gnb", 1)
    proc.add(200, 200, "sshd", 1)
    t = tracker(proc)
    t.observe(b(100, 200))
    lookups = t.lookups
    for _ in range(100):
        assert t.observe(b(100, 200)) is False
    assert t.lookups == lookups


@pytest.mark.parametrize("match,tracked", [
    ({"exe": ("/usr/bin/nr-gnb",)}, True),
    ({"exe": ("/opt/other",)}, False),
    ({"uid": (0,)}, True),
    ({"uid": (1000,)}, False),
    ({"exe": ("/usr/bin/nr-gnb",), "uid": (1000,)}, False),
])
def test_exe_and_uid_allow_lists(proc: FakeProc, match: Dict[str, Tuple[object, ...]],
                                 tracked: bool) -> None:
    proc.add(100, 100, "nr-gnb", 1, uid=0, exe="/usr/bin/nr-gnb")
    t = tracker(proc, None, **match)
    t.observe(b(100))
    assert bool(snap(t)) is tracked


def test_exit_and_pid_reuse_are_pruned(proc: FakeProc) -> None:
    proc.add(100, 100, "nr-gnb", 1)
    proc.add(101, 100, "nr-gnb-rlc", 1)
    t = tracker(proc)
    t.observe(b(100, 101))
    proc.remove(101)
    assert t.prune() is True
    assert snap(t) == [(100, [100])]
    # PID 100 reused by another program: a new start time
    proc.add(100, 100, "bash", 99)
    assert t.prune() is True
    assert snap(t) == []
    # stale lines naming 100 keep coming: the new process must not be tracked
    assert t.observe(b(100)) is False
    assert snap(t) == []


def test_zombie_is_dead(proc: FakeProc) -> None:
    proc.add(100, 100, "nr-gnb", 1)
    t = tracker(proc)
    t.observe(b(100))
    proc.add(100, 100, "nr-gnb", 1, state="Z")
    assert t.prune() is True and snap(t) == []


def test_a_task_proc_lists_but_we_cannot_read_is_not_taken_for_exited(
        proc: FakeProc, caplog: pytest.LogCaptureFixture) -> None:
    """A failed read of a task /proc still lists (the daemon out of fds: EMFILE)
    says nothing about the task: pruning it would un-boost a live gNB."""
    proc.add(100, 100, "nr-gnb", 1)
    proc.add(101, 100, "nr-gnb-rlc", 1)
    t = tracker(proc)
    t.observe(b(100, 101))
    for tid in (100, 101):  # unreadable: a directory where the file was
        stat = proc.root / "100" / "task" / str(tid) / "stat"
        stat.unlink()
        stat.mkdir()
    assert t.prune() is False and snap(t) == [(100, [100, 101])]
    assert t.prune() is False
    assert caplog.text.count("kept as tracked, not taken for exited") == 1
    proc.remove(101)  # gone for real: not found
    assert t.prune() is True and snap(t) == [(100, [100])]


def test_negative_verdicts_are_forgotten_so_reused_ids_are_rechecked(proc: FakeProc) -> None:
    proc.add(500, 500, "sshd", 1)
    t = tracker(proc)
    assert t.observe(b(500)) is False
    proc.add(500, 500, "nr-gnb", 2)  # reused by a real gNB
    assert t.observe(b(500)) is False  # no ns_last_pid here: the cached verdict ...
    t.forget_verdicts()  # ... until the liveness pass
    assert t.observe(b(500)) is True


@pytest.mark.parametrize("big_host", [False, True], ids=["set", "bits"])
@pytest.mark.parametrize("cursor", [(400, 450, 500), (32_000, 40, 501)],
                         ids=["upwards", "wrapped"])
def test_an_id_the_kernel_hands_out_again_is_looked_at_again_at_once(
        proc: FakeProc, big_host: bool, cursor: Tuple[int, int, int]) -> None:
    """A gNB (or a new thread of it) that got the ID of a task the trace had named
    was left out until the next liveness pass (5 s by default): the 'not a target'
    verdict was kept by ID alone.  Reproduced with the real daemon and a gNB forced
    onto a stranger's PID.  The kernel's last allocated PID (ns_last_pid) says
    which IDs were handed out since: only their verdicts go."""
    last_pid = proc.root / "sys" / "kernel" / "ns_last_pid"
    last_pid.parent.mkdir(parents=True)
    before, between, after = cursor
    last_pid.write_text(f"{before}\n")
    others = range(20_000, 20_000 + (2 * MAX_NEGATIVE if big_host else 10))
    for tid in (500, *others):
        proc.add(tid, tid, "sshd", 1)
    t = tracker(proc)
    assert t.observe(b(500, *others)) is False
    assert (t._more_negative is not None) is big_host
    lookups = t.lookups
    last_pid.write_text(f"{between}\n")  # other IDs handed out: 500 is still sshd's
    assert t.observe(b(500, *others)) is False and t.lookups == lookups
    proc.remove(500)
    proc.add(500, 500, "nr-gnb", 2)  # the kernel hands 500 out again, to a gNB
    last_pid.write_text(f"{after}\n")
    assert t.observe(b(500, *others)) is True  # not at the liveness pass: now
    assert t.lookups == lookups + 1  # and only 500 was looked up again
    assert snap(t) == [(500, [500])]
    assert t.cache_sizes()[0] == len(others)


def test_a_tracked_thread_whose_id_the_kernel_hands_out_again_is_dropped_at_once(
        proc: FakeProc) -> None:
    """A gNB thread exits alone (no pidfd sees that) and another user's process gets
    its ID: a v0 server boosted that stranger until the next push or liveness pass.
    The tracked IDs the kernel's last allocated PID passed are checked at the next
    turn; the live ones it skipped (the leader here) stay."""
    last_pid = proc.root / "sys" / "kernel" / "ns_last_pid"
    last_pid.parent.mkdir(parents=True)
    last_pid.write_text("200\n")
    proc.add(100, 100, "nr-gnb", 1)
    proc.add(101, 100, "gnb worker", 2)
    t = tracker(proc)
    assert t.observe(b(100, 101)) is True
    assert t.observe(b(100)) is False  # nothing handed out: nothing read
    proc.remove(101)
    proc.add(101, 101, "sshd", 9)  # the stranger, after a wrap of the IDs
    last_pid.write_text("101\n")
    assert t.observe(b(100)) is True  # a line of the gNB's: the turn sees it
    assert snap(t) == [(100, [100])]
    assert t.observe(b(101)) is False  # the stranger's own lines: looked up, refused


def test_the_kernels_last_task_id_is_read_at_most_once_in_age_every(proc: FakeProc) -> None:
    """Read at every turn, its pread cost a FIFO line 7 % more CPU (turns of a few dozen
    lines, A/B against the last stop): a turn reads it only AGE_EVERY after the last."""
    last_pid = proc.root / "sys" / "kernel" / "ns_last_pid"
    last_pid.parent.mkdir(parents=True)
    last_pid.write_text("200\n")
    proc.add(100, 100, "nr-gnb", 1)
    proc.add(101, 100, "gnb worker", 2)
    now = [0.0]
    t = tracker(proc, lambda: now[0])
    assert t.observe(b(100, 101)) is True
    proc.remove(101)
    proc.add(101, 101, "sshd", 9)  # a stranger on the thread's ID
    last_pid.write_text("101\n")
    now[0] += AGE_EVERY / 2
    assert t.observe(b(100)) is False and snap(t) == [(100, [100, 101])]  # not read yet
    now[0] += AGE_EVERY / 2
    assert t.observe(b(100)) is True and snap(t) == [(100, [100])]


def test_negative_verdicts_hold_every_id_of_a_big_host_in_fixed_memory(proc: FakeProc) -> None:
    """A big host's trace names tens of thousands of tasks that are not the gNB (whoever
    a softirq interrupted) between two liveness passes: each is looked up once per pass,
    not again every time a capped cache was emptied; IDs past PID_MAX_LIMIT (no task
    has one) are not looked up at all, and the memory does not grow with any of it."""
    t = tracker(proc)
    ids = range(4_194_304 - 20_000, 4_194_304)  # near pid_max 4194304
    for _ in range(2):
        for start in range(ids.start, ids.stop, 500):
            t.observe(b(*range(start, start + 500)))
    assert t.lookups == 20_000  # each once
    assert t.cache_sizes()[0] == 20_000
    t.observe(b(0, -1, *range(5_000_000, 5_000_100)))
    assert t.lookups == 20_000 and t.cache_sizes()[0] == 20_000
    assert t._more_negative is not None and len(t._more_negative) == 512 * 1024
    assert len(t._negative) == MAX_NEGATIVE
    t.forget_verdicts()
    assert t.cache_sizes()[0] == 0
    t.observe(b(ids.start))
    assert t.lookups == 20_001  # looked at again after the pass


def test_a_small_hosts_negative_verdicts_cost_no_big_hosts_memory(proc: FakeProc) -> None:
    """The bit set of every possible task ID (512 KiB) is for a host whose trace names
    more than MAX_NEGATIVE tasks in a pass: made for every daemon, and again at every
    pass, it kept ~1 MiB more RSS on every host, and testing bits per ID made a turn of
    30 known non-targets cost 3 us instead of 1 (the set's one C-level difference)."""
    tracemalloc.start()
    try:
        t = tracker(proc)
        for _ in range(3):  # three liveness passes of a few dozen other tasks
            for _ in range(5):
                t.observe(b(*range(300, 340)))
            t.forget_verdicts()
        t.observe(b(*range(300, 340)))
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert t.lookups == 4 * 40 and t.cache_sizes()[0] == 40
    assert held < 64 * 1024, f"{held} bytes held for 40 negative verdicts"


def test_each_process_of_a_big_host_is_judged_once_a_pass(proc: FakeProc) -> None:
    """Thousands of processes that are not the gNB, each seen through several of its
    threads in one pass: each process's /proc files are read once, not once per
    thread every time a small verdict cache was emptied."""
    processes, threads = 3000, 3
    for n in range(processes):
        tgid = 10_000 + 10 * n
        for tid in range(tgid, tgid + threads):
            proc.add(tid, tgid, "worker", 7)
    t = tracker(proc)
    judged = []
    real_process = t.procfs.process

    def process(tgid: int) -> Optional[ProcessInfo]:
        judged.append(tgid)
        return real_process(tgid)

    t.procfs.process = process  # type: ignore[method-assign]
    for thread in range(threads):  # thread 0 of every process, then thread 1, ...
        t.observe(b(*(10_000 + 10 * n + thread for n in range(processes))))
    assert len(judged) == processes
    assert t.cache_sizes() == (processes * threads, processes)


def test_new_match_rules_drop_processes_that_no_longer_match(proc: FakeProc) -> None:
    proc.add(100, 100, "nr-gnb", 1, uid=1000)
    t = tracker(proc)
    t.observe(b(100))
    assert t.set_match(MatchConfig(uid=(0,))) is True
    assert snap(t) == []
    assert t.observe(b(100)) is False


# --- identity that changes under a living PID (exec, prctl) -----------------------------


def test_a_process_renamed_to_nr_gnb_after_a_negative_verdict_is_tracked_later(
        proc: FakeProc) -> None:
    proc.add(100, 100, "gnb-launcher", 1)  # the tracer blamed a packet on it before
    t = tracker(proc)
    assert t.observe(b(100)) is False
    proc.rename(100, "nr-gnb")
    assert t.observe(b(100)) is False  # cached until the liveness pass ...
    t.forget_verdicts()
    assert t.observe(b(100)) is True  # ... then judged again
    assert snap(t) == [(100, [100])]


def test_a_wrapper_that_execs_the_pinned_gnb_is_tracked_after_the_pass(proc: FakeProc) -> None:
    proc.add(100, 100, "sh", 1, exe="/usr/bin/dash")
    proc.add(101, 100, "sh", 1, exe="/usr/bin/dash")
    t = tracker(proc, exe=("/usr/bin/nr-gnb",))
    assert t.observe(b(100, 101)) is False
    proc.add(100, 100, "nr-gnb", 1, exe="/usr/bin/nr-gnb")  # exec: same PID and start time
    proc.add(101, 100, "nr-gnb", 1, exe="/usr/bin/nr-gnb")
    t.forget_verdicts()
    assert t.observe(b(100, 101)) is True


@pytest.mark.parametrize("change,reason", [
    ({"comm": "bash"}, "its name is 'bash'"),
    ({"exe": "/usr/bin/python3"}, "its executable /usr/bin/python3 is not in match.exe"),
    ({"uid": 1000}, "its uid 1000 is not in match.uid"),
])
def test_a_tracked_process_that_changes_identity_is_dropped_with_the_reason(
        proc: FakeProc, change: Dict[str, object], reason: str,
        caplog: pytest.LogCaptureFixture) -> None:
    proc.add(100, 100, "nr-gnb", 1, uid=0, exe="/usr/bin/nr-gnb")
    t = tracker(proc, exe=("/usr/bin/nr-gnb",), uid=(0,))
    assert t.observe(b(100)) is True
    attrs: Dict[str, object] = {"comm": "nr-gnb", "exe": "/usr/bin/nr-gnb", "uid": 0, **change}
    proc.add(100, 100, start=1, **attrs)  # type: ignore[arg-type]
    caplog.set_level("INFO")
    assert t.rejudge() is True
    assert snap(t) == []
    assert any("no longer matches" in r.getMessage() and reason in r.getMessage()
               for r in caplog.records)


def test_a_still_matching_process_stays_and_thread_renames_count(proc: FakeProc) -> None:
    proc.add(100, 100, "nr-gnb", 1)
    proc.add(101, 100, "nr-gnb", 1)
    t = tracker(proc)
    t.observe(b(100, 101))
    assert t.rejudge() is False  # nothing changed
    proc.rename(101, "gnb-rlc")
    assert t.rejudge() is True  # the rule's names change
    assert t.snapshot()[0].thread_names == frozenset({"nr-gnb", "gnb-rlc"})


def test_a_gnb_whose_leader_exited_is_matched_through_a_live_thread(proc: FakeProc) -> None:
    # pthread_exit() in main: the leader is a zombie without an exe, workers run on
    proc.add(100, 100, "nr-gnb", 1, exe=None, state="Z")
    proc.add(101, 100, "gnb worker", 1, exe="/usr/bin/nr-gnb")
    t = tracker(proc, exe=("/usr/bin/nr-gnb",))
    assert t.observe(b(101)) is True
    assert snap(t) == [(100, [101])]
    assert t.snapshot()[0].exe == "/usr/bin/nr-gnb"
    assert t.prune() is False and t.rejudge() is False  # it stays while a worker lives


def test_a_gnb_whose_executable_cannot_be_read_is_an_error_once(
        proc: FakeProc, caplog: pytest.LogCaptureFixture) -> None:
    """match.exe set, and /proc/PID/exe unreadable to the service (no CAP_SYS_PTRACE for
    another user's process): not tracked, and said at ERROR once — not at DEBUG, where
    the on-call person sees a healthy service that tracks nothing."""
    proc.add(300, 300, "nr-gnb", 5, uid=1000, exe=None)
    t = tracker(proc, exe=["/usr/bin/nr-gnb"])
    with caplog.at_level("DEBUG"):
        assert not t.observe({300})
        t.rejudge()
        t.forget_verdicts()  # what every liveness pass does
        assert not t.observe({300})
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "CAP_SYS_PTRACE" in errors[0].getMessage()


def test_the_generation_moves_exactly_when_the_tracked_processes_change(proc: FakeProc) -> None:
    """The exit watch re-reads the tracked processes only when the generation moved:
    each process tracked or dropped moves it, a new thread of a tracked one does not."""
    proc.add(100, 100, "nr-gnb", 1)
    proc.add(101, 100, "nr-gnb-rlc", 1)
    proc.add(200, 200, "nr-gnb", 1)
    t = tracker(proc)
    g0 = t.generation
    t.observe(b(100))
    assert t.generation == g0 + 1
    t.observe(b(101))  # a thread of a tracked process
    assert t.generation == g0 + 1
    t.observe(b(200))
    proc.remove(200)
    t.prune()
    assert t.generation == g0 + 3 and snap(t) == [(100, [100, 101])]
    t.set_match(MatchConfig(comm=("other",)))
    assert t.generation == g0 + 4 and snap(t) == []
