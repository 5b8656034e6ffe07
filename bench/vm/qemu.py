"""Boot one proof guest under QEMU's emulation (TCG) and collect its report.

The console (ttyS0) goes to a log file; the guest's orchestrator writes its
`PROOF {json}` lines to the second serial port (ttyS1), a file the host
follows while the guest runs.  A boot whose console shows a kernel oops is
thrown away and booted again: multi-threaded TCG oopses in about one of four
sched_ext enables (int3 in update_rq_clock, text patching racing the other
vCPU), which is why each boot enables the scheduler once.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from bench.vm.layout import Layout

OOPS = re.compile(rb"Oops|Kernel panic|BUG: |general protection fault|watchdog: BUG")
SMP = 2
MEM_MB = 2048


@dataclass
class Boot:
    console: Path
    report: Path
    wall_s: float
    exit_code: Optional[int]      # None: killed at the time limit
    records: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def oops(self) -> Optional[str]:
        """The console line that shows a kernel oops, if any."""
        data = self.console.read_bytes() if self.console.exists() else b""
        m = OOPS.search(data)
        if m is None:
            return None
        start = data.rfind(b"\n", 0, m.start()) + 1
        end = data.find(b"\n", m.end())
        return data[start:end if end >= 0 else len(data)].decode(errors="replace").strip()

    @property
    def finished(self) -> bool:
        return any(r.get("kind") == "done" for r in self.records)


def clock_args(icount_shift: Optional[int]) -> List[str]:
    """None: multi-threaded TCG on the host's clock (the recipe's way: fast, but the
    guest's time includes every moment the host did not run a vCPU thread).  An
    integer N: one TCG thread and a virtual clock of 2**N ns per instruction
    (-icount), so what the guest measures depends on the guest alone."""
    if icount_shift is None:
        return ["-accel", "tcg,thread=multi"]
    return ["-accel", "tcg,thread=single", "-icount", f"shift={icount_shift},sleep=off"]


def qemu_argv(lay: Layout, initrd: Path, console: Path, report: Path, cmdline: str,
              icount_shift: Optional[int] = None) -> List[str]:
    q = lay.qemu_root / "usr"
    return [str(q / "bin/qemu-system-x86_64"), "-L", str(q / "share/qemu"),
            *clock_args(icount_shift), "-cpu", "max", "-smp", str(SMP), "-m", str(MEM_MB),
            "-display", "none", "-monitor", "none", "-no-reboot", "-nic", "none",
            "-serial", f"file:{console}", "-serial", f"file:{report}",
            "-kernel", str(lay.kernel), "-initrd", str(initrd),
            "-append", f"console=ttyS0 panic=-1 quiet loglevel=4 {cmdline}"]


def parse_report(text: str) -> List[Dict[str, Any]]:
    """The guest's `PROOF {json}` lines (anything else on that port is ignored)."""
    out = []
    for line in text.splitlines():
        line = line.strip().replace("\r", "")
        if line.startswith("PROOF {"):
            try:
                out.append(json.loads(line[len("PROOF "):]))
            except ValueError:
                continue
    return out


def boot(lay: Layout, initrd: Path, cmdline: str, name: str, timeout_s: float,
         on_record: Callable[[Dict[str, Any]], None],
         icount_shift: Optional[int] = None) -> Boot:
    """One guest from power-on to power-off (or the time limit)."""
    lay.work.mkdir(parents=True, exist_ok=True)
    console, report = lay.work / f"{name}.console.log", lay.work / f"{name}.report.log"
    for f in (console, report):
        f.unlink(missing_ok=True)
    start = time.monotonic()
    with open(lay.work / f"{name}.qemu.log", "wb") as err:
        proc = subprocess.Popen(qemu_argv(lay, initrd, console, report, cmdline, icount_shift),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    seen = 0
    records: List[Dict[str, Any]] = []
    exit_code: Optional[int] = None
    while True:
        try:
            exit_code = proc.wait(timeout=2.0)
            done = True
        except subprocess.TimeoutExpired:
            done = False
        new = parse_report(report.read_text(errors="replace")) if report.exists() else []
        for r in new[seen:]:
            on_record(r)
        seen = max(seen, len(new))
        records = new
        if done:
            break
        if time.monotonic() - start > timeout_s:
            proc.kill()
            proc.wait()
            print(f"vm-proof: {name}: killed after {timeout_s:.0f} s", file=sys.stderr)
            break
    return Boot(console, report, time.monotonic() - start, exit_code, records)
