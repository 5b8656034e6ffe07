"""What the scheduler will boost, compared with what this host tracks (issue 19).

A write that the server answers with 200 says nothing about what the
scheduler then does with it: a Decision Maker (DM) of Gthulhu v1.3.0 resolves
our rule against thread-group leaders only, a rule that matches by name also
boosts other users' processes of that name, and without Gthulhu's sched_ext
scheduler nothing reads the strategies at all.  After each write and at every
resync the caller GETs what the scheduler reads (one request) and hands the
entries here; this module validates them and compares them with the tracked
set.  What the differences mean, and how they are said and shown, is
core.boost_verdict.

The unit of comparison is the *task ID* (a listed PID boosts the task with
that ID, as the scheduler looks tasks up by their own ID):

* tracked (M): the task IDs of the tracked processes seen active in the
  trace (`ProcessView.tids`); for v0, the IDs this host wrote (its TGIDs
  and/or TIDs, `strategy.targets`).
* listed: the entries under our rule (the DM's `command_regex` equals the
  regex of this host's rule); for v0 every entry (explicit PIDs).
* covered: tracked and listed.  missing: tracked, not listed.
* foreign (rule flavors only): listed under our rule, and neither a tracked
  task nor a task of a tracked process.  With v0, entries that are not ours
  belong to other writers and are only counted (`others`).
* unseen: listed under our rule, not tracked, but a task of a tracked
  process — the gNB's main thread that never appeared in the trace while its
  workers did (a leaders-only DM lists exactly that TGID), or a thread a
  thread-aware DM lists by TID before the trace has shown it.  Ours, so not
  foreign; not counted in M either.
* gone: listed, but exited before it could be looked at.  unchecked: listed
  beyond the look-up budget (`MAX_LOOKUPS`): neither verified nor reported.

Tracked and listed IDs cost one set operation each.  The listed IDs that are
not tracked cost one listing of each tracked process's threads (once per
comparison: is it one of them?) and, if not, a look-up of who it is (its
process, that process's name, uid and executable), at most `MAX_LOOKUPS` per
comparison.  /proc is
the injected core.procfs.ProcFS.  Nothing is done per trace
line: the caller compares once per write and per resync.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Sequence, Set, Tuple

from .procfs import ProcFS
from .tracker import ProcessView

MAX_LOOKUPS = 256  # who-is-it look-ups of listed IDs of no tracked process (~0.2 ms each)


@dataclass(frozen=True)
class ListedEntry:
    """One entry the scheduler reads (decoded by gthulhu.answers.listed_strategies)."""

    pid: int
    command_regex: Optional[str]  # the rule it came from (DM); None for v0's explicit PIDs


# --- the facts of listed tasks we do not track -------------------------------------------


@dataclass(frozen=True)
class TaskFacts:
    """A listed task this host does not vouch for, as a person needs to see it."""

    pid: int  # the listed ID: a TGID, or a TID from a thread-aware DM
    tgid: int
    start_time: int  # its process's: with tgid, the process's identity (one finding each)
    comm: str  # the task's own name (what a thread-aware DM matched)
    process: str  # its process's name
    uid: int
    exe: str  # "" when unreadable

    def describe(self) -> str:
        who = (f"PID {self.pid} ({self.comm!r})" if self.pid == self.tgid else
               f"thread {self.pid} ({self.comm!r}) of process {self.tgid} ({self.process!r})")
        return f"{who}, uid {self.uid}, exe {self.exe or '(unreadable)'!r}"

    def as_dict(self) -> Dict[str, Any]:
        return {"pid": self.pid, "tgid": self.tgid, "comm": self.comm,
                "process": self.process, "uid": self.uid, "exe": self.exe}


# --- the comparison ------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    kind: str  # "rule" (Decision Maker, Manager) or "ids" (v0)
    tracked: int  # M
    listed: int  # distinct IDs under our rule (v0: all)
    covered: Tuple[int, ...]
    missing: Tuple[int, ...]
    foreign: Tuple[TaskFacts, ...] = ()
    unseen: Tuple[int, ...] = ()
    others: int = 0  # under other rules, or other writers' (v0)
    gone: int = 0
    unchecked: int = 0
    leaders_only: bool = False  # the missing are exactly the non-leaders, the leaders listed

    @property
    def nothing_listed(self) -> bool:
        return self.tracked > 0 and self.listed == 0

    @property
    def clean(self) -> bool:
        """What doctor passes on: nothing missing, nothing foreign."""
        return not self.missing and not self.foreign


def compare_ids(listed: Sequence[ListedEntry], written: Iterable[int]) -> Comparison:
    """v0: the server holds explicit IDs; ours are those this host wrote."""
    ours = frozenset(written)
    ids = {e.pid for e in listed}
    return Comparison("ids", tracked=len(ours), listed=len(ids & ours),
                      covered=tuple(sorted(ours & ids)), missing=tuple(sorted(ours - ids)),
                      others=len(ids - ours))


def compare_rule(listed: Sequence[ListedEntry], rule_regex: Optional[str],
                 tracked: Sequence[ProcessView], reader: ProcFS,
                 max_lookups: int = MAX_LOOKUPS) -> Comparison:
    """A rule flavor: the entries under `rule_regex` (None: this host holds no rule)
    against the tracked processes; listed IDs we do not track are looked up."""
    tasks = frozenset(t for v in tracked for t in v.tids)
    leaders = frozenset(v.tgid for v in tracked)
    ours = {e.pid for e in listed if rule_regex and e.command_regex == rule_regex}
    others = len({e.pid for e in listed} - ours)
    rest = _Untracked(reader, leaders, max_lookups)
    for pid in sorted(ours - tasks):
        rest.add(pid)
    covered, missing = tasks & ours, tasks - ours
    # A listed non-leader proves a thread-aware scan; without one, the signature of a
    # leaders-only scan is: every leader listed, every other tracked task not.
    leaders_only = (bool(missing) and missing == tasks - leaders and leaders <= ours
                    and not rest.threads_listed)
    return Comparison(
        "rule", tracked=len(tasks), listed=len(ours), covered=tuple(sorted(covered)),
        missing=tuple(sorted(missing)), foreign=tuple(rest.foreign), unseen=tuple(rest.unseen),
        others=others, gone=rest.gone, unchecked=rest.unchecked, leaders_only=leaders_only)


class _Untracked:
    """Sorts listed, untracked IDs into unseen (ours), foreign, gone and unchecked."""

    def __init__(self, reader: ProcFS, leaders: FrozenSet[int], budget: int) -> None:
        self.reader, self.leaders, self.budget = reader, leaders, budget
        self.unseen: List[int] = []
        self.foreign: List[TaskFacts] = []
        self.gone = self.unchecked = 0
        self.threads_listed = False  # a listed ID is known to be a non-leader thread
        self._threads: Optional[Set[int]] = None  # the tracked processes' tasks, when asked

    def add(self, pid: int) -> None:
        if pid in self.leaders:  # the main thread of a tracked process, not seen in the trace
            self.unseen.append(pid)
            return
        if self._thread_of_tracked(pid):
            self.threads_listed = True
            self.unseen.append(pid)
            return
        if self.budget <= 0:
            self.unchecked += 1
            return
        self.budget -= 1
        task = self.reader.task(pid)
        if task is None:
            self.gone += 1
            return
        self.threads_listed |= task.tgid != pid
        if task.tgid in self.leaders:  # a thread of a tracked process
            self.unseen.append(pid)
            return
        proc = self.reader.process(task.tgid)
        if proc is None:
            self.gone += 1
            return
        name = proc.comm if pid == task.tgid else self.reader.thread_name(task.tgid, pid)
        self.foreign.append(TaskFacts(pid, task.tgid, proc.start_time,
                                      name if name is not None else proc.comm, proc.comm,
                                      proc.uid, proc.exe))

    def _thread_of_tracked(self, pid: int) -> bool:
        """Is PID a thread of a tracked process?  Outside the budget, so that the many
        threads a thread-aware DM lists in a big gNB leave it to the foreign ones.  The
        tracked processes' threads are listed once per comparison: a read per listed ID
        and tracked process let a user's 12,000 threads named like the gNB's cost the
        loop 0.37 s at every read-back."""
        if self._threads is None:
            self._threads = {t for leader in self.leaders for t in self.reader.task_ids(leader)}
        return pid in self._threads
