"""CPU-wait sampling over a fake /proc tree (tests/kernel has the real one)."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from gtp5g_operator.config import MatchConfig
from gtp5g_operator.core.procfs import ProcFS
from gtp5g_operator.core.schedstat import (
    ALL_ZERO,
    MIN_RUNNABLE_NS,
    NO_FILE,
    ZERO,
    Counters,
    SchedstatSampler,
    TaskWait,
    WindowReport,
    interval_delta,
    parse_schedstat,
    wait_share,
)
from gtp5g_operator.core.schedstat_text import (
    describe,
    report_from_json,
    report_json,
    status_note,
)
from gtp5g_operator.core.tracker import TaskRef, TaskTracker
from tests.doubles import Clock

MS = 1_000_000  # ns


class Tree:
    """/proc/TGID/task/TID/schedstat files in a tmp directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def task_dir(self, tgid: int, tid: int) -> Path:
        d = self.root / str(tgid) / "task" / str(tid)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def set(self, tgid: int, tid: int, run_ms: float, wait_ms: float, slices: int) -> None:
        self.raw(tgid, tid, f"{int(run_ms * MS)} {int(wait_ms * MS)} {slices}\n")

    def raw(self, tgid: int, tid: int, text: str) -> None:
        (self.task_dir(tgid, tid) / "schedstat").write_text(text)

    def remove(self, tgid: int, tid: int) -> None:
        shutil.rmtree(self.root / str(tgid) / "task" / str(tid))


def ref(tgid: int, tid: int, start: int = 1, process: str = "nr-gnb",
        name: Optional[str] = None) -> TaskRef:
    return TaskRef(tgid, tid, start, process, name or f"t{tid}")


class World:
    def __init__(self, root: Path, window: float = 0.0) -> None:
        self.tree = Tree(root)
        self.clock = Clock()
        self.said: List[str] = []
        self.sampler = SchedstatSampler(str(root), self.clock, window, self.said.append)

    def sample(self, *refs: TaskRef, step: float = 5.0) -> bool:
        self.clock.now += step
        return self.sampler.sample(refs)

    def lifetime(self, name: str = "nr-gnb") -> Counters:
        return self.sampler.lifetime.get(name, ZERO)


@pytest.fixture
def w(tmp_path: Path) -> World:
    return World(tmp_path)


def ms(run: float, wait: float, slices: int) -> Counters:
    return Counters(int(run * MS), int(wait * MS), slices)


# --- parsing and deltas ---------------------------------------------------------------


@pytest.mark.parametrize(("data", "expected"), [
    (b"123 456 7\n", Counters(123, 456, 7)),
    (b"0 0 0\n", ZERO),
    (b"18446744073709551615 0 1\n", Counters(2**64 - 1, 0, 1)),
    (b"1 2 3 4\n", Counters(1, 2, 3)),  # a later kernel adding a field
    (b"1 2\n", None),
    (b"", None),
    (b"1 -2 3\n", None),
    (b"a b c\n", None),
    (b"1_0 2 3\n", None),  # int() would take it
    (b"1 2 0x3\n", None),
])
def test_parse_schedstat(data: bytes, expected: Optional[Counters]) -> None:
    assert parse_schedstat(data) == expected


LIMIT = 10 * 1e9  # a 10 s interval


@pytest.mark.parametrize(("before", "after", "expected"), [
    (Counters(10, 20, 3), Counters(15, 26, 5), Counters(5, 6, 2)),
    (Counters(10, 20, 3), Counters(10, 20, 3), ZERO),
    (Counters(10, 20, 3), Counters(9, 26, 5), None),  # run went backwards
    (Counters(10, 20, 3), Counters(15, 19, 5), None),  # wait went backwards
    (Counters(0, 0, 2**32 - 1), Counters(5, 5, 4), None),  # a 32-bit count wrapped
    (ZERO, Counters(int(6e9), int(4e9), 1), Counters(int(6e9), int(4e9), 1)),  # = limit
    (ZERO, Counters(int(6e9), int(4e9) + 1, 1), None),  # runnable longer than the interval
    (ZERO, Counters(1, 1, int(LIMIT / 100) + 1), None),  # scheduled more than once per 100 ns
])
def test_interval_delta(before: Counters, after: Counters, expected: Optional[Counters]) -> None:
    assert interval_delta(before, after, LIMIT) == expected


def test_wait_share() -> None:
    assert wait_share(ms(99, 1, 10)) == pytest.approx(0.01)
    assert wait_share(ZERO) is None


# --- the sampler ----------------------------------------------------------------------


def test_a_first_reading_is_a_baseline_and_later_ones_count(w: World) -> None:
    a = ref(100, 100)
    w.tree.set(100, 100, run_ms=3_600_000, wait_ms=1000, slices=10_000)  # an hour old
    assert w.sample(a) is False
    assert w.sampler.lifetime == {} and w.sampler.reports == {}
    w.tree.set(100, 100, run_ms=3_600_040, wait_ms=1010, slices=10_050)
    assert w.sample(a) is True  # window 0: every sample after the first closes one
    assert w.lifetime() == ms(40, 10, 50)
    report = w.sampler.reports["nr-gnb"]
    assert (report.seconds, report.counters, report.tasks) == (5.0, ms(40, 10, 50), 1)
    assert wait_share(report.counters) == pytest.approx(0.2)


def test_a_task_that_appears_later_starts_from_its_own_baseline(w: World) -> None:
    a, b = ref(100, 100), ref(100, 101)
    w.tree.set(100, 100, 10, 1, 5)
    w.sample(a)
    w.tree.set(100, 100, 20, 2, 10)
    w.tree.set(100, 101, 5000, 500, 900)  # appeared with a long history
    w.sample(a, b)
    assert w.lifetime() == ms(10, 1, 5)
    w.tree.set(100, 101, 5010, 501, 905)
    w.sample(a, b)
    assert w.lifetime() == ms(20, 2, 10)


def test_an_exited_task_keeps_what_was_counted_once(w: World) -> None:
    a, b = ref(100, 100), ref(100, 101)
    w.tree.set(100, 100, 10, 1, 5)
    w.tree.set(100, 101, 10, 1, 5)
    w.sample(a, b)
    w.tree.set(100, 100, 20, 2, 10)
    w.tree.set(100, 101, 30, 3, 15)
    w.sample(a, b)
    assert w.lifetime() == ms(30, 3, 15) and w.sampler.task_count == 2
    w.tree.remove(100, 101)  # exited; the tracker has not pruned it yet
    w.sample(a, b)
    assert w.lifetime() == ms(30, 3, 15) and w.sampler.task_count == 1
    w.sample(a)  # pruned now
    assert w.lifetime() == ms(30, 3, 15)
    assert w.sampler.reports["nr-gnb"].counters == ZERO


def test_a_task_the_tracker_dropped_is_forgotten(w: World) -> None:
    a, b = ref(100, 100), ref(100, 101)
    w.tree.set(100, 100, 10, 1, 5)
    w.tree.set(100, 101, 10, 1, 5)
    w.sample(a, b)
    w.sample(a)  # b no longer matches (exec'd, renamed): its file is still there
    w.tree.set(100, 101, 50, 5, 25)
    w.sample(a, b)  # tracked again: a new baseline, not 40 ms of run
    assert w.lifetime() == ZERO


@pytest.mark.parametrize("later", [(1, 0.1, 1), (900, 90, 400)])
def test_a_reused_id_is_a_new_task(w: World, later: Tuple[float, float, int]) -> None:
    """Another start time: whether its counters are below or above the old ones,
    nothing is carried across."""
    w.tree.set(100, 101, 500, 50, 100)
    w.sample(ref(100, 101, start=7))
    w.tree.set(200, 101, *later)  # 101 is now a thread of process 200
    w.sample(ref(200, 101, start=9))
    assert w.lifetime() == ZERO
    run, wait, slices = later
    w.tree.set(200, 101, run + 10, wait + 1, slices + 5)
    w.sample(ref(200, 101, start=9))
    assert w.lifetime() == ms(10, 1, 5)


@pytest.mark.parametrize("after", [
    (5, 1, 20),  # run went backwards
    (20, 0.5, 20),  # wait went backwards
    (20, 2, 3),  # the scheduling count wrapped
])
def test_counters_that_go_backwards_restart_the_baseline(
        w: World, after: Tuple[float, float, int]) -> None:
    a = ref(100, 100)
    w.tree.set(100, 100, 10, 1, 2**32 - 2)
    w.sample(a)
    w.tree.set(100, 100, *after)
    w.sample(a)
    assert w.lifetime() == ZERO and w.sampler.discarded == 1
    run, wait, slices = after
    w.tree.set(100, 100, run + 4, wait + 1, slices + 2)
    w.sample(a)
    assert w.lifetime() == ms(4, 1, 2)


def test_a_jump_longer_than_the_interval_is_not_counted(w: World) -> None:
    a = ref(100, 100)
    w.tree.set(100, 100, 10, 1, 2)
    w.sample(a)
    w.tree.set(100, 100, 10 + 3_600_000, 1, 3)  # an hour of CPU in 5 s
    w.sample(a)
    assert w.lifetime() == ZERO and w.sampler.discarded == 1
    w.tree.set(100, 100, 10 + 3_600_000 + 4_900, 1 + 50, 13)  # 4.95 s of 5: fine
    w.sample(a)
    assert w.lifetime() == ms(4_900, 50, 10)


def test_a_kernel_without_schedstat_is_said_once_and_not_read_again(w: World) -> None:
    a, b = ref(100, 100), ref(100, 101)
    w.tree.task_dir(100, 100)  # the task is there, its schedstat is not
    w.tree.task_dir(100, 101)
    assert w.sample(a, b) is False
    assert w.said == [NO_FILE] and w.sampler.unavailable == NO_FILE
    reads = w.sampler.reads
    assert w.sample(a, b) is False and w.sample(a, b) is False
    assert w.sampler.reads == reads and w.said == [NO_FILE]


def test_a_task_that_is_gone_is_not_a_kernel_without_schedstat(w: World) -> None:
    w.tree.set(100, 100, 10, 1, 5)
    w.sample(ref(100, 100), ref(100, 999))  # 999 exited: no directory at all
    w.tree.set(100, 100, 20, 2, 10)
    w.sample(ref(100, 100), ref(100, 999))
    assert w.said == [] and w.sampler.unavailable == ""
    assert w.lifetime() == ms(10, 1, 5)


def test_counters_that_are_all_zero_are_said_once(w: World) -> None:
    a, b = ref(100, 100), ref(100, 101)
    for _ in range(3):
        w.tree.set(100, 100, 0, 0, 0)
        w.tree.set(100, 101, 0, 0, 0)
        w.sample(a, b)
    assert w.said == [ALL_ZERO] and w.sampler.unavailable == ALL_ZERO
    w.tree.set(100, 100, 10, 1, 5)  # delay accounting switched on
    w.sample(a, b)
    assert w.sampler.unavailable == "" and w.lifetime() == ms(10, 1, 5)


def test_an_unreadable_file_skips_that_task_only(w: World) -> None:
    a, b = ref(100, 100), ref(100, 101)
    w.tree.set(100, 100, 10, 1, 5)
    w.tree.set(100, 101, 10, 1, 5)
    w.sample(a, b)
    w.tree.set(100, 100, 20, 2, 10)
    w.tree.raw(100, 101, "garbage\n")
    w.sample(a, b)
    assert w.lifetime() == ms(10, 1, 5) and w.sampler.unreadable == 1
    w.tree.set(100, 101, 40, 4, 20)  # readable again: a baseline, not 30 ms
    w.tree.set(100, 100, 30, 3, 15)
    w.sample(a, b)
    assert w.lifetime() == ms(20, 2, 10)
    (w.tree.task_dir(100, 101) / "schedstat").unlink()
    (w.tree.task_dir(100, 101) / "schedstat").mkdir()  # EISDIR on read
    w.sample(a, b)
    assert w.sampler.unreadable == 2 and w.said == []


def test_a_window_sums_its_samples_and_names_the_worst_task(tmp_path: Path) -> None:
    w = World(tmp_path, window=60.0)
    rlc, sctp, idle = ref(100, 101, name="nr-gnb-rlc"), ref(100, 102), ref(100, 103)
    totals = {101: [0.0, 0.0, 0], 102: [0.0, 0.0, 0], 103: [0.0, 0.0, 0]}
    per_sample = {101: (97.9, 2.1, 5), 102: (99.5, 0.5, 10),
                  103: (0.01, 0.05, 1)}  # idle: 83 % of almost nothing
    closed = []
    for _ in range(13):  # a baseline, then 12 x 5 s
        for tid, t in totals.items():
            w.tree.set(100, tid, *t)  # type: ignore[arg-type]
            t[0] += per_sample[tid][0]
            t[1] += per_sample[tid][1]
            t[2] += per_sample[tid][2]  # type: ignore[call-overload]
        closed.append(w.sample(rlc, sctp, idle))
    assert closed == [False] * 12 + [True]
    r = w.sampler.reports["nr-gnb"]
    assert r.seconds == 60.0 and r.tasks == 3
    assert r.counters.slices == 12 * (5 + 10 + 1)
    assert r.worst is not None and (r.worst.tid, r.worst.name) == (101, "nr-gnb-rlc")
    assert wait_share(r.worst.counters) == pytest.approx(0.021, abs=1e-4)
    assert r.worst.counters.run_ns + r.worst.counters.wait_ns > MIN_RUNNABLE_NS
    assert describe(r) == ("nr-gnb: waited 1.3 % of its runnable time for a CPU over the "
                           "last 60 s (worst task nr-gnb-rlc 2.1 %, 0.4 ms per scheduling)")


def test_a_window_with_only_idle_tasks_names_no_worst(w: World) -> None:
    a = ref(100, 100)
    w.tree.set(100, 100, 1, 0, 1)
    w.sample(a)
    w.tree.set(100, 100, 1.1, 0.4, 2)
    w.sample(a)
    r = w.sampler.reports["nr-gnb"]
    assert r.worst is None
    assert describe(r) == ("nr-gnb: waited 80.0 % of its runnable time for a CPU over the "
                           "last 5 s")


def test_reports_are_per_process_name_not_per_process(w: World) -> None:
    gnb1, gnb2 = ref(100, 100), ref(200, 200)
    cu = ref(300, 300, process="nr-cu")
    for run, wait, slices in ((0, 0, 0), (10, 1, 5)):
        w.tree.set(100, 100, run, wait, slices)
        w.tree.set(200, 200, 2 * run, 2 * wait, 2 * slices)
        w.tree.set(300, 300, run, 0, slices)
        w.sample(gnb1, gnb2, cu)
    assert sorted(w.sampler.reports) == ["nr-cu", "nr-gnb"]
    assert w.sampler.reports["nr-gnb"].counters == ms(30, 3, 15)
    assert w.sampler.reports["nr-gnb"].tasks == 2
    assert w.sampler.lifetime == {"nr-gnb": ms(30, 3, 15), "nr-cu": ms(10, 0, 5)}


def test_a_renamed_process_counts_under_its_new_name(tmp_path: Path) -> None:
    """prctl(PR_SET_NAME) on the leader: same tasks, another process name."""
    w = World(tmp_path, window=60.0)
    w.tree.set(100, 101, 10, 1, 5)
    w.sample(ref(100, 101))
    w.tree.set(100, 101, 20, 2, 10)
    w.sample(ref(100, 101))
    w.tree.set(100, 101, 40, 4, 20)
    w.sample(ref(100, 101, process="nr-gnb2"))
    assert w.sampler.lifetime == {"nr-gnb": ms(10, 1, 5), "nr-gnb2": ms(20, 2, 10)}
    w.sample(ref(100, 101, process="nr-gnb2"), step=60)
    assert w.sampler.reports["nr-gnb2"].counters == ms(20, 2, 10)
    assert w.sampler.reports["nr-gnb"].counters == ms(10, 1, 5)


def test_lifetime_totals_never_go_down_and_never_count_twice(tmp_path: Path) -> None:
    """A long random life: tasks come, go, reuse IDs, wrap and stall; after every
    sample each total is at least the last one and at most what the tasks did."""
    rng = random.Random(22)
    w = World(tmp_path)
    live: Dict[int, Tuple[int, List[int]]] = {}  # tid -> (start, counters in ns)
    done = [0, 0, 0]  # everything the tasks did, any way it was read
    last = ZERO
    for step in range(150):
        for _ in range(rng.randrange(3)):  # new tasks, some under a reused ID
            tid, c = rng.randrange(100, 112), [rng.randrange(10**9)] * 2 + [5]
            live[tid] = (step, c)
            w.tree.raw(1, tid, " ".join(map(str, c)))
        for tid in list(live):
            c = live[tid][1]
            event = rng.random()
            if event < 0.05:
                del live[tid]
                w.tree.remove(1, tid)
                continue
            if event < 0.08:
                c[:] = [0, 0, 0]  # counters reset (as if wrapped)
            for i, most in enumerate((2 * 10**9, 2 * 10**9, 1000)):
                more = rng.randrange(most)
                c[i] += more
                done[i] += more
            w.tree.raw(1, tid, " ".join(map(str, c)))
        w.sample(*(ref(1, tid, start) for tid, (start, _) in live.items()))
        now = w.lifetime()
        assert all(n >= b for n, b in zip(now, last, strict=True)), (step, now, last)
        assert all(n <= d for n, d in zip(now, done, strict=True)), (step, now, done)
        last = now
    assert last.run_ns > 0 and w.sampler.task_count == len(live)
    assert w.sampler.discarded > 0  # the resets were met


def test_its_state_shrinks_with_the_tracked_set(w: World) -> None:
    refs = [ref(100, 100 + i) for i in range(100)]
    for r in refs:
        w.tree.set(100, r.tid, 1, 1, 1)
    w.sample(*refs)
    assert w.sampler.task_count == 100
    w.sample(*refs[:2])
    assert w.sampler.task_count == 2


def test_it_walks_the_trackers_tasks(tmp_path: Path) -> None:
    """The liveness pass hands over tracker.tracked_tasks(): identities included."""
    rest = " ".join(["0"] * 17)
    for tid, comm, start in ((100, "nr-gnb", 50), (101, "nr-gnb-rlc", 60)):
        for d in (tmp_path / str(tid), tmp_path / "100" / "task" / str(tid)):
            d.mkdir(parents=True, exist_ok=True)
            (d / "stat").write_text(f"{tid} ({comm}) S 1 {rest} {start} 0 0\n")
            (d / "status").write_text(f"Name:\t{comm}\nTgid:\t100\nUid:\t0\t0\t0\t0\n")
            (d / "comm").write_text(comm + "\n")
    tracker = TaskTracker(ProcFS(str(tmp_path)), MatchConfig())
    tracker.observe({100, 101})
    assert sorted(tracker.tracked_tasks()) == [
        TaskRef(100, 100, 50, "nr-gnb", "nr-gnb"), TaskRef(100, 101, 60, "nr-gnb", "nr-gnb-rlc")]
    w = World(tmp_path)
    for run in (10, 20):
        w.tree.set(100, 100, run, 1, run)
        w.tree.set(100, 101, 2 * run, 1, run)
        w.clock.now += 5
        w.sampler.sample(tracker.tracked_tasks())
    assert w.lifetime() == ms(30, 0, 20)


# --- words and JSON -------------------------------------------------------------------


GNB_WINDOW = ms(992, 8, 100)  # waited 0.8 %


def report(process: str = "nr-gnb", counters: Counters = GNB_WINDOW,
           worst: Optional[TaskWait] = None, seconds: float = 60.0) -> WindowReport:
    return WindowReport(process, seconds, counters, 3, worst)


@pytest.mark.parametrize(("r", "words"), [
    (report(worst=TaskWait(101, "nr-gnb-rlc", ms(979, 21, 52))),
     "nr-gnb: waited 0.8 % of its runnable time for a CPU over the last 60 s "
     "(worst task nr-gnb-rlc 2.1 %, 0.4 ms per scheduling)"),
    (report(counters=ms(1000, 0.4, 9), worst=TaskWait(7, "w", ms(99, 0.035, 1))),
     "nr-gnb: waited 0.04 % of its runnable time for a CPU over the last 60 s "
     "(worst task w 0.04 %, 35 µs per scheduling)"),
    (report(counters=ms(5, 0, 3)),
     "nr-gnb: waited 0 % of its runnable time for a CPU over the last 60 s"),
    (report(counters=ZERO, seconds=5.2), "nr-gnb: not runnable over the last 5 s"),
    (report(counters=ZERO, seconds=0.2), "nr-gnb: not runnable over the last 0.2 s"),
    (report(counters=ms(5, 0, 3), seconds=0.5),
     "nr-gnb: waited 0 % of its runnable time for a CPU over the last 0.5 s"),
    (report(worst=TaskWait(7, "evil\x1b[2J\nname", ms(1, 2, 0))),
     "nr-gnb: waited 0.8 % of its runnable time for a CPU over the last 60 s "
     "(worst task evil\\x1b[2J\\nname 66.7 %)"),
    # as the journal shows the thread ("task 7 (evil\x1b) added"): "?" for each control
    # character made "evil\x1b", "evil\n" and a thread named "evil?" one name
    (report(worst=TaskWait(7, "evil?", ms(1, 2, 0))),
     "nr-gnb: waited 0.8 % of its runnable time for a CPU over the last 60 s "
     "(worst task evil? 66.7 %)"),
])
def test_describe(r: WindowReport, words: str) -> None:
    assert describe(r) == words


def test_status_note() -> None:
    reports = [report(worst=TaskWait(101, "nr-gnb-rlc", ms(979, 21, 52))),
               report("nr-cu", ms(100, 1, 3)), report("idle", ZERO)]
    assert status_note(reports) == "CPU wait nr-gnb 0.8 % (worst 2.1 %), nr-cu 1.0 %"
    assert status_note([]) == ""


def test_a_report_survives_json() -> None:
    for r in (report(worst=TaskWait(101, "nr-gnb-rlc", ms(979, 21, 52))), report()):
        data = report_json(r)
        assert report_from_json(data) == r
    data = report_json(report(worst=TaskWait(101, "nr-gnb-rlc", ms(979, 21, 52))))
    assert data["wait_share"] == 0.008 and data["worst"]["wait_per_slice_ns"] == 403846


@pytest.mark.parametrize(("change", "error"), [
    (lambda d: d.pop("process"), "cpu_wait.process: expected a string, got None"),
    (lambda d: d.update(run_ns=-1), "cpu_wait.run_ns: expected an integer from 0 to 2^64-1, "
                                    "got -1"),
    (lambda d: d.update(wait_ns=True), "cpu_wait.wait_ns: expected an integer"),
    (lambda d: d.update(slices=2**64), "cpu_wait.slices: expected an integer"),
    (lambda d: d.update(tasks=1.5), "cpu_wait.tasks: expected an integer"),
    (lambda d: d.update(seconds=float("nan")), "cpu_wait.seconds: expected a non-negative"),
    (lambda d: d.update(seconds="60"), "cpu_wait.seconds: expected a non-negative"),
    (lambda d: d.update(seconds=10**400), "cpu_wait.seconds: expected a non-negative"),
    (lambda d: d.update(worst=[1]), "cpu_wait.worst: expected an object, got list"),
    (lambda d: d["worst"].update(name=None), "cpu_wait.worst.name: expected a string"),
    (lambda d: d["worst"].update(run_ns="x" * 100),
     "cpu_wait.worst.run_ns: expected an integer from 0 to 2^64-1, got 'xxxxxxxxxxxxxxxxxxxx"),
])
def test_a_bad_report_is_one_line_naming_the_field(change: object, error: str) -> None:
    data = report_json(report(worst=TaskWait(101, "nr-gnb-rlc", ms(979, 21, 52))))
    change(data)  # type: ignore[operator]
    with pytest.raises(ValueError) as e:
        report_from_json(data)
    assert str(e.value).startswith(error) and "\n" not in str(e.value)
    assert report_from_json is not None and len(str(e.value)) < 160
    with pytest.raises(ValueError, match="cpu_wait: expected an object, got str"):
        report_from_json("nope")
