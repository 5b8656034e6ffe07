"""The kernel's tracing files beside trace_pipe: output options, the per-CPU
ring buffers' counters and sizes, the online CPUs.  (Where trace_pipe is and
what a path points at: config/paths.py.)

Reads only small tracefs files.  Nothing here consumes trace data (the
per-CPU `stats` files and the CPU lists can be read at any time, e.g. by a
diagnostic command, without taking events from the daemon).
"""

from __future__ import annotations

import math
import os
import re
import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Set

from ..core.words import one_line, u64
from ..files import read_small_text
from .ringbuf import MAX_SUBBUF_SIZE

OPTIONS_OF_NOTE = (("bin", "1"), ("hex", "1"), ("raw", "1"), ("context-info", "0"),
                   ("latency-format", "1"), ("verbose", "1"))


def _value(tracing_dir: str, name: str, limit: int = 64) -> str:
    """A small tracefs file's text, stripped ("" when it cannot be read)."""
    return (read_small_text(os.path.join(tracing_dir, name), limit) or "").strip()


def unusual_options(tracing_dir: str) -> list[str]:
    """Output options of a tracing instance that change trace_pipe's text layout."""
    return [f"options/{name} = {unusual}" for name, unusual in OPTIONS_OF_NOTE
            if _value(tracing_dir, f"options/{name}") == unusual]


PRINTK_ENABLE = "events/bpf_trace/bpf_trace_printk/enable"


class Silence(NamedTuple):
    """Why a tracing instance records no gtp5g tracer line, and what turns it on."""

    why: str
    fix: str
    event: bool = False  # the bpf_printk event's switch, not tracing_on


def silenced(tracing_dir: str) -> Optional[Silence]:
    """Is a switch of the tracing instance off that drops every gtp5g tracer line?  A
    reader then waits in silence, though the tracer runs (None: on, or cannot be read,
    as in a FIFO's directory).

    * `tracing_on` = 0: the kernel records nothing (trace_marker writes fail with EBADF).
    * the `bpf_trace_printk` event off: bpf_printk's lines are dropped.  The kernel
      turns that event on in the top-level instance only, each time a program calling
      bpf_printk is loaded: it is off before the tracer's first load, after a reset
      (`echo 0 > events/enable`, reset scripts) until the tracer is loaded again, and
      in an instance (instances/NAME) unless someone turned it on there.  Lines do
      arrive with it off, from trace_marker (a replay, the tests) or another tracer:
      callers name it only to a source that gets nothing.
    """
    if _value(tracing_dir, "tracing_on") == "0":
        return Silence(f"tracing is off ({tracing_dir}/tracing_on = 0)",
                       f"echo 1 > {tracing_dir}/tracing_on")
    if _value(tracing_dir, PRINTK_ENABLE) != "0":
        return None
    enable = os.path.join(tracing_dir, PRINTK_ENABLE)
    why = f"bpf_printk lines are not recorded ({enable} = 0)"
    if os.path.basename(os.path.dirname(tracing_dir)) == "instances":
        return Silence(why, "the kernel writes bpf_printk lines to the top-level instance: "
                            f'set trace.pipe = "auto", or echo 1 > {enable}', True)
    return Silence(why, "load the gtp5g tracer (loading it turns the event on; load it "
                        "again after a reset turned every event off), or echo 1 > "
                        f"{enable}", True)


# Events the gtp5g tracer itself makes enabled (bpf_printk); trace_marker's are not listed.
OWN_EVENTS = frozenset({"bpf_trace:bpf_trace_printk"})


def other_recording(tracing_dir: str) -> str:
    """What else the tracing instance records into the ring ("" when nothing, or unknown):
    a tracer, enabled events — each a record the readers must read too."""
    found = []
    tracer = _value(tracing_dir, "current_tracer")
    if tracer not in ("", "nop"):
        found.append(f"current_tracer = {tracer}")
    events = sorted(set(_value(tracing_dir, "set_event", 1 << 20).split()) - OWN_EVENTS)
    if events:
        shown = ", ".join(events[:3]) + (", …" if len(events) > 3 else "")
        found.append(f"{len(events)} enabled events ({shown})")
    return " and ".join(found)


# --- who else reads ---------------------------------------------------------------------


class Holder(NamedTuple):
    pid: int
    comm: str  # printable: any user names its own processes
    path: str  # which of the paths asked about it holds open


# The daemon's share of a loop turn for the walk: its cost grows with every fd open on
# the host, which any local user adds to (200,000 of them took 0.8 s), and a turn that
# blocks past api.timeout starves the watchdog.  doctor walks to the end.
LOOP_WALK_BUDGET = 0.1


def holders(paths: Sequence[str], proc: str = "/proc", skip: int = 0,
            budget: float = math.inf) -> List[Holder]:
    """The processes (but `skip`) holding one of `paths` open: each event goes to one
    reader, and the kernel refuses a second trace_pipe (EBUSY) without saying whose it
    is.  Matched by device and inode, so the same file through another mount (tracefs
    at /sys/kernel/debug/tracing too) counts; the /proc/PID/fd walk sees every
    process as root (or with CAP_SYS_PTRACE), else only the caller's own.  The walk
    ends after `budget` seconds with what it found so far (perhaps nothing)."""
    until = time.monotonic() + budget
    wanted: Dict[tuple[int, int], str] = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        wanted[(st.st_dev, st.st_ino)] = path
    names = {os.path.basename(p) for p in wanted.values()}
    found = []
    try:
        pids = [int(n) for n in os.listdir(proc) if n.isdigit() and int(n) != skip]
    except OSError:
        pids = []
    for pid in sorted(pids) if wanted else []:
        if time.monotonic() > until:
            break
        held: Set[str] = set()
        try:
            # Iterated, and the budget looked at per fd: one process may hold as many fds
            # as its limit allows (524,288 under systemd's default), ~5 us each to list
            # and read, and a check per process let a single one hold the loop for seconds.
            with os.scandir(os.path.join(proc, str(pid), "fd")) as fds:
                for fd in fds:
                    if time.monotonic() > until:
                        break
                    try:  # readlink first: one stat per fd whose name could match
                        if os.path.basename(os.readlink(fd.path)) not in names:
                            continue
                        st = os.stat(fd.path)
                    except OSError:
                        continue
                    hit = wanted.get((st.st_dev, st.st_ino))
                    if hit is not None and hit not in held:
                        held.add(hit)
                        comm = read_small_text(os.path.join(proc, str(pid), "comm"), 64) or "?"
                        found.append(Holder(pid, one_line(comm.strip(), 16), hit))
        except OSError:  # gone, or not ours to look at
            continue
    return found


# --- the per-CPU ring buffers ----------------------------------------------------------

CPU_ONLINE = "/sys/devices/system/cpu/online"
_CPU_DIR = re.compile(r"cpu(\d+)$")


class CpuStats(NamedTuple):
    """One CPU's ring-buffer counters (per_cpu/cpuN/stats); counts since the last reset."""

    entries: int = 0  # events in the buffer now, not yet read
    overrun: int = 0  # events overwritten before anyone read them (overwrite mode, the default)
    commit_overrun: int = 0  # events lost inside a nested write that wrapped the buffer
    bytes: int = 0  # bytes of the unread events
    dropped_events: int = 0  # events refused because the buffer was full (options/overwrite = 0)
    read_events: int = 0  # events consumed by readers

    @property
    def lost(self) -> int:
        """Every event the kernel threw away on this CPU, whichever way."""
        return self.overrun + self.commit_overrun + self.dropped_events


# The stats file's keys are CpuStats's field names with spaces: "commit overrun".
_STATS_KEYS = {name.replace("_", " "): name for name in CpuStats._fields}


def parse_cpu_stats(text: str) -> CpuStats:
    """The counters from the text of a per-CPU `stats` file (missing ones are 0; the
    times, "oldest event ts" and "now ts", are not read: nothing uses them)."""
    values: Dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        name = _STATS_KEYS.get(key.strip())
        if not sep or name is None:
            continue
        value = value.strip()
        if u64(value) is not None:  # an unsigned long; "-1", "1_000" or "+5" are not
            values[name] = int(value)
    return CpuStats(**values)  # missing ones keep their 0


def read_cpu_stats(tracing_dir: str, cpu: int) -> Optional[CpuStats]:
    """per_cpu/cpuN/stats of a tracing instance, or None when it cannot be read.

    Reading it never consumes events: safe beside any reader.
    """
    text = read_small_text(os.path.join(tracing_dir, "per_cpu", f"cpu{cpu}", "stats"), 4096)
    return parse_cpu_stats(text) if text is not None else None


def reader_files(tracing_dir: str) -> List[str]:
    """The files a trace reader holds open: trace_pipe and every CPU's trace_pipe_raw."""
    return [os.path.join(tracing_dir, "trace_pipe"), *(
        os.path.join(d, "trace_pipe_raw") for _, d in sorted(per_cpu_dirs(tracing_dir).items()))]


def named(found: Sequence[Holder]) -> str:
    """Holders as the journal names them: "PID 4242 (cat), PID 77 (trace-cmd)", each
    process once (a trace-cmd holds a trace_pipe_raw per CPU)."""
    return ", ".join(dict.fromkeys(f"PID {h.pid} ({h.comm})" for h in found))


def per_cpu_dirs(tracing_dir: str) -> Dict[int, str]:
    """CPU number -> its per_cpu/cpuN directory (tracefs makes one per possible CPU)."""
    base = os.path.join(tracing_dir, "per_cpu")
    try:
        names = os.listdir(base)
    except OSError:
        return {}
    matches = (_CPU_DIR.match(name) for name in names)
    return {int(m.group(1)): os.path.join(base, m.string) for m in matches if m}


MAX_CPUS = 1 << 16  # far beyond any kernel's NR_CPUS (8192): bounds the set a list can make
_CPU_RANGE = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")


def parse_cpu_list(text: str) -> Set[int]:
    """The kernel's CPU list format: "0-3,8,10-11" (empty: no CPU); ValueError if garbled."""
    cpus: Set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        m = _CPU_RANGE.fullmatch(part)
        first = int(m.group(1)) if m else -1
        last = int(m.group(2) or first) if m else -1
        if not 0 <= first <= last < MAX_CPUS:
            raise ValueError(f"not a CPU list: {text.strip()[:40]!r}")
        cpus.update(range(first, last + 1))
    return cpus


def online_cpus(path: str = CPU_ONLINE) -> Optional[Set[int]]:
    """The CPUs online now, or None when that cannot be read."""
    text = read_small_text(path, 4096)
    try:
        return parse_cpu_list(text) if text is not None else None
    except ValueError:
        return None


def subbuf_size(tracing_dir: str) -> Optional[int]:
    """Bytes per sub-buffer (buffer_subbuf_size_kb, kernels >= 6.8), or None if not shown
    (or not a size a kernel makes: the reader allocates one sub-buffer per read)."""
    try:
        kb = int(_value(tracing_dir, "buffer_subbuf_size_kb").split()[0])
    except (ValueError, IndexError):  # IndexError: empty, or not there
        return None
    return kb * 1024 if 0 < kb * 1024 <= MAX_SUBBUF_SIZE else None
