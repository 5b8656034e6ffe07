"""5c. How long the gNB's tasks wait for a CPU: the running service's last window
(state.json's `cpu_wait`), else the live targets' threads sampled by doctor
over its window with the daemon's sampler (core.schedstat).  A process whose
tasks waited more than --max-wait of their runnable time warns, naming its
worst task and — from the read-back beside it — whether the scheduler boosts
that task."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence

from ...core.readback import Comparison
from ...core.schedstat import SchedstatSampler, WindowReport, wait_share
from ...core.schedstat_text import describe, percent, report_from_json
from ...core.tracker import TaskRef
from .boost import worst_note
from .model import Check, ok, warn

SAMPLED = "sampled by doctor"
WAITS = ("see the boost check (is it boosted?) and what else runs on its CPUs (top -H, "
         "the unit's CPUQuota=, other busy processes)")


@dataclass(frozen=True)
class Waits:
    reports: Sequence[WindowReport]
    origin: str  # where the numbers come from, in words
    unavailable: str = ""  # why the kernel cannot tell ("" = it can)


def from_state(state: Optional[Mapping[str, Any]]) -> Optional[Waits]:
    """The running service's last window; None when it has none yet.  ValueError
    names the first bad field (anything may be in a file)."""
    cpu = state.get("cpu_wait") if state is not None else None
    if not isinstance(cpu, dict):
        return None
    last, unavailable = cpu.get("last_window"), cpu.get("unavailable")
    windows = last if isinstance(last, list) else []
    why = unavailable if isinstance(unavailable, str) else ""
    if not windows and not why:
        return None
    reports = [report_from_json(w, f"cpu_wait.last_window[{i}]") for i, w in enumerate(windows)]
    return Waits(reports, "the service's last window", why)


class CpuWait:
    """Where this run's CPU wait comes from: the running service's last window, else
    the live tasks sampled around doctor's window (`sample` before it and after)."""

    def __init__(self, state: Optional[Mapping[str, Any]], proc: str,
                 tasks: Sequence[TaskRef], window: float) -> None:
        self.problem = ""  # state.json's cpu_wait could not be read: why
        try:
            self.waits = from_state(state)
        except ValueError as exc:
            self.waits, self.problem = None, f"state.json: {exc}"
        if self.waits is None and not self.problem and not tasks:
            self.waits = Waits([], SAMPLED)
        self.tasks = tasks
        # the live tasks' schedstat, read at both ends of doctor's window
        self.live = (SchedstatSampler(proc, time.monotonic, 0.0, on_unavailable=lambda why: None)
                     if self.waits is None and not self.problem and window > 0 else None)

    def sample(self) -> None:
        """The second call closes the window the first opened (the sampler's reports)."""
        if self.live is not None:
            self.live.sample(self.tasks)
            self.waits = Waits(list(self.live.reports.values()), SAMPLED, self.live.unavailable)

    def checks(self, max_share: float, cmp: Optional[Comparison]) -> List[Check]:
        if self.problem:
            return [warn("cpu wait", self.problem, "the running service wrote it: see its "
                                                   "version")]
        if self.waits is None:
            return [warn("cpu wait", "not measured: the service has no window yet and "
                                     "--window is 0", "give doctor a window of a second or more")]
        return cpu_wait_checks(self.waits, max_share, cmp)


def cpu_wait_checks(waits: Waits, max_share: float, cmp: Optional[Comparison]) -> List[Check]:
    if waits.unavailable:
        return [warn("cpu wait", f"not measured: {waits.unavailable}",
                     "nothing to do for the boost; CPU wait cannot be judged on this kernel")]
    if not waits.reports:
        return [ok("cpu wait", "no task of a live target to measure")]
    return [_process_check(r, waits.origin, max_share, cmp) for r in waits.reports]


def _process_check(r: WindowReport, origin: str, max_share: float,
                   cmp: Optional[Comparison]) -> Check:
    share = wait_share(r.counters)
    over = share is not None and share > max_share
    saw = (describe(r) + (f", more than --max-wait {percent(max_share)}" if over else "")
           + f" ({origin})" + (worst_note(cmp, r.worst.tid) if r.worst is not None else ""))
    return warn("cpu wait", saw, WAITS, r.process) if over else ok("cpu wait", saw, r.process)
