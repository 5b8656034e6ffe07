"""CPU wait on the real kernel: a tracked nr-gnb whose threads share their CPU
with busy loops waits for it far more than the same process with the CPU to
itself — both measured in this run, alternately, so the host's own load hits
both alike (the marker takes the host lock: tests/conftest.py)."""

from __future__ import annotations

import math
import os
import statistics
from typing import Callable, List

import pytest

from gtp5g_operator.config import MatchConfig
from gtp5g_operator.core.procfs import ProcFS
from gtp5g_operator.core.schedstat import Counters, SchedstatSampler, wait_share
from gtp5g_operator.core.tracker import TaskTracker
from testbed.cpu_contention import BusyLoops, HeavyGroup, all_tids, measure, pin
from testbed.harness import GnbProcess

pytestmark = pytest.mark.kernel

THREADS = ("nr-gnb-rlc", "nr-gnb-sctp", "gnb worker")
BURN = (500, 10.0)  # each thread: 0.5 ms of CPU every 10 ms, like a gNB under traffic
ROUNDS = 3
RUNNABLE_S = 0.3  # measure each round until the gNB was runnable this long
LOOPS = 4
NOISY_BASELINE = 0.5  # waiting more than this alone, it has little room left to rise


def odds(share: float) -> float:
    """Wait per unit of run: a share of 50 % is 1, of 80 % is 4."""
    return share / (1 - share) if share < 1 else math.inf


def test_a_gnb_sharing_its_cpu_with_busy_loops_waits_more(
        gnb: Callable[..., GnbProcess]) -> None:
    cpu = max(os.sched_getaffinity(0))
    group = HeavyGroup(f"gtp5g-test-cpu-wait-{os.getpid()}")
    g = gnb("nr-gnb", THREADS, burn=BURN)
    alone: List[float] = []
    shared: List[float] = []
    said: List[str] = []
    try:
        pin(all_tids(g.pid), cpu)
        group.add(g.pid)
        tracker = TaskTracker(ProcFS(), MatchConfig())
        tracker.observe(set(g.tids))
        assert tracker.task_count == 1 + len(THREADS)
        sampler = SchedstatSampler(window=math.inf, on_unavailable=said.append)
        sampler.sample(tracker.tracked_tasks())
        if said:
            pytest.skip(said[0])
        for _ in range(ROUNDS):
            alone.append(_share(measure(sampler, tracker, RUNNABLE_S)))
            loops = BusyLoops(LOOPS, cpu, group)
            try:
                shared.append(_share(measure(sampler, tracker, RUNNABLE_S)))
            finally:
                loops.stop()
    finally:
        g.stop()
        group.remove()
    where = (f"CPU {cpu}, {'own cgroup' if group.why == '' else group.why}: alone "
             f"{_pcts(alone)}, with {LOOPS} busy loops {_pcts(shared)}")
    baseline, competing = statistics.median(alone), statistics.median(shared)
    if baseline > NOISY_BASELINE:  # the host's load, not ours, made it wait
        pytest.skip(f"the host's own load drowns the baseline ({where})")
    print(where)
    assert competing > max(alone), where
    assert odds(competing) >= 3 * odds(baseline), where


def _share(counters: Counters) -> float:
    share = wait_share(counters)
    assert share is not None, "measured until runnable, so never None"
    return share


def _pcts(shares: List[float]) -> str:
    return ", ".join(f"{s * 100:.0f} %" for s in shares)
