"""The raw trace source: the kernel's binary per-CPU ring buffer, woken by trace_pipe.

It reads `per_cpu/cpuN/trace_pipe_raw` (one non-blocking fd per CPU), one
sub-buffer per read(), and takes every record's `common_pid` with
`ringbuf.PageWalker`.  Nothing is formatted as text — neither by the kernel
(which is what `cat trace_pipe` spends its time on) nor here.

Wake-ups: the doorbell.  A per-CPU raw file polls readable only once that
CPU's buffer is `buffer_percent` full (50 % by default), so on a quiet host
the first record of a new gNB could wait for seconds; and `buffer_percent`
is not ours to change (the unit keeps /sys read-only, and other tracing tools
share it).  The all-CPU `trace_pipe` polls readable as soon as any CPU's
buffer holds an event, and stops once every CPU's buffer is empty.  So the
source opens `trace_pipe` and never reads it (a read would consume events
as text); the loop watches that one fd, and when it rings the source drains
every CPU's raw file (resting after a small turn, as every source does); an
idle ring never rings.  While the daemon holds `trace_pipe`, a `cat
trace_pipe` fails with EBUSY — as it does with the text reader.

Bounded work: a turn reads at most `max(MIN_CPU_PAGES, TURN_PAGES / CPUs)`
pages per CPU, then shares what is left of TURN_PAGES among the CPUs that
still have data (on a 256-CPU host a stream on one CPU would otherwise cost
255 empty reads per 8 pages, 2.5 x the CPU per page), within
max(TURN_PAGES, CPUs x share); a CPU with more left sets `Turn.more`, so the
loop comes straight back (the doorbell is still ringing) after it has served
the watchdog, the push and the signals.

Hotplug: tracefs has a per_cpu/cpuN for every possible CPU, but only CPUs
that have been online have a buffer (a read gives ENODEV otherwise).  The
CPUs online at open are read; each liveness pass lists them again and opens
the new ones.  A doorbell that rings while no CPU yields a page (a CPU we
do not read yet has events) triggers that re-listing at once (at most once
per second, every per_cpu directory), and the rest grows while it keeps
happening, so a CPU that cannot be read costs at most a few wake-ups per
second.
"""

from __future__ import annotations

import errno
import glob
import logging
import os
from typing import Callable, Dict, NamedTuple, Optional, Set, Tuple

from ..config.paths import is_tracefs_pipe, resolve_pipe
from ..core.once import StateLog
from ..files import FileProblem, read_regular_file
from .lost import LossCounter
from .ringbuf import (
    COMMIT_SIZE_MASK,
    FormatError,
    PageStats,
    PageWalker,
    parse_event_format,
    parse_header_event,
    parse_header_page,
)
from .source import REST, OnTids, TraceCounters, TraceSource, Turn, Unusable
from .tracefs import (
    CPU_ONLINE,
    online_cpus,
    per_cpu_dirs,
    subbuf_size,
)

log = logging.getLogger(__name__)

TURN_PAGES = 256  # pages per turn over all CPUs: 1 MiB, ~14,000 records, ~3 ms
MIN_CPU_PAGES = 8  # ... but at least this many per CPU on hosts with many CPUs
RESCAN_MIN_INTERVAL = 1.0  # seconds between re-listings of the CPUs prompted by empty turns
EMPTY_REST_MAX = 0.25  # the longest rest after doorbell rings that yielded nothing
EMPTY_WARN_TURNS = 12  # consecutive empty rings (about 2 s) before saying so

# Any event's format file gives the common fields; these two exist on most kernels.
EVENT_FORMATS = ("events/bpf_trace/bpf_trace_printk/format", "events/ftrace/print/format")


class RawLayout(NamedTuple):
    walker: PageWalker
    read_size: int  # bytes per read(): one sub-buffer
    subbuf_bytes: Optional[int]  # what buffer_subbuf_size_kb said at open (None: absent)


def _read_text(path: str) -> str:
    try:
        return read_regular_file(path, 65536)[0].decode("utf-8", "replace")
    except FileProblem as exc:  # missing, not a regular file, too large: the layout is unknown
        raise Unusable(f"cannot read the ring buffer's layout ({path}: {exc})") from None


def _event_format(tracing_dir: str) -> str:
    """The path of an event format file holding the common fields (the first of
    EVENT_FORMATS when there is none: reading it then says so)."""
    for name in EVENT_FORMATS:
        path = os.path.join(tracing_dir, name)
        if os.path.exists(path):
            return path
    found = sorted(glob.glob(os.path.join(tracing_dir, "events", "*", "*", "format")))
    return found[0] if found else os.path.join(tracing_dir, EVENT_FORMATS[0])


def load_layout(tracing_dir: str) -> RawLayout:
    """The page and record layout the kernel publishes; Unusable if it cannot be read."""
    events = os.path.join(tracing_dir, "events")
    try:
        page = parse_header_page(_read_text(os.path.join(events, "header_page")))
        header = parse_header_event(_read_text(os.path.join(events, "header_event")))
        fmt = _event_format(tracing_dir)
        walker = PageWalker(page, parse_event_format(_read_text(fmt)), header)
    except FormatError as exc:
        raise Unusable(f"the ring buffer's layout in {events} is not one this reader "
                       f"knows: {exc}") from None
    subbuf = subbuf_size(tracing_dir)
    # A read() gets one sub-buffer whatever its size, so a bigger buffer is safe
    # and a smaller one would split pages: take the larger of the two sources.
    return RawLayout(walker, max(subbuf or 0, page.subbuf_size), subbuf)


class RawTraceSource(TraceSource):
    kind = "raw"

    @classmethod
    def problem(cls, pipe: str, proc: str = "/proc") -> str:
        try:
            st = os.stat(pipe)
        except OSError:
            return ""  # not there (yet): raw waits for it, and reads text if it is a FIFO
        if is_tracefs_pipe(pipe, st, proc):
            return ""
        return f"{pipe} is not the kernel's trace_pipe on tracefs"

    @classmethod
    def readiness(cls, pipe: str, proc: str = "/proc") -> str:
        problem = cls.problem(pipe, proc)
        if problem or not os.path.exists(pipe):
            return problem
        directory = os.path.dirname(pipe)
        if not per_cpu_dirs(directory):
            return f"no per_cpu directories in {directory}"
        try:
            load_layout(directory)
        except Unusable as exc:
            return str(exc)
        return ""

    def __init__(self, setting: str, clock: Callable[[], float], on_tids: OnTids,
                 counters: Optional[TraceCounters] = None, *,
                 require_tracefs: bool = True, online_path: str = CPU_ONLINE,
                 turn_pages: int = TURN_PAGES) -> None:
        pipe = resolve_pipe(setting)
        super().__init__(os.path.dirname(pipe), clock, on_tids, counters)
        self.setting = setting
        self.pipe = pipe
        self._require_tracefs = require_tracefs  # False: tests with a fake tracefs
        self._online_path = online_path
        self._turn_pages = turn_pages
        self.layout: Optional[RawLayout] = None
        self.cpus: Dict[int, int] = {}  # cpu -> fd of its trace_pipe_raw
        self._announced: Set[int] = set()  # CPUs whose reading was logged
        self._buf = bytearray(0)  # one sub-buffer, read into
        self._loss = LossCounter(self.counters, self.path, clock, lambda: True)
        self._malformed = StateLog(log)
        self._empty = StateLog(log)
        self._empty_turns = 0
        self._last_rescan = -1e9

    @property
    def tracing_dir(self) -> str:
        return self.path

    def describe(self) -> str:
        size = self.layout.read_size if self.layout else 0
        return (f"{self.path} (raw: {len(self.cpus)} CPU buffer(s), {size}-byte sub-buffers, "
                "woken by trace_pipe)")

    # --- open / close -------------------------------------------------------------------

    def _open_fds(self) -> Tuple[int, ...]:
        self.pipe = resolve_pipe(self.setting)
        self.path = os.path.dirname(self.pipe)
        doorbell = self._open_doorbell()
        self._loss = LossCounter(self.counters, self.path, self._clock, lambda: True)
        try:
            self.layout = load_layout(self.path)
            self._buf = bytearray(self.layout.read_size)
            self._open_cpus()
        except BaseException:
            os.close(doorbell)
            self._close_cpus()
            raise
        return (doorbell,)

    def _open_doorbell(self) -> int:
        """trace_pipe, opened and never read: it polls readable while any CPU has data."""
        # Looked at before it is opened: a FIFO's writer would take our open
        # for its reader's and write into the gap before the text reader opens it.
        self._check_tracefs(os.stat(self.pipe))
        fd = os.open(self.pipe, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        try:
            self._check_tracefs(os.fstat(fd))  # the path may have been replaced meanwhile
        except Unusable:
            os.close(fd)
            raise
        return fd

    def _check_tracefs(self, st: os.stat_result) -> None:
        if self._require_tracefs and not is_tracefs_pipe(self.pipe, st):
            raise Unusable(f"{self.pipe} is not the kernel's trace_pipe on tracefs, so it has "
                           "no binary ring buffer beside it")

    def _open_cpus(self) -> None:
        dirs = per_cpu_dirs(self.path)
        online = online_cpus(self._online_path)
        for cpu, directory in sorted(dirs.items()):
            if online is None or cpu in online:
                self._open_cpu(cpu, directory, strict=True)
        self._announced.update(self.cpus)
        if not self.cpus:
            raise Unusable(f"no per-CPU raw file could be opened under {self.path}/per_cpu")

    def _open_cpu(self, cpu: int, directory: str, strict: bool) -> None:
        """Open one CPU's raw file; at open (`strict`) a failure makes raw unusable."""
        path = os.path.join(directory, "trace_pipe_raw")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError as exc:
            why = f"cannot open {path}: {exc.strerror or exc}"
            if strict:
                raise Unusable(why) from None
            self._malformed.problem(why, logging.WARNING, "%s (CPU %d not read)", why, cpu)
            return
        self.cpus[cpu] = fd
        self._loss.watch(cpu)

    def _close_cpu(self, cpu: int) -> None:
        os.close(self.cpus.pop(cpu))
        self._loss.forget(cpu)

    def _close_cpus(self) -> None:
        for cpu in list(self.cpus):
            self._close_cpu(cpu)

    def _close_fds(self) -> None:
        os.close(self._fds[0])
        self._close_cpus()

    # --- reading --------------------------------------------------------------------------

    def _read_turn(self, fd: int) -> Turn:
        """Drain every CPU, at most `share` pages each (`fd` is the doorbell: never read)."""
        turn = Turn()
        busy = dict(self.cpus)  # CPUs not known to be drained
        share = max(MIN_CPU_PAGES, self._turn_pages // max(1, len(busy)))
        pages = records = 0
        for _ in range(2):  # every CPU its share, then the unused pages (docstring)
            for cpu, cpu_fd in list(busy.items()):
                got, recs, more = self._drain(cpu, cpu_fd, share, turn)
                pages, records = pages + got, records + recs
                if not more:
                    busy.pop(cpu)
                if turn.problem:  # the source closes: what is left unread does not matter
                    break
            share = (self._turn_pages - pages) // max(1, len(busy))
            if not busy or share <= 0 or turn.problem:
                break
        turn.more = bool(busy)
        self._loss.settle()
        self.counters.lines += records
        self.counters.bytes += turn.bytes
        if pages:
            self._empty_turns = 0
            self._empty.recovered("trace_pipe's wake-ups and the per-CPU buffers agree again")
        elif not turn.problem:
            self._rang_empty(turn)
        return turn

    def _drain(self, cpu: int, fd: int, limit: int, turn: Turn) -> Tuple[int, int, bool]:
        """Read up to `limit` pages of one CPU into `turn`: (pages, records, more left).

        The per-page path: one read() and one `walk_into` (the per-record loop,
        in ringbuf); everything else here runs once per page (~56 records).
        """
        assert self.layout is not None  # open
        walker, buf, pids = self.layout.walker, self._buf, turn.tids
        walk, bufs, size = walker.walk_into, [buf], len(buf)
        # the page's commit word, read once per page to count its data bytes
        commit, offset = walker.commit.unpack_from, walker.commit_offset
        pages = records = data = 0
        more = True
        while pages < limit:
            try:
                n = os.readv(fd, bufs)
            except BlockingIOError:
                more = False
                break
            except OSError as exc:
                self._read_failed(cpu, exc, turn)
                more = False
                break
            if n <= 0:  # nothing complete to hand out now (tracefs never ends a file)
                more = False
                break
            page = buf if n == size else memoryview(buf)[:n]
            stats = walk(page, pids)
            pages += 1
            records += stats[0]
            data += commit(page, offset)[0] & COMMIT_SIZE_MASK
            if stats[1] or stats[2]:
                self._odd_page(cpu, stats)
        turn.bytes += data
        return pages, records, more

    def _odd_page(self, cpu: int, stats: PageStats) -> None:
        if stats.lost:
            self._loss.page_lost(cpu, stats.lost)
        if stats.problem:
            self._malformed.problem(
                "malformed", logging.WARNING, "a ring-buffer page of CPU %d is malformed (%s); "
                "the records before the fault were used (warning once)", cpu, stats.problem)

    def _read_failed(self, cpu: int, exc: OSError, turn: Turn) -> None:
        if exc.errno == errno.ENODEV:  # this CPU has no buffer (never online): not ours to read
            log.debug("CPU %d has no ring buffer (ENODEV); looking again at the next liveness "
                      "pass", cpu)
            self._close_cpu(cpu)
            return
        turn.problem = (f"reading {self.path}/per_cpu/cpu{cpu}/trace_pipe_raw failed: "
                        f"{exc.strerror or exc}")

    def _rang_empty(self, turn: Turn) -> None:
        """The doorbell rang but no CPU we read had a page: some CPU we do not read
        has events.  Look for it (rarely), and rest longer while it goes on."""
        self._empty_turns += 1
        if self._clock() - self._last_rescan >= RESCAN_MIN_INTERVAL:
            self._rescan(every=True)
        turn.rest = min(REST * 2.0 ** min(self._empty_turns, 16), EMPTY_REST_MAX)
        if self._empty_turns >= EMPTY_WARN_TURNS:
            self._empty.problem(
                "empty", logging.WARNING, "trace_pipe says events are waiting but none of the "
                "%d per-CPU raw files under %s yields any; waking at most every %.2f s until "
                "that changes", len(self.cpus), self.path, EMPTY_REST_MAX)

    # --- upkeep at each liveness pass -------------------------------------------------------

    def liveness_check(self) -> None:
        if not self.is_open:
            return
        changed = self._layout_change()
        if changed:
            self._fail(changed)  # reopened with the new layout after the backoff's first step
            return
        self._rescan(every=False)
        self._loss.poll()

    def _layout_change(self) -> str:
        """Why the open layout no longer matches the kernel's ("" if it does)."""
        assert self.layout is not None
        now = subbuf_size(self.path)
        if now == self.layout.subbuf_bytes:
            return ""
        if now is None:  # it was there at open: tracefs unmounted (umount -l) or similar
            return (f"{self.path}/buffer_subbuf_size_kb can no longer be read: reopening the "
                    "raw trace source")
        return (f"the ring buffer's sub-buffer size changed ({self.layout.subbuf_bytes} -> "
                f"{now} bytes): reopening the raw trace source")

    def _rescan(self, every: bool) -> None:
        """Open the CPUs that appeared (hotplug); `every`: also those not listed online."""
        self._last_rescan = self._clock()
        dirs = per_cpu_dirs(self.path)
        online = None if every else online_cpus(self._online_path)
        for cpu, directory in sorted(dirs.items()):
            if cpu in self.cpus or (online is not None and cpu not in online):
                continue
            self._open_cpu(cpu, directory, strict=False)
            # Announced only when listed online: an empty ring's search also opens
            # CPUs that never were online (their first read says ENODEV).
            if cpu in self.cpus and not every and cpu not in self._announced:
                self._announced.add(cpu)
                log.info("reading the ring buffer of CPU %d too (it came online)", cpu)
        for cpu in [c for c in self.cpus if c not in dirs]:
            self._close_cpu(cpu)  # its directory is gone (e.g. the instance was removed)
