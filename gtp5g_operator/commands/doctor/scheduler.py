"""6. The scheduler: without a sched_ext scheduler enabled, strategies are stored
and have no effect (core.sched_ext reads the state from sysfs)."""

from __future__ import annotations

import os
from typing import List, Optional

from ...core.sched_ext import SchedulerState, read_scheduler
from .model import Check, fail, ok, warn

NO_EFFECT = ("strategies are stored but have no effect until a sched_ext scheduler such as "
             "Gthulhu's is running")


def scheduler_checks(sysfs: str, s: Optional[SchedulerState] = None) -> List[Check]:
    """`s`: the state as read under `sysfs` (doctor reads it once for the boost check too)."""
    s = s or read_scheduler(sysfs)
    base = os.path.join(sysfs, "kernel", "sched_ext")
    if not s.supported:
        return [fail("sched_ext", f"this kernel has no sched_ext (no {base})",
                     f"{NO_EFFECT}: boot a kernel built with CONFIG_SCHED_CLASS_EXT (6.12 or "
                     "later)")]
    kernel = ok("sched_ext", f"this kernel has sched_ext ({base}: state {s.state or '?'})")
    if not s.enabled:
        return [kernel, fail("scheduler", f"no BPF scheduler is enabled (state "
                                          f"{s.state or 'unknown'})",
                             f"{NO_EFFECT}: start Gthulhu's scheduler")]
    if not s.looks_like_gthulhu:
        return [kernel, warn("scheduler", f"the enabled BPF scheduler is {s.ops!r} "
                                          f"({base}/root/ops), which does not look like "
                                          "Gthulhu's",
                             "Gthulhu's strategies only steer Gthulhu's scheduler: run it "
                             "instead")]
    return [kernel, ok("scheduler", f"the enabled BPF scheduler is {s.ops!r}")]
