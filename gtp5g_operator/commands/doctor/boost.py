"""5b. What the scheduler will boost, in doctor's words: the read-back of every thread
of the live gNB (a `core.readback.Comparison` the flavor's writer made), judged
with the daemon's own findings (`core.boost_verdict`).

Levels: ok only when nothing is missing and nothing foreign.  A Decision Maker
that matches thread-group leaders only FAILs: the gNB's worker threads are
never boosted, whatever the service does.  Tasks missing for another reason
warn: a thread not yet seen in the trace is not written yet, which the service
corrects by itself.  Foreign tasks (boosted by this host's rule, none of its
gNB's) WARN, each named with PID, name, uid and executable: the gNB is still
boosted, nothing in this host's configuration can stop a name-matching server
from boosting another user's process of that name, and a FAIL would make
doctor fail for good on a shared host.  A server that lists every task while no
Gthulhu scheduler runs warns: nothing reads what it lists (the scheduler check
FAILs or warns for that).
"""

from __future__ import annotations

from typing import List, Optional

from ...core.boost_verdict import scheduler_finding, verdict
from ...core.readback import Comparison
from ...core.sched_ext import SchedulerState
from .model import Check, fail, ok, warn

MAX_FOREIGN = 8  # foreign processes listed one per line; more are only counted
NOT_WRITTEN = ("the service writes the gNB's rule once its tasks show up in the trace (GTP-U "
               "traffic): see the trace events and service checks")
LEADERS_ONLY = ("run a Decision Maker with the thread-aware scan (Gthulhu after PR #135), "
                "which lists every thread whose name the rule matches")
NOT_ALL = ("a thread that has not shown up in the trace is not in the rule yet; if a thread "
           "that carries traffic stays missing, compare /proc/TGID/task/TID/comm with the rule")
FOREIGN = ("the server matches names: any process of that name is boosted too; rename or stop "
           "it, or give the gNB's threads names of their own")


def boost_checks(cmp: Comparison, source: str,
                 scheduler: Optional[SchedulerState] = None) -> List[Check]:
    """`cmp` of at least one task: ApiProbe.boost reads back only with a live target.
    `scheduler`: the sched_ext state the scheduler check reports (None: unknown)."""
    v = verdict(cmp, scheduler, source)
    blocked = scheduler_finding(scheduler)
    by_kind = {f.key.split(":")[0]: f for f in v.findings}
    where = f" (read back from {source})"
    if cmp.leaders_only:
        head = fail("boost", by_kind["leaders-only"].message + where, LEADERS_ONLY)
    elif cmp.nothing_listed:
        ours = "none of this host's IDs" if cmp.kind == "ids" else "no task under this host's rule"
        head = warn("boost", f"the scheduler boosts none of the {cmp.tracked} tasks of the "
                             f"live gNB: {source} lists {ours}", NOT_WRITTEN)
    elif cmp.missing:
        head = warn("boost", by_kind["missing"].message + where, NOT_ALL)
    elif blocked is not None:  # an OK here said "the scheduler boosts all" above a FAIL
        head = warn("boost", f"{source} lists all {cmp.tracked} tasks of the live gNB, but "
                             f"{blocked.message}", "see the scheduler check")
    elif cmp.foreign:
        head = warn("boost", v.diagnosis + where, "see each foreign task below")
    else:
        head = ok("boost", v.diagnosis + where)
    foreign = [warn("foreign task", f.message, FOREIGN, f.key.split(":")[1])
               for f in v.findings if f.key.startswith("foreign:")]
    more = len(foreign) - MAX_FOREIGN
    tail = [warn("foreign task", f"and {more} more", FOREIGN)] if more > 0 else []
    return [head, *foreign[:MAX_FOREIGN], *tail]


def not_verified_check(problem: str) -> Check:
    """The flavor cannot read back (a Manager without api.decision_maker_url)."""
    saw, _, advice = problem.partition("; ")
    return warn("boost", saw or "not verified", advice or "nothing to do: this server cannot "
                                                          "say what the scheduler boosts")


def worst_note(cmp: Optional[Comparison], tid: int) -> str:
    """Whether the scheduler boosts task `tid`, for the CPU-wait line ("" when unknown)."""
    if cmp is not None and tid in cmp.missing:
        return f"; the scheduler does NOT boost its worst task {tid}"
    if cmp is not None and tid in cmp.covered:
        return f"; the scheduler boosts its worst task {tid}"
    return ""
