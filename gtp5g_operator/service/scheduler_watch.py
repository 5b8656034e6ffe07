"""Watch the sched_ext scheduler's state at each liveness pass (a few small
sysfs reads) and say when it goes away or comes back."""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

from ..core.boost_verdict import scheduler_finding
from ..core.sched_ext import SchedulerState, read_scheduler

log = logging.getLogger(__name__)


class SchedulerWatch:
    def __init__(self, sysfs: str = "/sys") -> None:
        self.sysfs = sysfs
        self.state: Optional[SchedulerState] = None

    def check(self) -> None:
        new = read_scheduler(self.sysfs)
        old, self.state = self.state, new
        if old is not None and old.enabled == new.enabled and old.ops == new.ops:
            return
        if new.enabled and new.looks_like_gthulhu:
            log.info("%s", new.summary())
        elif new.enabled:
            log.warning("sched_ext scheduler %r is running, not Gthulhu's: the strategies this "
                        "service writes have no effect", new.ops)
        elif old is None or old.enabled:
            log.warning("%s: the strategies this service writes have no effect until one "
                        "(such as Gthulhu's) runs", new.summary())

    def describe(self) -> Dict[str, Any]:
        return self.state.describe() if self.state is not None else {}

    def status_note(self) -> str:
        """For STATUS=, whatever is tracked: "" while Gthulhu's scheduler runs (or before
        the first look).  Another scheduler is said as no scheduler is: STATUS= was silent
        about one ('rusty') while state.json, `status` and the metrics named it, and said
        it only in the boost's words once a gNB was tracked and a push had succeeded."""
        finding = scheduler_finding(self.state)
        return finding.message if finding is not None else ""
