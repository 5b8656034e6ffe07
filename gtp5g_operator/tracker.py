"""Which live tasks belong to a matching process: the decision core.

Fed with the distinct task IDs of each chunk (bytes of ASCII digits), it goes
to /proc only for IDs it has no verdict for, so a steady stream of lines from
known tasks costs one C-level set difference per chunk.  Identity is the pair
(ID, start time): a reused PID has another start time, so it never inherits a
verdict — `prune()` re-reads start times before every push and every liveness
interval, and negative verdicts are forgotten at each liveness interval so a
reused ID gets looked at again.  Caches are bounded: a full cache is simply
emptied (its entries are only a shortcut), so a flood of distinct IDs costs
/proc look-ups but never memory.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Set, Tuple

from .config import MatchConfig
from .procfs import ProcessInfo, ProcFS

log = logging.getLogger(__name__)

MAX_NEGATIVE = 8192  # non-matching task IDs remembered between liveness passes
MAX_PROCESS_VERDICTS = 1024  # (tgid, start time) -> matches?


def process_matches(proc: ProcessInfo, match: MatchConfig) -> bool:
    """Exact name match on the process (leader) name, then the allow-lists."""
    return (
        proc.comm in match.comm
        and (not match.exe or proc.exe in match.exe)
        and (not match.uid or proc.uid in match.uid)
    )


@dataclass
class TrackedProcess:
    info: ProcessInfo
    since: float  # wall-clock time it was first seen
    tasks: Dict[int, int] = field(default_factory=dict)  # tid -> start time


class TaskTracker:
    def __init__(
        self,
        procfs: ProcFS,
        match: MatchConfig,
        wall_clock: Callable[[], float] = time.time,
        max_negative: int = MAX_NEGATIVE,
    ) -> None:
        self.procfs = procfs
        self.match = match
        self._wall = wall_clock
        self._max_negative = max_negative
        self.processes: Dict[int, TrackedProcess] = {}
        self._targets: Dict[bytes, int] = {}  # tracked tid -> tgid
        self._negative: Set[bytes] = set()  # IDs that are not targets (or gone)
        self._verdicts: Dict[Tuple[int, int], bool] = {}
        self.lookups = 0  # /proc resolutions done (tests check the hot path does none)
        self._added: List[int] = []  # tasks added since the last take_added()

    # --- hot path -------------------------------------------------------

    def observe(self, tids: Set[bytes]) -> bool:
        """Account for the task IDs of one chunk; True if the target set changed."""
        # set.difference(dict) and set - set both cost O(len(tids)): the chunk's
        # few distinct IDs, however large the caches are.
        new = tids.difference(self._targets)
        if new:
            new = new - self._negative
        if not new:
            return False
        changed = False
        for tid in new:
            changed |= self._decide(tid)
        return changed

    # --- decisions ------------------------------------------------------

    def _decide(self, tid_b: bytes) -> bool:
        self.lookups += 1
        tid = int(tid_b)
        task = self.procfs.task(tid) if tid > 0 else None
        if task is None:
            self._remember_negative(tid_b)
            return False
        changed = False
        proc = self.processes.get(task.tgid)
        leader = self.procfs.stat(task.tgid, task.tgid)
        if proc is not None and (leader is None or leader.start_time != proc.info.start_time):
            changed |= self._drop_process(task.tgid, "exited (ID reused)")
            proc = None
        if proc is None:
            if leader is None or not self._verdict(task.tgid, leader.start_time):
                self._remember_negative(tid_b)
                return changed
            proc = self.processes.get(task.tgid)
            if proc is None:
                return changed  # the leader went away between reads
        proc.tasks[tid] = task.start_time
        self._targets[tid_b] = task.tgid
        self._added.append(tid)
        log.info("task %d added (process %d %s)", tid, task.tgid, proc.info.comm)
        return True

    def _verdict(self, tgid: int, start_time: int) -> bool:
        key = (tgid, start_time)
        verdict = self._verdicts.get(key)
        if verdict is None:
            info = self.procfs.process(tgid)
            verdict = info is not None and info.start_time == start_time and process_matches(
                info, self.match)
            if verdict and info is not None:
                self.processes[tgid] = TrackedProcess(info=info, since=self._wall())
                log.info("process %d (%s, exe %s, uid %d) matches: tracking it",
                         tgid, info.comm, info.exe or "?", info.uid)
            if len(self._verdicts) >= MAX_PROCESS_VERDICTS:
                self._verdicts.clear()
            self._verdicts[key] = verdict
        elif verdict and tgid not in self.processes:
            info = self.procfs.process(tgid)  # re-tracked after all its tasks were pruned
            if info is None or info.start_time != start_time:
                return False
            self.processes[tgid] = TrackedProcess(info=info, since=self._wall())
        return verdict

    def _remember_negative(self, tid_b: bytes) -> None:
        if len(self._negative) >= self._max_negative:
            self._negative.clear()  # a flood: start over rather than grow
        self._negative.add(tid_b)

    # --- liveness -------------------------------------------------------

    def prune(self) -> bool:
        """Drop tasks that exited or whose ID was reused; True if anything went."""
        changed = False
        for tgid in list(self.processes):
            proc = self.processes[tgid]
            for tid, start in list(proc.tasks.items()):
                st = self.procfs.stat(tid, tgid)
                if st is None or st.start_time != start or not st.alive:
                    del proc.tasks[tid]
                    self._forget_target(tid)
                    log.info("task %d of process %d removed (exited)", tid, tgid)
                    changed = True
            leader = self.procfs.stat(tgid, tgid)
            leader_ok = (leader is not None and leader.start_time == proc.info.start_time
                         and leader.alive)
            if not leader_ok and not proc.tasks:
                changed |= self._drop_process(tgid, "exited")
        return changed

    def forget_negatives(self) -> None:
        """Let IDs without a verdict be looked at again (a PID may have been reused)."""
        self._negative.clear()

    def _forget_target(self, tid: int) -> None:
        self._targets.pop(str(tid).encode(), None)

    def _drop_process(self, tgid: int, why: str) -> bool:
        proc = self.processes.pop(tgid, None)
        if proc is None:
            return False
        for tid in proc.tasks:
            self._forget_target(tid)
        log.info("process %d (%s) removed: %s", tgid, proc.info.comm, why)
        return True

    def set_match(self, match: MatchConfig) -> bool:
        """Apply new match rules: re-judge tracked processes, forget all verdicts."""
        self.match = match
        self._verdicts.clear()
        self.forget_negatives()
        changed = False
        for tgid, proc in list(self.processes.items()):
            if not process_matches(proc.info, match):
                changed |= self._drop_process(tgid, "no longer matches the configuration")
        return changed

    # --- views ----------------------------------------------------------

    def take_added(self) -> List[int]:
        added, self._added = self._added, []
        return added

    def snapshot(self) -> List[Tuple[int, List[int]]]:
        """[(tgid, sorted tids)] sorted by tgid: the input of the strategy builder."""
        return [(tgid, sorted(p.tasks)) for tgid, p in sorted(self.processes.items())]

    @property
    def task_count(self) -> int:
        return len(self._targets)

    def cache_sizes(self) -> Tuple[int, int]:
        """(negative IDs, process verdicts) held now."""
        return len(self._negative), len(self._verdicts)

