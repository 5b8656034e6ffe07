"""How long the tracked tasks wait for a CPU: each task's own scheduler
counters, /proc/TGID/task/TID/schedstat, sampled at the liveness pass.

The kernel keeps three numbers per task, whatever the scheduler (sched_ext
included): nanoseconds on a CPU, nanoseconds runnable but waiting in a run
queue, and how many times the task got a CPU.  Over an interval, a task
waited wait / (run + wait) of its runnable time, and wait / slices per
scheduling.

The sampler keeps these rules, so that its totals can be Prometheus counters:

* a task's first reading is its baseline, never a delta: a gNB tracked an
  hour after it started does not put that hour into the last interval;
* identity is (ID, start time): a reused ID starts a new baseline (the
  liveness pass re-reads start times just before sampling; an ID reused in
  between reads as a young task's counters, below the baseline: see below);
* a counter that went backwards (a 32-bit count wrapped, a mixed read) or a
  delta longer than the interval allows starts a new baseline: nothing
  negative or absurd is ever added;
* a task that exited keeps what was counted up to its last reading, once;
  the time between that reading and its exit cannot be seen (its file is gone);
* one read of one small file per task per sample, nothing per trace line
  (an idle task's reading is the same bytes again: one comparison); the
  state is one entry per tracked task and one per process name.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, NamedTuple, Optional, Set, Tuple

from .tracker import TaskRef

log = logging.getLogger(__name__)

MIN_RUNNABLE_NS = 1_000_000  # a task runnable less than this in a window is not "the worst"
MIN_SLICE_NS = 100  # no task gets a CPU more than once per 100 ns: more slices is garbage
MAX_NAMES = 64  # process names with lifetime totals (the match list is a handful)
READ_SIZE = 128  # "u64 u64 ulong\n" is at most 62 bytes
_ALL_ZERO = b"0 0 0\n"

NO_FILE = ("this kernel has no per-task schedstat file (/proc/PID/task/TID/schedstat: "
           "CONFIG_SCHED_INFO is off), so CPU wait is not measured")
ALL_ZERO = ("this kernel reports 0 0 0 in every tracked task's schedstat (its scheduler "
            "statistics are off), so CPU wait is not measured")


class Counters(NamedTuple):
    """One task's schedstat, or a sum or a difference of them."""

    run_ns: int  # time on a CPU
    wait_ns: int  # time runnable, waiting in a run queue for a CPU
    slices: int  # times it got a CPU

    def plus(self, other: Counters) -> Counters:
        return Counters(self.run_ns + other.run_ns, self.wait_ns + other.wait_ns,
                        self.slices + other.slices)


ZERO = Counters(0, 0, 0)


def parse_schedstat(data: bytes) -> Optional[Counters]:
    """The first three numbers of a schedstat file (a later kernel may add more),
    None if they are not three decimals."""
    fields = data.split(maxsplit=3)[:3]
    if len(fields) < 3 or not all(f.isdigit() for f in fields):
        return None
    return Counters(int(fields[0]), int(fields[1]), int(fields[2]))


def interval_delta(before: Counters, after: Counters, limit_ns: float) -> Optional[Counters]:
    """after - before, or None when it cannot be one task's interval: a counter
    went backwards, or the task was runnable (or scheduled) more than `limit_ns`
    of wall time allows — one task runs or waits on one CPU at a time."""
    d = Counters(after.run_ns - before.run_ns, after.wait_ns - before.wait_ns,
                 after.slices - before.slices)
    if min(d) < 0 or d.run_ns + d.wait_ns > limit_ns or d.slices * MIN_SLICE_NS > limit_ns:
        return None
    return d


def wait_share(c: Counters) -> Optional[float]:
    """The share of runnable time spent waiting, None when it was never runnable."""
    runnable = c.run_ns + c.wait_ns
    return c.wait_ns / runnable if runnable else None


def wait_per_slice_ns(c: Counters) -> Optional[float]:
    return c.wait_ns / c.slices if c.slices else None


@dataclass(frozen=True)
class TaskWait:
    """One task's counters over a window (the worst task of its process)."""

    tid: int
    name: str
    counters: Counters


@dataclass(frozen=True)
class WindowReport:
    """One process name's tasks over the last closed window."""

    process: str
    seconds: float
    counters: Counters  # summed over every task measured in the window, exited ones too
    tasks: int  # tasks with at least one delta in the window
    worst: Optional[TaskWait]  # highest wait share among tasks runnable >= MIN_RUNNABLE_NS


class _Task:
    """The sampler's state for one tracked task."""

    __slots__ = ("in_window", "last", "name", "process", "seen", "window")

    def __init__(self, ref: TaskRef, reading: bytes, seen: int) -> None:
        self.process, self.name = ref.process, ref.name
        # The latest reading as read: an idle task's is the same bytes again, so
        # comparing them is all it costs (kept valid: parse_schedstat accepted it).
        self.last = reading
        self.window = ZERO  # deltas since the window began
        self.in_window = False  # counted among its process's tasks in this window
        self.seen = seen  # the sample that last read it


class _SchedstatMissing(Exception):
    pass


class SchedstatSampler:
    """Reads every tracked task's schedstat once per `sample()`; keeps lifetime
    totals per process name and closes a report window every `window` seconds
    (at the first sample after it; 0: every sample)."""

    def __init__(self, root: str = "/proc", clock: Callable[[], float] = time.monotonic,
                 window: float = 60.0,
                 on_unavailable: Optional[Callable[[str], None]] = None) -> None:
        self.root = root
        self._clock = clock
        self.window = window
        self._on_unavailable = on_unavailable or (lambda why: log.warning("%s", why))
        self._tasks: Dict[Tuple[int, int], _Task] = {}  # (tid, start time) -> state
        self.lifetime: Dict[str, Counters] = {}  # process name -> deltas ever counted
        self._window_sums: Dict[str, Counters] = {}
        self._window_tasks: Dict[str, int] = {}  # process name -> tasks with a delta
        self._window_start: Optional[float] = None
        self._last_sample: Optional[float] = None
        self.reports: Dict[str, WindowReport] = {}  # process name -> last closed window
        self.unavailable = ""  # why CPU wait is not measured ("" = it is, or not known yet)
        self._said: Set[str] = set()
        self.samples = self.reads = self.unreadable = self.discarded = 0

    @property
    def task_count(self) -> int:
        return len(self._tasks)

    def sample(self, tasks: Iterable[TaskRef]) -> bool:
        """Read each task once and count its delta; True if a window closed."""
        if self.unavailable == NO_FILE:
            return False  # no kernel grows the file without a reboot
        now = self._clock()
        self.samples += 1
        # Tasks are read one after another: allow the skew of a slow sample.  (The
        # first sample knows no task yet: every reading is a baseline.)
        elapsed = 0.0 if self._last_sample is None else now - self._last_sample
        limit_ns = (2 * elapsed + 1.0) * 1e9
        try:
            readings = self._read_all(tasks, limit_ns)
        except _SchedstatMissing:
            self._say(NO_FILE)
            self._tasks.clear()
            return False
        self._note_all_zero(readings)
        self._forget_unseen()
        self._last_sample = now
        if self._window_start is None:
            self._window_start = now
            return False
        if now - self._window_start < self.window:
            return False
        self._close_window(now - self._window_start)
        self._window_start = now
        return True

    # --- reading -------------------------------------------------------------------------

    def _read_all(self, tasks: Iterable[TaskRef], limit_ns: float) -> Tuple[int, int]:
        """Read and count every task; (readings, readings of 0 0 0)."""
        read = zero = 0
        for ref in tasks:
            data = self._read(ref)
            if data is None:
                continue  # gone or unreadable: its baseline goes with it
            key = (ref.tid, ref.start_time)
            task = self._tasks.get(key)
            if task is None:
                if parse_schedstat(data) is None:
                    self.unreadable += 1
                    continue
                self._tasks[key] = _Task(ref, data, self.samples)
            elif not self._count(task, ref, data, limit_ns):
                continue
            read += 1
            zero += data == _ALL_ZERO
        return read, zero

    def _count(self, task: _Task, ref: TaskRef, data: bytes, limit_ns: float) -> bool:
        """Count one more reading of a known task; False if it was unreadable."""
        task.seen, task.process, task.name = self.samples, ref.process, ref.name
        if not task.in_window:
            task.in_window = True
            self._window_tasks[ref.process] = self._window_tasks.get(ref.process, 0) + 1
            self._window_sums.setdefault(ref.process, ZERO)
        if data == task.last:
            return True  # an idle task: most of a gNB's, and the cheapest case
        before, after = parse_schedstat(task.last), parse_schedstat(data)
        if after is None or before is None:
            self.unreadable += 1
            task.seen = -1  # forget it: the next good reading is a baseline
            return False
        task.last = data
        delta = interval_delta(before, after, limit_ns)
        if delta is None:
            self.discarded += 1
            return True
        task.window = task.window.plus(delta)
        self.lifetime[ref.process] = self.lifetime.get(ref.process, ZERO).plus(delta)
        self._window_sums[ref.process] = self._window_sums.get(ref.process, ZERO).plus(delta)
        return True

    def _read(self, ref: TaskRef) -> Optional[bytes]:
        task_dir = f"{self.root}/{ref.tgid}/task/{ref.tid}"
        self.reads += 1
        try:
            fd = os.open(f"{task_dir}/schedstat", os.O_RDONLY | os.O_CLOEXEC)
            try:
                return os.read(fd, READ_SIZE)  # (a task gone since the open: ESRCH, not ENOENT)
            finally:
                os.close(fd)
        except FileNotFoundError:
            if _lists_no_schedstat(task_dir):
                raise _SchedstatMissing() from None
            return None  # the task is gone
        except OSError:
            self.unreadable += 1
            return None

    def _note_all_zero(self, readings: Tuple[int, int]) -> None:
        read, zero = readings
        if read and zero == read:
            self._say(ALL_ZERO)
        elif read and self.unavailable == ALL_ZERO:
            self.unavailable = ""
            log.info("schedstat counts again: CPU wait is measured")

    def _say(self, why: str) -> None:
        self.unavailable = why
        if why not in self._said:
            self._said.add(why)
            self._on_unavailable(why)

    # --- forgetting and windows -----------------------------------------------------------

    def _forget_unseen(self) -> None:
        """Tasks not read in this sample exited (or were dropped): forget them."""
        gone = [key for key, task in self._tasks.items() if task.seen != self.samples]
        for key in gone:
            del self._tasks[key]
        if len(self.lifetime) > MAX_NAMES:
            live = {task.process for task in self._tasks.values()}
            for name in [n for n in self.lifetime if n not in live]:
                del self.lifetime[name]

    def _close_window(self, seconds: float) -> None:
        worst: Dict[str, TaskWait] = {}
        for (tid, _), task in self._tasks.items():
            if _worse(task.window, worst.get(task.process)):
                worst[task.process] = TaskWait(tid, task.name, task.window)
            task.window, task.in_window = ZERO, False
        self.reports = {
            name: WindowReport(name, seconds, sums, self._window_tasks.get(name, 0),
                               worst.get(name))
            for name, sums in sorted(self._window_sums.items())}
        self._window_sums, self._window_tasks = {}, {}


def _worse(c: Counters, than: Optional[TaskWait]) -> bool:
    """Did a task with `c` wait more than `than` (a higher share, then more time)?
    Tasks runnable less than MIN_RUNNABLE_NS never rank: one unlucky wake-up of
    an idle thread is not the gNB's worst."""
    share = wait_share(c)
    if share is None or c.run_ns + c.wait_ns < MIN_RUNNABLE_NS:
        return False
    if than is None:
        return True
    return (share, c.wait_ns) > (wait_share(than.counters) or 0.0, than.counters.wait_ns)


def _lists_no_schedstat(task_dir: str) -> bool:
    """The task is there but its directory has no schedstat: the kernel has none
    (a task that exited has no listable directory at all)."""
    try:
        return "schedstat" not in os.listdir(task_dir)
    except OSError:
        return False
