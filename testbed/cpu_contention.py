"""Competition for one CPU, for the CPU-wait test and benchmark.

Busy loops pinned to a CPU, a gNB's threads pinned beside them, and — as
root, where the cpu controller is mounted — a cgroup of high weight around
both: on a shared, loaded host the rest of the machine then barely competes
for that CPU, so the gNB's baseline is its own and the busy loops are what
makes the difference.  Callers hold the host lock (testbed/host_lock.py).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterable, List, Optional

from gtp5g_operator.core.schedstat import ZERO, Counters, SchedstatSampler
from gtp5g_operator.core.tracker import TaskTracker

from .harness import wait_until

CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")
CGROUP_V2 = Path("/sys/fs/cgroup")
V1_SHARES = 262144  # the most cpu.shares allows (a root sibling has 1024)
V2_WEIGHT = 10000  # the most cpu.weight allows (a sibling has 100)


def pin(tids: Iterable[int], cpu: int) -> None:
    """Every listed task (threads one by one: affinity is per thread) on `cpu`."""
    for tid in tids:
        os.sched_setaffinity(tid, {cpu})


def all_tids(pid: int) -> List[int]:
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


class HeavyGroup:
    """A cpu cgroup of the highest weight; `path` is None where none can be made
    (not root, no cpu controller), and then `why` says so."""

    def __init__(self, name: str) -> None:
        self.path: Optional[Path] = None
        self.why = ""
        if os.geteuid() != 0:
            self.why = "not root: no cgroup of our own"
        elif (CGROUP_V1_CPU / "cpu.shares").exists():
            self._make(CGROUP_V1_CPU / name, "cpu.shares", V1_SHARES)
        elif "cpu" in _read(CGROUP_V2 / "cgroup.subtree_control").split():
            self._make(CGROUP_V2 / name, "cpu.weight", V2_WEIGHT)
        else:
            self.why = "no cgroup cpu controller (v1 cpu, or v2 with cpu enabled)"

    def _make(self, path: Path, knob: str, value: int) -> None:
        try:
            path.mkdir(exist_ok=True)
            (path / knob).write_text(str(value))
        except OSError as e:
            self.why = f"cannot make {path}: {e.strerror}"
            return
        self.path = path

    def add(self, pid: int) -> None:
        """The whole process, every thread (cgroup.procs)."""
        if self.path is not None:
            (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        """Delete the group once its (killed) processes have left it."""
        if self.path is None:
            return
        procs = self.path / "cgroup.procs"
        wait_until(lambda: not _read(procs).strip(), 10, f"{self.path} to empty")
        self.path.rmdir()
        self.path = None


class BusyLoops:
    """`count` shell loops that never sleep, pinned to `cpu`, in `group` if any."""

    def __init__(self, count: int, cpu: int, group: Optional[HeavyGroup] = None) -> None:
        self.procs: List[subprocess.Popen[bytes]] = []
        try:
            for _ in range(count):
                p = subprocess.Popen(["sh", "-c", "while :; do :; done"])
                self.procs.append(p)
                pin([p.pid], cpu)
                if group is not None:
                    group.add(p.pid)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
        self.procs = []


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def measure(sampler: SchedstatSampler, tracker: TaskTracker, runnable_s: float,
            process: str = "nr-gnb", timeout: float = 60.0) -> Counters:
    """The process's counters (its lifetime totals' growth) over the next
    `runnable_s` seconds of runnable time, summed over its tasks: polled, so a
    loaded host takes longer rather than measuring less."""
    sampler.sample(tracker.tracked_tasks())
    start = sampler.lifetime.get(process, ZERO)

    def grown() -> Optional[Counters]:
        sampler.sample(tracker.tracked_tasks())
        now = sampler.lifetime.get(process, ZERO)
        d = Counters(*(b - a for a, b in zip(start, now, strict=True)))
        return d if d.run_ns + d.wait_ns >= runnable_s * 1e9 else None

    counters: Counters = wait_until(grown, timeout, f"{runnable_s} s runnable of {process}",
                                    interval=0.1)
    return counters
