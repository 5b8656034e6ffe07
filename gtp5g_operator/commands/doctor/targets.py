"""4. Targets on this host now: every process named in match.comm, and whether the
service would boost it — judged by the daemon's own rule (core.tracker.mismatch).
Each target carries all its threads (the daemon's `TaskRef`s, names from /proc):
what the read-back compares and what the CPU wait samples."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import List, Sequence, Tuple

from ...config.schema import MatchConfig
from ...core.procfs import ProcessInfo, ProcFS
from ...core.tracker import ProcessView, TaskRef, exe_allowed, mismatch
from ...core.words import plural
from .model import Check, ok, warn

MAX_LISTED = 20  # processes listed one per line; more are only counted


@dataclass(frozen=True)
class Target:
    info: ProcessInfo
    tasks: Tuple[TaskRef, ...]  # the process's threads now
    why_not: str  # "" when it would be boosted

    @property
    def boosted(self) -> bool:
        return not self.why_not

    @property
    def tids(self) -> Tuple[int, ...]:
        return tuple(t.tid for t in self.tasks)

    def view(self) -> ProcessView:
        """The process as the writers see a tracked one, with every thread."""
        i = self.info
        return ProcessView(i.tgid, i.comm, i.exe, i.uid, 0.0, self.tids,
                           frozenset(t.name for t in self.tasks))


def _tasks(procfs: ProcFS, info: ProcessInfo) -> Tuple[TaskRef, ...]:
    tasks = []
    for tid in procfs.task_ids(info.tgid):
        st, name = procfs.stat(tid, info.tgid), procfs.thread_name(info.tgid, tid)
        # as the service prunes: a task that ended, or is a zombie (a leader that called
        # pthread_exit(), a process not yet reaped), is not boosted
        if st is not None and st.alive and name is not None:
            tasks.append(TaskRef(info.tgid, tid, st.start_time, info.comm, name))
    return tuple(tasks)


def find_targets(proc: str, match: MatchConfig) -> List[Target]:
    """Processes whose name is in match.comm, with the daemon's verdict on each."""
    try:
        pids = sorted((n for n in os.listdir(proc) if n.isdigit()), key=int)
    except OSError:
        return []
    procfs = ProcFS(proc)
    found = []
    for pid in pids:
        if procfs.thread_name(int(pid), int(pid)) not in match.comm:
            continue  # a cheap look at the name first: most processes stop here
        info = procfs.process(int(pid))
        tasks = _tasks(procfs, info) if info is not None else ()
        if info is not None and tasks:  # else it ended: the service would never track it
            found.append(Target(info, tasks, mismatch(info, match)))
    return found


def toml(values: Sequence[object]) -> str:
    """A list as it is written in config.toml (JSON's syntax is TOML's here)."""
    return json.dumps(list(values))


def match_check(match: MatchConfig, found: Sequence[Target]) -> Check:
    rules = (f"match.comm = {toml(match.comm)}, match.exe = {toml(match.exe)}, "
             f"match.uid = {toml(match.uid)}")
    if match.uid or match.exe:
        return ok("match rules", rules)
    saw = (f"{rules}: both allow-lists are empty, so any user's process named "
           f"{'/'.join(match.comm)} is boosted")
    # An example only where every process so named runs one executable as one uid: any
    # user may run a copy named nr-gnb, and an example of all of them pinned theirs too.
    pinned = {(t.info.exe, t.info.uid) for t in found}
    if len(pinned) > 1:
        return warn("match rules", saw, f"pin the gNB with the executable and uid of its own "
                    f"target line below, not those of all {len(found)} processes (they run "
                    f"{len(pinned)} different executables or uids)")
    exe, uid = pinned.pop() if pinned else ("/path/to/nr-gnb", "UID")
    example = f"match.exe = {toml([exe] if exe else [])}, match.uid = [{uid}]"
    return warn("match rules", saw, f"pin the gNB, e.g. {example}")


def admit(i: ProcessInfo, match: MatchConfig) -> str:
    """What lets the service boost this process: each allow-list that refuses it, with
    the value to add.  ("add its uid or executable" sent the admin to add a uid that was
    there already when match.exe refused it, and named one list when both did.)"""
    steps = []
    if not exe_allowed(i.exe, match):
        steps.append(f"add {json.dumps(i.exe)} to match.exe" if i.exe else
                     "let the service read its executable (see the exe access check)")
    if match.uid and i.uid not in match.uid:
        steps.append(f"add {i.uid} to match.uid")
    if not steps:  # its name, changed since it was listed: match.comm is all that refuses
        steps.append(f"add {json.dumps(i.comm)} to match.comm")
    return "if this is the gNB, " + " and ".join(steps)


def target_check(t: Target, match: MatchConfig) -> Check:
    i = t.info
    saw = (f"PID {i.tgid} {i.comm}, uid {i.uid}, exe {i.exe or '(unreadable)'}, "
           f"{plural(len(t.tasks), 'thread')}")
    if t.boosted:
        return ok("target", f"{saw}: would be boosted", str(i.tgid))
    return warn("target", f"{saw}: not boosted: {t.why_not}", admit(i, match), str(i.tgid))


def targets_checks(match: MatchConfig, found: Sequence[Target]) -> List[Check]:
    names = "/".join(match.comm)
    boosted = sum(t.boosted for t in found)
    if not found:
        summary = warn("targets", f"no process named {names} is running",
                       "start the gNB; if it runs under another name, set match.comm")
    elif boosted:
        summary = ok("targets", f"{plural(len(found), 'process')} named {names}, "
                                f"{boosted} would be boosted")
    else:
        summary = warn("targets", f"{plural(len(found), 'process')} named {names}, none would "
                                  "be boosted", "see why below")
    lines = [target_check(t, match) for t in found[:MAX_LISTED]]
    return [match_check(match, found), summary, *lines]
