"""Is a sched_ext scheduler running?  Read from sysfs (the root is injectable).

Without one, every strategy the operator writes is stored and has no
effect.  `/sys/kernel/sched_ext/` exists on kernels built with sched_ext;
its `state` says enabled/disabled, and `root/ops` names the BPF scheduler
while one is enabled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict

from ..files import read_small_text

# The ops names Gthulhu's scheduler registers: its BPF part comes from Gthulhu/qumun,
# whose SCX_OPS_DEFINE names it "goland" (Gthulhu c969a96 attaches as goland; seen in
# bench/vm's proof, where "gthulhu" alone called the real scheduler "not Gthulhu's").
GTHULHU_OPS = ("gthulhu", "goland")


@dataclass(frozen=True)
class SchedulerState:
    supported: bool  # the kernel has sched_ext
    state: str  # enabled, disabled, enabling, disabling, or "" when unknown
    ops: str  # the running BPF scheduler's name, "" when none

    @property
    def enabled(self) -> bool:
        return self.state == "enabled" and bool(self.ops)

    @property
    def looks_like_gthulhu(self) -> bool:
        return any(name in self.ops.lower() for name in GTHULHU_OPS)

    def describe(self) -> Dict[str, Any]:
        return {"sched_ext": self.supported, "state": self.state, "ops": self.ops,
                "enabled": self.enabled}

    def summary(self) -> str:
        if not self.supported:
            return "this kernel has no sched_ext (no /sys/kernel/sched_ext)"
        if not self.enabled:
            return f"no sched_ext scheduler is running (state {self.state or 'unknown'})"
        return f"sched_ext scheduler {self.ops!r} is running"


def _read(path: str) -> str:
    # sysfs gives every attribute st_size 4096 (a page) whatever its text: a
    # smaller limit refuses them all (seen on 7.2 in bench/vm's proof).
    text = read_small_text(path, 4096)
    return text.strip() if text is not None else ""


def read_scheduler(sysfs: str = "/sys") -> SchedulerState:
    base = os.path.join(sysfs, "kernel", "sched_ext")
    if not os.path.isdir(base):
        return SchedulerState(False, "", "")
    state = _read(os.path.join(base, "state"))
    ops = _read(os.path.join(base, "root", "ops")) if state == "enabled" else ""
    return SchedulerState(True, state, ops)
