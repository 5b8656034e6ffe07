"""Identity decisions over a fake /proc tree (the integration tests use the real one)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict

import pytest

from gtp5g_operator.config import MatchConfig
from gtp5g_operator.procfs import ProcFS, parse_stat
from gtp5g_operator.tracker import TaskTracker


class FakeProc:
    def __init__(self, root: Path) -> None:
        self.root = root

    def add(self, tid: int, tgid: int, comm: str, start: int, uid: int = 0,
            exe: str = "/usr/bin/nr-gnb", state: str = "S") -> None:
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
        if (d / "exe").is_symlink():
            (d / "exe").unlink()
        os.symlink(exe, d / "exe")

    def remove(self, tid: int) -> None:
        shutil.rmtree(self.root / str(tid))
        for task in self.root.glob(f"*/task/{tid}"):
            shutil.rmtree(task)


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path)


def tracker(proc: FakeProc, **match: object) -> TaskTracker:
    return TaskTracker(ProcFS(str(proc.root)), MatchConfig(**match))  # type: ignore[arg-type]


def b(*tids: int) -> set[bytes]:
    return {str(t).encode() for t in tids}


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
    assert t.snapshot() == [(100, [101])]
    assert t.observe(b(100, 101)) is True
    assert t.snapshot() == [(100, [100, 101])]


def test_decoys_are_never_tracked(proc: FakeProc) -> None:
    proc.add(200, 200, "nr-gnbx", 1)
    proc.add(300, 300, "nr-ue", 1)
    proc.add(301, 300, "nr-gnb", 1)  # a thread named nr-gnb in a non-matching process
    t = tracker(proc)
    assert t.observe(b(200, 300, 301, 0, 999)) is False  # 999 does not exist
    assert t.snapshot() == []


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
def test_exe_and_uid_allow_lists(proc: FakeProc, match: Dict[str, tuple],
                                 tracked: bool) -> None:
    proc.add(100, 100, "nr-gnb", 1, uid=0, exe="/usr/bin/nr-gnb")
    t = tracker(proc, **match)
    t.observe(b(100))
    assert bool(t.snapshot()) is tracked


def test_exit_and_pid_reuse_are_pruned(proc: FakeProc) -> None:
    proc.add(100, 100, "nr-gnb", 1)
    proc.add(101, 100, "nr-gnb-rlc", 1)
    t = tracker(proc)
    t.observe(b(100, 101))
    proc.remove(101)
    assert t.prune() is True
    assert t.snapshot() == [(100, [100])]
    # PID 100 reused by another program: a new start time
    proc.add(100, 100, "bash", 99)
    assert t.prune() is True
    assert t.snapshot() == []
    # stale lines naming 100 keep coming: the new process must not be tracked
    assert t.observe(b(100)) is False
    assert t.snapshot() == []


def test_zombie_is_dead(proc: FakeProc) -> None:
    proc.add(100, 100, "nr-gnb", 1)
    t = tracker(proc)
    t.observe(b(100))
    proc.add(100, 100, "nr-gnb", 1, state="Z")
    assert t.prune() is True and t.snapshot() == []


def test_negative_verdicts_are_forgotten_so_reused_ids_are_rechecked(proc: FakeProc) -> None:
    proc.add(500, 500, "sshd", 1)
    t = tracker(proc)
    assert t.observe(b(500)) is False
    proc.add(500, 500, "nr-gnb", 2)  # reused by a real gNB
    assert t.observe(b(500)) is False  # still the cached verdict ...
    t.forget_negatives()  # ... until the liveness pass
    assert t.observe(b(500)) is True


def test_negative_cache_is_bounded(proc: FakeProc) -> None:
    t = TaskTracker(ProcFS(str(proc.root)), MatchConfig(), max_negative=1000)
    for start in range(0, 20_000, 500):
        t.observe(b(*range(start + 1, start + 501)))
    negative, _ = t.cache_sizes()
    assert 0 < negative <= 1000


def test_new_match_rules_drop_processes_that_no_longer_match(proc: FakeProc) -> None:
    proc.add(100, 100, "nr-gnb", 1, uid=1000)
    t = tracker(proc)
    t.observe(b(100))
    assert t.set_match(MatchConfig(uid=(0,))) is True
    assert t.snapshot() == []
    assert t.observe(b(100)) is False
