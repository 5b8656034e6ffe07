"""3. The trace source: present, on tracefs, events arriving, events lost, which reader.

Whether events arrive is read from the per-CPU `stats` counters over a short
window, never from trace_pipe or trace_pipe_raw: a read takes lines from the
service, and the kernel lets only one reader hold trace_pipe.  What was
written in the window is what grew in entries + read events + lost: while
the service drains the ring, entries stay flat and read events grow; while
nobody reads a full ring, overrun grows.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from ...config.paths import (
    MOUNT_COMMANDS,
    TRACE_PIPE_CANDIDATES,
    TRACEFS_TYPES,
    Mount,
    is_tracefs_pipe,
    mode_problem,
    mount_of,
    read_mounts,
    resolve_pipe,
)
from ...config.schema import TraceConfig
from ...core.words import plural
from ...files import read_small_text
from ...trace.lost import SHOWN_CPUS
from ...trace.readers import READERS, choose, reader_named
from ...trace.tracefs import (
    CpuStats,
    holders,
    per_cpu_dirs,
    read_cpu_stats,
    reader_files,
    silenced,
    subbuf_size,
)
from .model import Check, fail, ok, warn

WAITS = " (the service waits for it)"


@dataclass(frozen=True)
class TraceSite:
    """Where the trace source is and what it is: everything but the counters."""

    pipe: str
    configured_format: str
    st: Optional[os.stat_result]
    stat_error: str  # why it could not be looked at ("" when it could, or is absent)
    holder: Optional[Mount]  # the mount holding the source
    tracefs_mounts: List[Mount] = field(default_factory=list)
    proc: str = "/proc"  # whose mount table judges what is tracefs

    @property
    def directory(self) -> str:
        return os.path.dirname(self.pipe)

    @property
    def is_fifo(self) -> bool:
        return self.st is not None and stat.S_ISFIFO(self.st.st_mode)

    @property
    def reader(self) -> str:
        """The reader the service would choose (trace.readers.choose, the daemon's rule)."""
        config = TraceConfig(pipe=self.pipe, format=self.configured_format)
        return choose(config, READERS, self.proc).kind

    def access_paths(self) -> List[str]:
        """What the service opens: trace_pipe, and for the binary reader a per-CPU file."""
        paths = [self.pipe]
        raw = os.path.join(self.directory, "per_cpu", "cpu0", "trace_pipe_raw")
        if self.reader == "raw" and os.path.lexists(raw):
            paths.append(raw)
        return paths


def locate(trace: TraceConfig, tracefs: Optional[str], proc: str) -> TraceSite:
    pipe = os.path.join(tracefs, "trace_pipe") if tracefs else resolve_pipe(trace.pipe)
    st, error = None, ""
    try:
        st = os.stat(pipe)
    except FileNotFoundError:
        pass
    except OSError as exc:
        error = exc.strerror or str(exc)
    mounts = read_mounts(proc) or []
    return TraceSite(pipe, trace.format, st, error, mount_of(pipe, mounts),
                     [m for m in mounts if m.fstype in TRACEFS_TYPES], proc)


# --- the counters -------------------------------------------------------------------------


def arrived(s: CpuStats) -> int:
    """Events written to this CPU's ring since its last reset, whoever read them."""
    return s.entries + s.read_events + s.lost


@dataclass(frozen=True)
class Window:
    seconds: float
    before: Dict[int, CpuStats]
    after: Dict[int, CpuStats]

    def growth(self, key: Callable[[CpuStats], int]) -> Dict[int, int]:
        # max(0, ...): a reset of the buffer (writing `trace`) makes counters fall
        return {cpu: max(0, key(s) - key(self.before[cpu]))
                for cpu, s in self.after.items() if cpu in self.before}

    def total(self, key: Callable[[CpuStats], int]) -> int:
        return sum(self.growth(key).values())


def read_counters(directory: str) -> Dict[int, CpuStats]:
    found = {cpu: read_cpu_stats(directory, cpu) for cpu in sorted(per_cpu_dirs(directory))}
    return {cpu: s for cpu, s in found.items() if s is not None}  # None: unreadable


def watch(directory: str, seconds: float, sleep: Callable[[float], None] = time.sleep,
          anyway: bool = False) -> Window:
    """The counters over `seconds`; without counters the window is waited out only
    `anyway` (something else is measured over it)."""
    before = read_counters(directory)
    if before or anyway:
        sleep(seconds)
    return Window(seconds, before, read_counters(directory) if before else {})


def buffer_kb(directory: str) -> Optional[int]:
    """buffer_size_kb: "1410", or "7 (expanded: 1408)" before tracing's first use."""
    text = read_small_text(os.path.join(directory, "buffer_size_kb"), 128) or ""
    text = text.split("expanded:")[1] if "expanded:" in text else text
    digits = text.strip(" )\n").split()
    return int(digits[0]) if digits and digits[0].isdigit() else None


# --- the judgements (on the site gathered above; a pipe is judged by the readers' own rule,
# which asks the mount table) ------------------------------------------------------------


def source_check(site: TraceSite) -> Check:
    pipe = site.pipe
    if site.stat_error:
        return warn("trace source", f"cannot look at {pipe}: {site.stat_error}",
                    "see the trace access check above")
    if site.st is None:
        return fail("trace source", f"{pipe} does not exist", _appear(site))
    if site.is_fifo:
        return ok("trace source", f"{pipe} is a FIFO (a replay or test source)")
    if is_tracefs_pipe(pipe, site.st, site.proc):
        return ok("trace source", f"{pipe} is the kernel's trace_pipe")
    problem = mode_problem(pipe, site.st) or f"{pipe} is not the kernel's trace_pipe"
    return fail("trace source", problem, 'set trace.pipe = "auto"')


def tracefs_check(site: TraceSite) -> Check:
    points = ", ".join(sorted({m.point for m in site.tracefs_mounts})) or "nowhere"
    holder = site.holder
    if holder is not None and holder.fstype in TRACEFS_TYPES:
        return ok("tracefs", f"{holder.fstype} mounted at {holder.point}, holding the trace "
                             f"source (tracefs mounts: {points})")
    if site.is_fifo:
        return warn("tracefs", f"the trace source is a FIFO, not on tracefs (tracefs mounted "
                               f"at {points})",
                    'right for tests and replays; for the gNB\'s trace set trace.pipe = "auto"')
    mount = mount_advice(site.pipe)
    if not site.tracefs_mounts:
        return fail("tracefs", "tracefs is not mounted",
                    mount or MOUNT_COMMANDS[TRACE_PIPE_CANDIDATES[0]] + WAITS)
    there = _mounted_pipe(site)
    steps = [f"set trace.pipe = {there}"] * bool(there) + [mount] * bool(mount)
    return fail("tracefs", f"{site.pipe} is not on tracefs (mounted at {points})",
                ", or ".join(steps) or "correct trace.pipe")


def mount_advice(pipe: str) -> str:
    """The mount that makes `pipe` appear, "" when none would: the one for the place
    "auto" looks (debugfs for /sys/kernel/debug/tracing) that holds it, else tracefs on
    its directory only when that is empty, a mount point.  (Any directory was advised:
    over /tmp or /run, done, it hid everything there; where none exists, it failed.)"""
    directory = os.path.dirname(pipe)
    for candidate, command in MOUNT_COMMANDS.items():
        if pipe.startswith(os.path.dirname(candidate) + "/"):
            return command + WAITS
    with contextlib.suppress(OSError):
        if os.path.basename(pipe) == "trace_pipe" and not os.listdir(directory):
            return f"mount -t tracefs nodev {directory}{WAITS}"
    return ""


def _mounted_pipe(site: TraceSite) -> str:
    """trace.pipe's value (quoted) for a trace_pipe of a tracefs mounted now, "" for none:
    "auto" when it finds one, else a mount's own.  ("auto" alone was advised when trace.pipe
    was "auto" already, and tracefs mounted elsewhere than where it looks.)"""
    auto = resolve_pipe("auto")
    pipes = [auto] + [os.path.join(m.point, "trace_pipe") for m in site.tracefs_mounts]
    found = next((p for p in pipes if p != site.pipe and os.path.exists(p)
                  and mount_of(p, site.tracefs_mounts) is not None), "")
    return '"auto"' if found == auto else f'"{found}"' if found else ""


def _appear(site: TraceSite) -> str:
    """What makes a missing trace source appear: a mount where nothing is mounted, else
    trace.pipe naming one that is.  (A mount of tracefs at /sys/kernel/tracing was advised
    for any path with "tracing" in it: one more, stacked on the tracefs holding a tracing
    instance never made, or none at all where debugfs was needed.)"""
    holder = site.holder
    mount = mount_advice(site.pipe)
    if mount and (holder is None or holder.fstype not in TRACEFS_TYPES):
        return mount
    there = _mounted_pipe(site)
    return (f"set trace.pipe = {there}" if there
            else "correct trace.pipe, or create the FIFO")


def _per_cpu(growth: Dict[int, int]) -> str:
    """The CPUs events arrived on, busiest first, at most SHOWN_CPUS of them.  Every CPU
    was listed, so on a 256-CPU host the line was 256 "CPUn 0"s, and the shortening of a
    check's line to 600 characters cut out the middle, where the busy CPU stood."""
    busy = sorted((cpu for cpu, n in growth.items() if n), key=lambda c: (-growth[c], c))
    shown = ", ".join(f"CPU{cpu} {growth[cpu]}" for cpu in busy[:SHOWN_CPUS])
    return shown + (f", … ({len(busy)} CPUs in all)" if len(busy) > SHOWN_CPUS else "")


def events_check(site: TraceSite, window: Window) -> Check:
    if not window.after:
        why = ("a FIFO has no ring-buffer counters, and doctor never reads the source"
               if site.is_fifo else f"no readable per-CPU stats in {site.directory}/per_cpu")
        return warn("trace events", f"cannot tell whether events arrive: {why}",
                    "watch the service's trace line count instead (gtp5g-operator status)")
    secs = f"{window.seconds:g} s"
    written = window.total(arrived)
    # (events arriving, the switches stopped none of them: trace_marker writes, say)
    silence = None if written else silenced(site.directory)
    if not written and not window.seconds:
        # --window 0 watched nothing: "no events" of it would send the admin to load a
        # tracer that may be running.  A switch that is off needs no window to be seen.
        return (warn("trace events", silence.why, silence.fix) if silence is not None else
                warn("trace events", "not watched: --window is 0",
                     "give doctor a window of a second or more"))
    if silence is not None:
        return warn("trace events", f"no trace events in {secs}: {silence.why}", silence.fix)
    if not written:
        return warn("trace events", f"no trace events in {secs}: is the gtp5g tracer loaded?",
                    "load the gtp5g tracer (its BPF program) and pass GTP-U traffic: an "
                    "idle data plane writes nothing")
    read = window.total(lambda s: s.read_events)
    reader = (f"{read} read meanwhile (by the service?)" if read
              else "none read meanwhile (is the service running?)")
    return ok("trace events", f"{written} events in {secs} "
                              f"({_per_cpu(window.growth(arrived))}); {reader}")


def loss_check(site: TraceSite, window: Window, size_kb: Optional[int]) -> Optional[Check]:
    if not window.after:
        return None
    so_far = sum(s.lost for s in window.after.values())
    now, read = window.total(lambda s: s.lost), window.total(lambda s: s.read_events)
    size = f"buffer {size_kb} KiB per CPU" if size_kb else "buffer size unknown"
    secs = f"{window.seconds:g} s"
    if now and not read:
        return warn("trace loss", f"{now} events overwritten in {secs} and nobody reads the "
                                  f"buffer ({so_far} lost so far; {size})",
                    "start the service: systemctl start gtp5g-operator")
    if now:
        bigger = max(4096, 4 * (size_kb or 1024))
        return warn("trace loss", f"dropping: {now} events lost in {secs} while being read "
                                  f"({so_far} lost so far; {size})",
                    f"raise buffer_size_kb (echo {bigger} > {site.directory}/buffer_size_kb) "
                    "or the unit's CPUQuota=")
    return ok("trace loss", f"{plural(so_far, 'event')} lost since the buffer was last reset, "
                            f"none in the last {secs}; {size}")


def raw_problem(site: TraceSite) -> str:
    """Why the binary reader would not work here ("" when it would): its own readiness."""
    raw = reader_named("raw")
    return raw.readiness(site.pipe, site.proc) if raw is not None else "no binary reader"


def reader_check(site: TraceSite, problem: str) -> Check:
    chosen = f"trace.format = {site.configured_format}"
    if site.reader == "text":
        return ok("trace reader", f"text: trace_pipe's lines ({chosen})")
    if problem:
        return warn("trace reader", f"raw would not work here ({problem}): the service reads "
                                    f"trace_pipe as text instead ({chosen})",
                    "nothing needed; the binary reader costs less CPU where it works")
    sub = subbuf_size(site.directory) if site.st is not None else None
    pages = f", {sub}-byte sub-buffers" if sub else ""
    return ok("trace reader", f"raw: the binary per-CPU ring buffers (per_cpu/cpu*/"
                              f"trace_pipe_raw{pages}), woken by trace_pipe ({chosen})")


def readers_check(site: TraceSite, service_pid: Optional[int]) -> Check:
    """Who holds trace_pipe or a per-CPU trace_pipe_raw open: each event goes to one
    reader, and a second trace_pipe is refused (EBUSY) without saying whose it is."""
    found = holders(reader_files(site.directory), site.proc)
    others = [h for h in found if h.pid != service_pid]
    if others:
        return warn("trace readers", "; ".join(
            f"PID {h.pid} ({h.comm}) holds {os.path.relpath(h.path, site.directory)}"
            for h in others) + f" in {site.directory}: each event goes to one reader, and "
            "only one may hold trace_pipe (EBUSY), so the service misses what they take",
            "stop them (a `cat trace_pipe`, trace-cmd, bpftool prog tracelog) while the "
            "service runs; doctor and `gtp5g-operator status` read counters, not lines")
    if len(found) > len(others):
        return ok("trace readers", f"only the service (PID {service_pid}) reads "
                                   f"{site.directory}")
    who = "" if os.geteuid() == 0 else " (that this user may see: run doctor as root)"
    return ok("trace readers", f"no process reads {site.directory} now{who}")


def trace_checks(site: TraceSite, window: Window,
                 service_pid: Optional[int] = None) -> List[Check]:
    checks = [source_check(site), tracefs_check(site), events_check(site, window),
              readers_check(site, service_pid)]
    loss = loss_check(site, window, buffer_kb(site.directory))
    if loss is not None:
        checks.append(loss)
    checks.append(reader_check(site, raw_problem(site)))
    return checks
