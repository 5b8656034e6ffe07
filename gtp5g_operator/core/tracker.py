"""Which live tasks belong to a matching process: the decision core.

Fed with the distinct task IDs of each trace turn, it goes to /proc only for
IDs it has no verdict for, so a steady stream from known tasks costs one
C-level set difference per turn (and one pread of the kernel's last
allocated PID every AGE_EVERY).

Identity is the pair (ID, start time): a reused PID has another start time,
so it never inherits a verdict — `prune()` re-reads start times before every
push and at every liveness pass, and every AGE_EVERY for the tracked IDs the
kernel's last allocated PID has passed since it was last read (one may have
been handed out again); a 'not a target' verdict for such an ID is dropped.  A
process keeps its PID and start time across exec() and prctl(PR_SET_NAME),
so what it *is* — name, executable, uid — is judged again at every liveness
pass, both ways (`rejudge()` drops a tracked process that no longer
matches; `forget_verdicts()` lets a rejected one be looked at again, e.g. a
wrapper that has exec'd nr-gnb).
Caches are bounded: the negative verdicts are a small set, then, on a host
whose trace names more tasks in a pass, one bit per possible task ID (512 KiB,
whatever the trace holds), and a full verdict cache is simply emptied (its
entries are only a shortcut), so a flood of distinct IDs never costs memory.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, Iterator, List, NamedTuple, Optional, Set, Tuple

from ..config.schema import MatchConfig
from .once import StateLog
from .procfs import ProcessInfo, ProcFS

log = logging.getLogger(__name__)

# PID_MAX_LIMIT of 64-bit Linux: pid_max cannot be set higher, so no task ID reaches it.
# The IDs that are not targets are one bit each below it (512 KiB): a set capped at
# 8,192 IDs was emptied when full, so on a big host whose trace names more distinct
# tasks than that between two liveness passes most of their lines were /proc look-ups
# again (~30 us of CPU each; 12,006 tasks in 5 turns each: 40,177 look-ups, 1.2 s).
PID_LIMIT = 1 << 22
# ... but only past the first MAX_NEGATIVE of a pass, which a set holds (64 KiB when
# full): the set's difference is one C call per turn, where testing bits is Python per
# ID (3.0 us instead of 1.0 for a turn of 30 known non-targets), and a bit set made for
# every daemon, at every pass, kept ~1 MiB more RSS on every host (36.4 -> 37.4 MB).
MAX_NEGATIVE = 1024
# Processes found not to match, between two liveness passes.  A big host has thousands
# (a trace blames whoever a softirq interrupted): with room for 1,024, 3,000 processes
# of 5 threads cost 12,810 process reads (~5 /proc files each) a pass instead of 3,000.
# One int each (start time and tgid), ~64 bytes: 0.5 MiB when full.
MAX_PROCESS_VERDICTS = 8192
# How often a turn reads the kernel's last allocated PID (_age): at most once in this
# many seconds.  Read at every turn, its pread cost a FIFO line 7 % more CPU (turns of a
# few dozen lines); within the 20 ms the exit watch coalesces pushes in, a stranger on a
# dead gNB thread's ID is dropped no later than before.
AGE_EVERY = 0.01


def allocated_since(before: int, now: int) -> Tuple[range, ...]:
    """The task IDs the kernel may have handed out since its last allocated PID was
    `before`, now that it is `now`: it allocates upwards from there, wrapping to the
    low IDs past pid_max (a full turn of the ID space between two readings is not
    seen here; the liveness pass still forgets every verdict)."""
    if now == before:
        return ()
    if now > before:
        return (range(before + 1, now + 1),)
    return (range(before + 1, PID_LIMIT), range(1, now + 1))


def clear_bits(bits: bytearray, ids: range) -> int:
    """Clear the bits of `ids` (step 1, within PID_LIMIT); how many were set."""
    lo, hi, cleared = ids.start, ids.stop, 0
    while lo < hi and (lo & 7 or hi - lo < 8):
        cleared += bits[lo >> 3] >> (lo & 7) & 1
        bits[lo >> 3] &= ~(1 << (lo & 7)) & 0xFF
        lo += 1
    while hi > lo and hi & 7:
        hi -= 1
        cleared += bits[hi >> 3] >> (hi & 7) & 1
        bits[hi >> 3] &= ~(1 << (hi & 7)) & 0xFF
    whole = slice(lo >> 3, hi >> 3)
    cleared += int.from_bytes(bits[whole], "little").bit_count()
    bits[whole] = bytes(whole.stop - whole.start)
    return cleared


def exe_allowed(exe: str, match: MatchConfig) -> bool:
    """Is `exe` (a /proc/PID/exe) one of match.exe?  The kernel names the file itself,
    never a symlink to it, so an entry that is one (/usr/local/bin/nr-gnb pointing into
    a build tree, as `make install` and admins leave it) counts as where it leads now:
    compared as written only, such a gNB was never boosted, said only at DEBUG."""
    return not match.exe or exe in match.exe or (
        bool(exe) and exe in {os.path.realpath(path) for path in match.exe})


def mismatch(proc: ProcessInfo, match: MatchConfig) -> str:
    """Why the process does not match ("" when it does): exact name, then allow-lists."""
    if proc.comm not in match.comm:
        return f"its name is {proc.comm!r}, not one of match.comm"
    if not exe_allowed(proc.exe, match):
        return f"its executable {proc.exe or '(unreadable)'} is not in match.exe"
    if match.uid and proc.uid not in match.uid:
        return f"its uid {proc.uid} is not in match.uid"
    return ""


@dataclass
class TrackedTask:
    start_time: int
    name: str  # the thread's own name (/proc/TGID/task/TID/comm)


@dataclass
class TrackedProcess:
    info: ProcessInfo
    since: float  # monotonic time it was first seen (the publisher shows it as wall-clock)
    tasks: Dict[int, TrackedTask] = field(default_factory=dict)


@dataclass(frozen=True)
class ProcessView:
    """One tracked process as the writers and the reports see it."""

    tgid: int
    comm: str
    exe: str
    uid: int
    since: float
    tids: Tuple[int, ...]
    thread_names: FrozenSet[str]


class TaskRef(NamedTuple):
    """One tracked task with its identity (ID, start time), for per-task readers
    (the CPU-wait sampler) that must not carry a measure across a reused ID."""

    tgid: int
    tid: int
    start_time: int
    process: str  # the process's name (the leader's comm)
    name: str  # the thread's own name


class TaskTracker:
    def __init__(self, procfs: ProcFS, match: MatchConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.procfs = procfs
        self.match = match
        self._clock = clock
        self.processes: Dict[int, TrackedProcess] = {}
        self.generation = 0  # bumped when a process is tracked or dropped (the exit watch)
        self._targets: Dict[int, int] = {}  # tracked tid -> tgid
        self._negative: Set[int] = set()  # IDs that are not targets (or gone) ...
        self._more_negative: Optional[bytearray] = None  # ... and past MAX_NEGATIVE: bits
        self._negatives = 0  # IDs held in either
        self._last_pid: Optional[int] = None  # the kernel's, when the caches were last aged
        self._age_at = -math.inf  # when to read it next (AGE_EVERY)
        self._rejected: Set[int] = set()  # processes that do not match: start_time << 22 | tgid
        self.lookups = 0  # /proc resolutions done (tests check the hot path does none)
        self._added: List[int] = []  # tasks added since the last take_added()
        # gNB-named processes we do not track (an unreadable executable, or excluded by
        # match.uid or match.exe): one episode until a process is tracked.  Said per
        # process, a gNB restarting every few seconds put an ERROR a restart into
        # `journalctl -p err` for one missing capability.
        self._named_untracked = StateLog(log)
        self._unreadable_stat = StateLog(log)  # tracked tasks /proc lists but we cannot read

    def _exe_unreadable(self, tgid: int, comm: str) -> None:
        """A process with the gNB's name whose executable this service may not read:
        match.exe cannot be checked, so it is never tracked.  That needs a person (a
        missing permission), once per episode, not once per process or liveness pass."""
        if not self._named_untracked.problem(
                "exe", logging.ERROR, "process %d (%s) is named like the gNB, but this service "
                "may not read its executable (/proc/%d/exe), so match.exe cannot be checked "
                "and it is not tracked: the service needs CAP_SYS_PTRACE to read another "
                "user's executable (see gtp5g-operator doctor, exe access); said once until "
                "a process is tracked", tgid, comm, tgid):
            log.debug("process %d (%s) not tracked: its executable cannot be read", tgid, comm)

    def _excluded(self, info: ProcessInfo, why: str) -> None:
        """A process with the gNB's name that match.uid or match.exe excludes: an
        impostor, or the gNB itself after it moved (a new uid or path).  Said at DEBUG
        alone, the on-call person saw a healthy service tracking nothing, and no reason
        in `journalctl -p warning`.  Once per episode (_exe_unreadable's):
        anyone may name a process so, and the next process tracked ends it."""
        if not self._named_untracked.problem(
                "excluded", logging.WARNING, "process %d (%s, exe %s, uid %d) is named like "
                "the gNB but not tracked: %s (if it is the gNB, correct match.uid or "
                "match.exe; said once until a process is tracked)",
                info.tgid, info.comm, info.exe or "(unreadable)", info.uid, why):
            log.debug("process %d not tracked: %s", info.tgid, why)

    # --- hot path -------------------------------------------------------

    def observe(self, tids: Set[int]) -> bool:
        """Account for the task IDs of one turn; True if the target set changed."""
        # set.difference(dict) costs O(len(tids)), the bit tests O(what is left): the
        # turn's few distinct IDs, however large the caches are.
        now = self._clock()
        changed = False
        if now >= self._age_at:
            self._age_at = now + AGE_EVERY
            changed = self._age()
        new = tids.difference(self._targets)
        if new:
            new = new - self._negative  # (not -=, which walks the whole right side)
            more = self._more_negative
            if new and more is not None:
                new = {t for t in new if not 0 < t < PID_LIMIT or not more[t >> 3] >> (t & 7) & 1}
        for tid in new:
            changed |= self._decide(tid)
        return changed

    # --- decisions ------------------------------------------------------

    def _decide(self, tid: int) -> bool:
        if not 0 < tid < PID_LIMIT:
            return False  # no task's ID (a made-up line of a FIFO): no look-up, no memory
        self.lookups += 1
        # A look-up that failed for want of our own fds or memory is no verdict: the
        # ID stays unjudged and is looked up again at its next line (a failed open()
        # per turn while starved), not taken for 'not a target' until the liveness pass.
        starved = self.procfs.starved
        task = self.procfs.task(tid)
        if task is None:
            self._remember_negative(tid, starved)
            return False
        changed = False
        proc = self.processes.get(task.tgid)
        leader = self.procfs.stat(task.tgid, task.tgid)
        if leader is None and self.procfs.starved != starved:
            return False  # not proof that the tracked process exited (nor that it matches)
        if proc is not None and (leader is None or leader.start_time != proc.info.start_time):
            changed |= self._drop_process(task.tgid, "exited (ID reused)")
            proc = None
        if proc is None:
            if leader is None or not self._verdict(task.tgid, leader.start_time):
                self._remember_negative(tid, starved)
                return changed
            proc = self.processes[task.tgid]
        name = self.procfs.thread_name(task.tgid, tid) or proc.info.comm
        proc.tasks[tid] = TrackedTask(task.start_time, name)
        self._targets[tid] = task.tgid
        self._added.append(tid)
        # Per task at DEBUG: the process's lines say it at INFO.  A gNB of 1,000 threads
        # logged 2,000 lines a restart, and a few restarts in 30 s passed journald's
        # RateLimitBurst (10,000): the lines dropped then were the ones that mattered.
        log.debug("task %d (%s) added (process %d %s)", tid, name, task.tgid, proc.info.comm)
        return True

    def _verdict(self, tgid: int, start_time: int) -> bool:
        """Does process (tgid, start time) match?  Tracks it when it does."""
        key = start_time << 22 | tgid  # tgid < PID_LIMIT (2 ** 22)
        if key in self._rejected:
            return False
        tracked = self.processes.get(tgid)
        if tracked is not None and tracked.info.start_time == start_time:
            return True
        starved = self.procfs.starved
        info = self.procfs.process(tgid)
        if info is None or info.start_time != start_time:
            return False
        why = mismatch(info, self.match)
        if why:
            if self.procfs.starved == starved:  # else an unread exe: no verdict
                if len(self._rejected) >= MAX_PROCESS_VERDICTS:
                    self._rejected.clear()
                self._rejected.add(key)
                if not info.exe and self.match.exe and info.comm in self.match.comm:
                    self._exe_unreadable(tgid, info.comm)
                elif info.comm in self.match.comm:
                    self._excluded(info, why)
                else:
                    log.debug("process %d not tracked: %s", tgid, why)
            return False
        if tgid not in self.processes:
            self.processes[tgid] = TrackedProcess(info=info, since=self._clock())
            self.generation += 1
            self._named_untracked.recovered()
            log.info("process %d (%s, exe %s, uid %d) matches: tracking it",
                     tgid, info.comm, info.exe or "?", info.uid)
        return True

    def _remember_negative(self, tid: int, starved: int) -> None:
        if self.procfs.starved != starved:
            return  # a read failed for want of fds or memory: not a verdict
        if len(self._negative) < MAX_NEGATIVE:
            self._negative.add(tid)  # (not in it: observe() left it out otherwise)
            self._negatives += 1
            return
        if self._more_negative is None:
            self._more_negative = bytearray(PID_LIMIT // 8)
        more = self._more_negative
        if not more[tid >> 3] >> (tid & 7) & 1:
            more[tid >> 3] |= 1 << (tid & 7)
            self._negatives += 1

    def _age(self) -> bool:
        """Account for the IDs the kernel handed out since the last turn: they were
        free, or skipped as in use.  A tracked task among them is checked, and dropped
        if it exited — now, not at the next push or liveness pass (5 s by default): on
        a v0 server whoever got its ID was boosted until then.  A 'not a target'
        verdict for one may be about a task that is gone — forgotten now: a gNB (or
        its new thread) that got the ID was left out until the next liveness pass.
        True if the target set changed."""
        before, now = self._last_pid, self.procfs.last_pid()
        if now is not None and not 0 <= now < PID_LIMIT:
            now = None  # no kernel's (a fake /proc): no ID to bound
        self._last_pid = now
        if now == before or not (self._negatives or self._targets):
            return False
        if now is None or before is None:  # cannot tell what was handed out meanwhile
            self.forget_verdicts()
            return False
        changed = False
        for ids in allocated_since(before, now):
            targets, neg = self._targets, self._negative
            # (the range holds the live IDs the kernel skipped too: each is checked)
            for tid in ([t for t in ids if t in targets] if len(ids) < len(targets)
                        else [t for t in targets if t in ids]):
                changed |= bool(self._drop_if_exited(self.processes[targets[tid]], tid))
            gone = neg.intersection(ids) if len(ids) < len(neg) else {t for t in neg if t in ids}
            neg -= gone
            self._negatives -= len(gone)
            if self._more_negative is not None:
                self._negatives -= clear_bits(self._more_negative, ids)
        return changed

    # --- liveness -------------------------------------------------------

    def prune(self) -> bool:
        """Drop tasks that exited or whose ID was reused; True if anything went."""
        changed = False
        unreadable = 0
        for tgid, proc in list(self.processes.items()):
            for tid in list(proc.tasks):
                gone = self._drop_if_exited(proc, tid)
                unreadable += gone is None  # our failure (no fd left), not the task's exit
                changed |= bool(gone)
            leader = self.procfs.stat(tgid, tgid)
            leader_ok = (leader is not None and leader.start_time == proc.info.start_time
                         and leader.alive)
            if not leader_ok and not proc.tasks:
                changed |= self._drop_process(tgid, "exited")
        self._say_unreadable(unreadable)
        return changed

    def _drop_if_exited(self, proc: TrackedProcess, tid: int) -> Optional[bool]:
        """Drop the task if it exited or its ID was reused: True if dropped, None if
        its stat cannot be read while /proc still lists it (kept)."""
        tgid = proc.info.tgid
        st = self.procfs.stat(tid, tgid)
        if st is None and self.procfs.present(tid, tgid):
            return None
        if st is not None and st.start_time == proc.tasks[tid].start_time and st.alive:
            return False
        del proc.tasks[tid]
        self._targets.pop(tid, None)
        log.debug("task %d of process %d removed (exited)", tid, tgid)
        return True

    def _say_unreadable(self, count: int) -> None:
        """Taking an unreadable task for an exited one would un-boost a live gNB (and
        push the empty set): keep it, and say so once per episode."""
        if not count:
            self._unreadable_stat.recovered("the tracked tasks' /proc files can be read again")
            return
        self._unreadable_stat.problem(
            "unreadable", logging.WARNING, "cannot read the /proc stat of %d tracked task(s) "
            "that /proc still lists (is this service out of file descriptors or memory?): "
            "kept as tracked, not taken for exited, until they can be read", count)

    def rejudge(self, names: bool = True) -> bool:
        """Judge every tracked process again (it may have exec'd or been renamed)
        and, with `names`, re-read its threads' names (one /proc read per task:
        only the flavors that send names need them); True if the set changed."""
        changed = False
        for tgid, proc in list(self.processes.items()):
            info = self.procfs.process(tgid)
            if info is None or info.start_time != proc.info.start_time:
                continue  # gone or reused: prune() deals with it
            why = mismatch(info, self.match)
            if why:
                changed |= self._drop_process(tgid, f"no longer matches: {why}")
                continue
            if info != proc.info:
                log.info("process %d still matches after a change (now %s, exe %s, uid %d)",
                         tgid, info.comm, info.exe or "?", info.uid)
                proc.info = info
            if names:
                changed |= self._refresh_names(proc)
        return changed

    def _refresh_names(self, proc: TrackedProcess) -> bool:
        changed = False
        for tid, task in proc.tasks.items():
            name = self.procfs.thread_name(proc.info.tgid, tid)
            if name is not None and name != task.name:
                task.name, changed = name, True
        return changed

    def forget_verdicts(self) -> None:
        """Let IDs and processes without a positive verdict be looked at again: a
        PID may have been reused, a process may have exec'd or renamed itself."""
        self._negative.clear()
        self._more_negative = None
        self._negatives = 0
        self._rejected.clear()

    def _drop_process(self, tgid: int, why: str) -> bool:
        proc = self.processes.pop(tgid, None)
        if proc is None:
            return False
        self.generation += 1
        for tid in proc.tasks:
            self._targets.pop(tid, None)
        log.info("process %d (%s) removed: %s", tgid, proc.info.comm, why)
        return True

    def set_match(self, match: MatchConfig) -> bool:
        """Apply new match rules: re-judge tracked processes, forget all verdicts."""
        self.match = match
        self.forget_verdicts()
        changed = False
        for tgid, proc in list(self.processes.items()):
            why = mismatch(proc.info, match)
            if why:
                changed |= self._drop_process(tgid, f"no longer matches the configuration: "
                                                    f"{why}")
        return changed

    # --- views ----------------------------------------------------------

    def take_added(self) -> List[int]:
        added, self._added = self._added, []
        return added

    def snapshot(self) -> List[ProcessView]:
        """The tracked processes sorted by tgid: the input of every writer."""
        return [ProcessView(tgid, p.info.comm, p.info.exe, p.info.uid, p.since,
                            tuple(sorted(p.tasks)),
                            frozenset(t.name for t in p.tasks.values()))
                for tgid, p in sorted(self.processes.items())]

    def tracked_tasks(self) -> Iterator[TaskRef]:
        """Every tracked task, in no set order (a generator: no copy of 10,000
        tasks when the caller only walks them)."""
        for tgid, p in self.processes.items():
            for tid, task in p.tasks.items():
                yield TaskRef(tgid, tid, task.start_time, p.info.comm, task.name)

    @property
    def task_count(self) -> int:
        return len(self._targets)

    def cache_sizes(self) -> Tuple[int, int]:
        """(negative IDs, process verdicts) held now."""
        return self._negatives, len(self._rejected)
