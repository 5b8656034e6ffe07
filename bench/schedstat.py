"""CPU wait: what sampling costs, and what it reads on this machine.

cost    one sample of every tracked task's schedstat, at 10 and at 10,000 real
        tasks (gnb_sim processes), per task, beside one liveness pass over the
        same tasks (prune, rejudge with names, forget: what the daemon does
        every liveness_interval); CPU time of this thread, and wall time.
shares  the wait share of a gNB-like process (3 named threads: "idle", 200 µs
        of CPU every 10 ms each; "busy", 500 µs every 10 ms) alone on its CPU and
        with 1 and 4 busy loops pinned beside it, on the bare host and in a
        cgroup of its own (testbed/cpu_contention.py), measured as the daemon
        would: the growth of the sampler's lifetime counters.

It pins busy loops and makes a cgroup: run the benchmark under the host lock
(flock /run/lock/gtp5g-operator-tests.host.lock make bench).
"""

from __future__ import annotations

import math
import os
import statistics
import time
import tracemalloc
from typing import Any, Callable, Dict, List, Optional, Tuple

from gtp5g_operator.config import MatchConfig
from gtp5g_operator.core.procfs import ProcFS
from gtp5g_operator.core.schedstat import (
    Counters,
    SchedstatSampler,
    wait_per_slice_ns,
    wait_share,
)
from gtp5g_operator.core.tracker import TaskTracker
from testbed.cpu_contention import BusyLoops, HeavyGroup, all_tids, measure, pin
from testbed.harness import GnbProcess

Row = Callable[[str, str, str, Optional[bool]], None]

THREADS = ("nr-gnb-rlc", "nr-gnb-sctp", "gnb worker")
LOADS = {"idle": ((200, 10.0), 0.15), "busy": ((500, 10.0), 0.3)}  # burn, runnable s
LOOPS = (0, 1, 4)
ROUNDS = 2


# --- cost --------------------------------------------------------------------------------


def _timed(what: Callable[[], Any], repeats: int) -> Tuple[float, float]:
    """(CPU s, wall s) per call, medians of `repeats` calls."""
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.thread_time(), time.perf_counter()
        what()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(cpu), statistics.median(wall)


def _liveness_pass(tracker: TaskTracker) -> None:
    tracker.prune()
    tracker.rejudge(names=True)
    tracker.forget_verdicts()


def _cost_at(gnbs: List[GnbProcess], repeats: int) -> Dict[str, Any]:
    tracker = TaskTracker(ProcFS(), MatchConfig())
    tracker.observe({t for g in gnbs for t in all_tids(g.pid)})
    n = tracker.task_count
    sampler = SchedstatSampler(window=0.0)
    tracemalloc.start()
    sampler.sample(tracker.tracked_tasks())  # the baselines: the state it keeps
    state_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    s_cpu, s_wall = _timed(lambda: sampler.sample(tracker.tracked_tasks()), repeats)
    l_cpu, l_wall = _timed(lambda: _liveness_pass(tracker), repeats)
    assert sampler.task_count == n and not sampler.unavailable, sampler.unavailable
    return {"tasks": n, "sample_cpu_ms": s_cpu * 1e3, "sample_wall_ms": s_wall * 1e3,
            "sample_us_per_task": s_cpu / n * 1e6, "liveness_cpu_ms": l_cpu * 1e3,
            "liveness_wall_ms": l_wall * 1e3, "liveness_us_per_task": l_cpu / n * 1e6,
            "state_bytes_per_task": state_bytes / n}


def bench_cost() -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for n, procs, workers, repeats in ((10, 1, 9, 200), (10000, 10, 999, 7)):
        gnbs: List[GnbProcess] = []
        try:
            for _ in range(procs):
                gnbs.append(GnbProcess("nr-gnb", (), workers=workers))
            out[str(n)] = _cost_at(gnbs, repeats)
        finally:
            for g in gnbs:
                g.stop()
    return out


# --- shares ------------------------------------------------------------------------------


def _round(tracker: TaskTracker, sampler: SchedstatSampler, cpu: int,
           group: Optional[HeavyGroup], loops: int, runnable_s: float) -> Counters:
    busy = BusyLoops(loops, cpu, group)
    try:
        return measure(sampler, tracker, runnable_s)
    finally:
        busy.stop()


def _shares_for(load: str, isolated: bool, cpu: int) -> Dict[str, Any]:
    burn, runnable_s = LOADS[load]
    group = HeavyGroup(f"gtp5g-bench-cpu-wait-{os.getpid()}") if isolated else None
    g = GnbProcess("nr-gnb", THREADS, burn=burn)
    runs: Dict[int, List[Counters]] = {k: [] for k in LOOPS}
    try:
        pin(all_tids(g.pid), cpu)
        if group is not None:
            group.add(g.pid)
        tracker = TaskTracker(ProcFS(), MatchConfig())
        tracker.observe(set(all_tids(g.pid)))
        sampler = SchedstatSampler(window=math.inf)
        for _ in range(ROUNDS):
            for k in LOOPS:  # alternating, so drift in the host's load hits all alike
                runs[k].append(_round(tracker, sampler, cpu, group, k, runnable_s))
    finally:
        g.stop()
        if group is not None:
            group.remove()
    return {str(k): _summary(c) for k, c in runs.items()} | {
        "group": "" if group is None else (group.why or "own cgroup")}


def _summary(runs: List[Counters]) -> Dict[str, Any]:
    shares = [wait_share(c) or 0.0 for c in runs]
    per_slice = [wait_per_slice_ns(c) or 0.0 for c in runs]
    return {"share": statistics.median(shares), "shares": shares,
            "wait_per_slice_ms": statistics.median(per_slice) / 1e6}


def bench_shares() -> Dict[str, Any]:
    cpu = max(os.sched_getaffinity(0))
    out: Dict[str, Any] = {"cpu": cpu}
    for load in LOADS:
        for isolated in (False, True):
            out[f"{load}_{'cgroup' if isolated else 'bare'}"] = _shares_for(load, isolated, cpu)
    return out


def bench_schedstat() -> Dict[str, Any]:
    return {"cost": bench_cost(), "shares": bench_shares()}


# --- report ------------------------------------------------------------------------------


NAME = "schedstat"  # the section's name in bench/run.py


def run(world: Any, python: str) -> Dict[str, Any]:
    """The section (bench/run.py's module protocol): in-process, on this machine's /proc."""
    return bench_schedstat()


def rows(r: Dict[str, Any], row: Row) -> None:
    schedstat_rows(r, row)


def schedstat_rows(r: Dict[str, Any], row: Row) -> None:
    for n, c in r["cost"].items():
        row(f"CPU-wait sample of {int(n):,} tasks", f"{c['sample_us_per_task']:.1f} µs/task "
            f"CPU ({c['sample_cpu_ms']:.2f} ms, wall {c['sample_wall_ms']:.2f} ms); liveness "
            f"pass {c['liveness_us_per_task']:.1f} µs/task; state "
            f"{c['state_bytes_per_task']:.0f} B/task",
            "≤ the liveness pass", c["sample_us_per_task"] <= c["liveness_us_per_task"])
    s = r["shares"]
    for key, x in s.items():
        if key == "cpu":
            continue
        load, where = key.split("_")
        cells = ", ".join(f"{k} loop{'s' if k != '1' else ''} {x[k]['share'] * 100:.0f} % "
                          f"({x[k]['wait_per_slice_ms']:.2f} ms/slice)" for k in map(str, LOOPS))
        place = "bare host" if where == "bare" else x["group"]
        row(f"CPU wait share, {load} gNB on CPU {s['cpu']} ({place})", cells, "(report)", None)
