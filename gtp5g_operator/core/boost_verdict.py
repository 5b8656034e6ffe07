"""What the read-back means, said once per episode and shown everywhere (issue 19).

From a `core.readback.Comparison` and the sched_ext state it derives the
findings (each difference, in words a person acts on), logs each once per
episode with `BoostReporter` (ERROR only for what a person must fix: a
Decision Maker that matches thread-group leaders only), and summarises the
result as `BoostVerdict`: the `boost` object of state.json and /health (whence
the gauges) and the STATUS= fragment.  Pure except the reporter, which has an
injected clock and logger.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from .readback import Comparison, TaskFacts
from .sched_ext import SchedulerState

SHOWN_PIDS = 8  # PIDs named in one message


@dataclass(frozen=True)
class Finding:
    key: str  # the episode: logged when it appears, again only after it went away
    level: Optional[int]  # None: noted in the summary, not logged (a grace period)
    message: str


def pid_list(pids: Sequence[int]) -> str:
    shown = ", ".join(str(p) for p in pids[:SHOWN_PIDS])
    return shown if len(pids) <= SHOWN_PIDS else f"{shown}, ... ({len(pids)} in all)"


def scheduler_finding(scheduler: Optional[SchedulerState]) -> Optional[Finding]:
    """None when Gthulhu's scheduler runs (or the state is unknown)."""
    if scheduler is None or (scheduler.enabled and scheduler.looks_like_gthulhu):
        return None
    text = (scheduler.summary() + (", not Gthulhu's" if scheduler.enabled else "")
            + ": the strategies have no effect")
    # Shown, not logged here: the daemon's scheduler watch says it once per change.
    return Finding(f"scheduler:{scheduler.ops or scheduler.state or 'none'}", None, text)


def diagnose(cmp: Comparison, scheduler: Optional[SchedulerState],
             nothing_listed_for: float, grace: float) -> List[Finding]:
    """Every difference, most pressing first; empty when all is covered."""
    findings = [f for f in (scheduler_finding(scheduler),) if f is not None]
    n, m = len(cmp.covered), cmp.tracked
    if cmp.leaders_only:
        findings.append(Finding("leaders-only", logging.ERROR, (
            f"this Decision Maker matches thread-group leaders only: the scheduler boosts "
            f"{n} of {m} gNB tasks; a Decision Maker with the thread-aware scan boosts all")))
    elif cmp.nothing_listed:
        findings.append(_nothing_listed(cmp, nothing_listed_for, grace))
    elif cmp.missing:
        findings.append(Finding("missing", logging.WARNING, _missing_text(cmp)))
    # One finding per foreign *process*: a thread-aware Decision Maker lists every thread
    # of another user's gNB, and one WARNING per task put hundreds of lines into the
    # journal at once (up to MAX_LOOKUPS a read-back), and one more for each new thread.
    by_process: Dict[Tuple[int, int], List[TaskFacts]] = {}
    for f in cmp.foreign:
        by_process.setdefault((f.tgid, f.start_time), []).append(f)
    findings.extend(Finding(f"foreign:{tgid}:{start}", logging.WARNING, _foreign_text(tasks))
                    for (tgid, start), tasks in by_process.items())
    return findings


def _foreign_text(tasks: Sequence[TaskFacts]) -> str:
    f = tasks[0]
    who, these = (f.describe(), "this task is") if len(tasks) == 1 else (
        f"{len(tasks)} tasks (PIDs {pid_list([t.pid for t in tasks])}) of process {f.tgid} "
        f"({f.process!r}), uid {f.uid}, exe {f.exe or '(unreadable)'!r}", "these tasks are")
    return (f"boosted by our rule but not verified: {who} -- the server matches names; "
            f"{these} none of those this host tracks (another user's, excluded by match.uid "
            "or match.exe, or not yet seen in the trace)")


def _nothing_listed(cmp: Comparison, waited: float, grace: float) -> Finding:
    if cmp.kind == "ids":
        what = (f"the server holds none of the {cmp.tracked} IDs this host wrote: it lost "
                "them (restarted?) or another writer replaced the list")
    else:
        what = (f"the server lists no task under this host's rule while {cmp.tracked} gNB "
                "tasks are tracked: the rule has not reached it yet (a Manager propagates "
                "it), or it ignores the rule (a Decision Maker from before 2026-08, or a "
                "regular expression it cannot compile)")
    if waited < grace:
        return Finding("nothing-listed-yet", None, f"waiting ({waited:.0f} s): {what}")
    return Finding("nothing-listed", logging.WARNING, f"for {waited:.0f} s {what}")


def _missing_text(cmp: Comparison) -> str:
    head = (f"the scheduler does not boost {len(cmp.missing)} of {cmp.tracked} gNB tasks "
            f"(PIDs {pid_list(cmp.missing)}): ")
    if cmp.kind == "ids":
        return head + ("the server no longer holds them (another writer replaced them, or "
                       "it restarted); the next resync writes them again")
    return head + ("the server does not list them under this host's rule (a thread renamed "
                   "since the rule was written is picked up at the next resync; if this "
                   "persists, compare /proc/TGID/task/TID/comm with the rule)")


def _blocked(findings: Sequence[Finding]) -> Optional[Finding]:
    """The finding that Gthulhu's scheduler does not run: then nothing is boosted."""
    return next((f for f in findings if f.key.startswith("scheduler:")), None)


def headline(cmp: Comparison, findings: Sequence[Finding]) -> str:
    """One sentence for state.json and status: the most pressing finding, or all is well."""
    # Nothing reads the strategies: said before any difference in what they list.  (Its
    # finding is not logged here, so `logged` below never held it: a foreign task made
    # the headline say tasks "are boosted" on a host without the scheduler.)
    blocked = _blocked(findings)
    if blocked is not None:
        return blocked.message
    logged = [f for f in findings if f.level is not None]
    top = max(logged, key=lambda f: f.level or 0, default=None)
    if top is not None and not top.key.startswith("foreign:"):
        return top.message
    if cmp.foreign:
        return (f"{len(cmp.foreign)} task(s) this host does not track are boosted by its rule "
                f"(PIDs {pid_list([f.pid for f in cmp.foreign])})")
    if findings:  # only a grace period runs
        return findings[0].message
    if cmp.tracked == 0:
        return "no gNB task is tracked"
    return f"all covered: the scheduler boosts all {cmp.tracked} gNB tasks"


# --- the result, for every place that shows it ---------------------------------------------


@dataclass(frozen=True)
class BoostVerdict:
    verified: bool
    source: str  # where it was read: the URL of the strategies GET, or why it was not
    comparison: Optional[Comparison]
    findings: Tuple[Finding, ...]
    diagnosis: str
    scheduler: str  # the running sched_ext scheduler's name, "" when none or unknown

    def state(self) -> Dict[str, Any]:
        """The `boost` object of state.json (and of /health's body)."""
        cmp = self.comparison
        out: Dict[str, Any] = {"verified": self.verified, "source": self.source,
                               "diagnosis": self.diagnosis, "scheduler": self.scheduler}
        if cmp is not None:
            out.update({"covered": list(cmp.covered), "missing": list(cmp.missing),
                        "foreign": [f.as_dict() for f in cmp.foreign],
                        "unseen": list(cmp.unseen), "others": cmp.others, "gone": cmp.gone,
                        "unchecked": cmp.unchecked})
        return out

    def status_fragment(self) -> str:
        """For STATUS=: `4/4 gNB tasks boosted by the scheduler`."""
        cmp = self.comparison
        if not self.verified or cmp is None:
            return "boost not verified"
        if _blocked(self.findings) is not None:
            return "no gNB task boosted: " + (f"scheduler {self.scheduler} is not Gthulhu's"
                                             if self.scheduler else "no sched_ext scheduler")
        text = f"{len(cmp.covered)}/{cmp.tracked} gNB tasks boosted by the scheduler"
        return text + (f", {len(cmp.foreign)} foreign" if cmp.foreign else "")


def verdict(cmp: Comparison, scheduler: Optional[SchedulerState], source: str,
            nothing_listed_for: float = 0.0, grace: float = 0.0) -> BoostVerdict:
    findings = diagnose(cmp, scheduler, nothing_listed_for, grace)
    running = scheduler.ops if scheduler is not None and scheduler.enabled else ""
    return BoostVerdict(True, source, cmp, tuple(findings), headline(cmp, findings), running)


def not_verified(why: str) -> BoostVerdict:
    """E.g. a Manager without api.decision_maker_url: nothing to read back."""
    return BoostVerdict(False, why, None, (), f"not verified: {why}", "")


class BoostReporter:
    """Logs each difference once per episode (like core.once.StateLog, one episode per
    finding key) and once that all is covered — at the first verified read-back with
    tasks, and again after every episode of differences.

    `grace` (the resync interval; set it again on reload) is how long an empty
    listing is taken for propagation still under way before it is reported."""

    def __init__(self, logger: logging.Logger, grace: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self.grace = grace
        self._clock = clock
        self._active: Set[str] = set()  # keys of the findings of the last read-back
        self._empty_since: Optional[float] = None
        self._confirmed = False  # "all covered" said since the last logged finding

    def update(self, cmp: Comparison, scheduler: Optional[SchedulerState],
               source: str) -> BoostVerdict:
        now = self._clock()
        if not cmp.nothing_listed:
            self._empty_since = None
        elif self._empty_since is None:
            self._empty_since = now
        waited = now - self._empty_since if self._empty_since is not None else 0.0
        result = verdict(cmp, scheduler, source, waited, self.grace)
        for f in result.findings:
            if f.key not in self._active and f.level is not None:
                self._log.log(f.level, "%s", f.message)
                self._confirmed = False
        keys = {f.key for f in result.findings}
        # With nothing tracked (a gNB between two runs) the read-back cannot show that a
        # difference went away: its episode goes on.  Ended there, a gNB restarting every
        # few seconds had each difference said again at every restart (the leaders-only
        # ERROR, a foreign task's WARNING), a line per restart for as long as it lasted.
        self._active = keys if cmp.tracked else self._active | keys
        if not result.findings and cmp.tracked and not self._confirmed:
            self._log.info("%s (read back from %s)", result.diagnosis, source)
            self._confirmed = True
        return result
