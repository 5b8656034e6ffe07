"""The liveness pass, as a loop component: every `liveness_interval`, drop
tasks that exited, judge tracked processes again (exec, rename), forget
cached verdicts, and run the other periodic checks (CPU hotplug for the raw
reader, the scheduler's state)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, List

from ..core.component import Component
from ..core.tracker import TaskTracker

if TYPE_CHECKING:
    from ..config import Config


class LivenessPass(Component):
    name = "liveness pass"

    def __init__(self, tracker: TaskTracker, interval: float, clock: Callable[[], float],
                 on_change: Callable[[], None]) -> None:
        self.tracker = tracker
        self.interval = interval
        self._clock = clock
        self._on_change = on_change
        self.checks: List[Callable[[], None]] = []  # other periodic checks
        self.names_wanted: Callable[[], bool] = lambda: True  # do thread names matter?
        self._next = clock() + interval

    def next_deadline(self) -> float:
        return self._next

    def run_due(self, now: float) -> None:
        if now < self._next:
            return
        changed = self.tracker.prune()
        changed |= self.tracker.rejudge(names=self.names_wanted())
        self.tracker.forget_verdicts()
        for check in self.checks:
            check()
        self._next = now + self.interval
        if changed:
            self._on_change()

    def reconfigure(self, old: Config, new: Config) -> bool:
        if old.strategy.liveness_interval != new.strategy.liveness_interval:
            self.interval = new.strategy.liveness_interval
            self._next = self._clock() + self.interval
        if old.match != new.match and self.tracker.set_match(new.match):
            self._on_change()
        return False
