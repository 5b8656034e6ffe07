"""What every trace reader shares: opening with backoff, resting, counting.

A trace source is a loop component.  It hands the distinct task IDs of each
turn to `on_tids`; which file it reads and how it decodes it is its
subclass's business (text: `text_reader`, binary ring buffer: `raw_reader`).

* A source that cannot be opened, read or watched closes, says why once per
  distinct cause and retries with backoff: never a busy loop, never an
  exception out of the loop.
* After a small turn the source stops watching its fds for `REST` seconds:
  a reader that has caught up with a live stream would otherwise wake for
  every page, and Python's cost per wake-up dwarfs its cost per line.  Lines
  gather in the kernel's ring meanwhile (1.4 MB per CPU by default).  A turn
  that stopped at its bound with data left (`Turn.more`) never rests.
* A source that finds it can never work here (the binary reader pointed at
  a FIFO, a kernel without per-CPU raw files) raises `Unusable` from
  `_open_fds`: it then stops retrying and sets `unusable`, and the feed
  replaces it with the text reader.
"""

from __future__ import annotations

import abc
import errno
import logging
import os
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Collection, Optional, Set, Tuple

from ..config.paths import unmounted_tracefs_hint
from ..config.schema import TraceConfig
from ..core.backoff import Backoff
from ..core.component import NEVER, Component
from ..core.once import StateLog
from .tracefs import LOOP_WALK_BUDGET, holders, named

log = logging.getLogger(__name__)

REST = 0.005
SMALL_TURN = 64 * 1024  # bytes; a turn below this rests the fds


class SourceProblem(Exception):
    """The source cannot be used now (message: one line, says what and where)."""


class Unusable(SourceProblem):
    """This kind of source can never read this trace source: use another kind."""


@dataclass
class TraceCounters:
    """Totals over the daemon's life (kept when a reload replaces the source)."""

    lines: int = 0  # trace lines (text) or data records (raw) recognised
    bytes: int = 0
    dropped_lines: int = 0  # over-long text lines
    reopens: int = 0  # failures and EOFs that closed the source
    lost_events: int = 0  # events the kernel overwrote before we read them (raw)
    unrecognised_bytes: int = 0  # bytes in which no line could be recognised (text)


@dataclass
class Turn:
    tids: Set[int] = field(default_factory=set)
    bytes: int = 0
    problem: str = ""  # set: the source must close (EOF, read error) and retry
    more: bool = False  # stopped at its bound with data left: read again at once
    rest: float = REST  # how long to rest after a small turn


OnTids = Callable[[Set[int]], None]


class TraceSource(Component, abc.ABC):
    """One trace reader: a loop component, and as a class the facts `readers`
    chooses by (its `kind`, what it cannot read, how it is made)."""

    kind: ClassVar[str] = "?"  # its trace.format value

    @classmethod
    def problem(cls, pipe: str, proc: str = "/proc") -> str:
        """Why this reader cannot read the trace source at `pipe` (resolved), judged
        without opening it; "" when it can, or may once the path appears."""
        return ""

    @classmethod
    def readiness(cls, pipe: str, proc: str = "/proc") -> str:
        """`problem`, and whatever else can be judged without reading an event (doctor)."""
        return cls.problem(pipe, proc)

    @classmethod
    def create(cls, config: TraceConfig, clock: Callable[[], float], on_tids: OnTids,
               counters: TraceCounters) -> TraceSource:
        return cls(config.pipe, clock, on_tids, counters)

    def __init__(self, path: str, clock: Callable[[], float], on_tids: OnTids,
                 counters: Optional[TraceCounters] = None) -> None:
        self.name = f"trace source ({self.kind})"
        self.path = path
        self._clock = clock
        self.on_tids = on_tids
        self.counters = counters or TraceCounters()
        self._fds: Tuple[int, ...] = ()
        self._backoff = Backoff(0.1, 5.0)
        self.retry_at: Optional[float] = 0.0  # when closed: next open attempt
        self._rest_until: Optional[float] = None
        self._state = StateLog(log)
        self._opened_once = False
        self.unusable = ""  # set: this kind cannot read the source (why); never retried

    # --- to implement ---------------------------------------------------------------

    @abc.abstractmethod
    def _open_fds(self) -> Tuple[int, ...]:
        """Open; raise SourceProblem or OSError."""

    @abc.abstractmethod
    def _close_fds(self) -> None:
        """Close what `_open_fds` opened."""

    @abc.abstractmethod
    def _read_turn(self, fd: int) -> Turn:
        """One bounded turn of reading `fd` (which may not be ready after all)."""

    # --- the component's face ---------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return bool(self._fds)

    @property
    def problem_now(self) -> str:
        """The last reason it could not be opened or read ("" if none)."""
        return self._state.state or self.unusable

    def watched_fds(self) -> Collection[int]:
        return () if self._rest_until is not None else self._fds

    def next_deadline(self) -> float:
        if self._rest_until is not None:
            return self._rest_until
        return self.retry_at if self.retry_at is not None else NEVER

    def run_due(self, now: float) -> None:
        if self._rest_until is not None and now >= self._rest_until:
            self._rest_until = None
        if self.retry_at is not None and now >= self.retry_at:
            self.open()

    def on_readable(self, fd: int) -> None:
        turn = self._read_turn(fd)
        if turn.bytes:  # it worked: an EOF after data (a FIFO's writer done) starts afresh
            self._backoff.reset()
        if turn.problem:
            self._fail(turn.problem)
        if self.is_open and turn.bytes < SMALL_TURN and not turn.more:
            self._rest_until = self._clock() + turn.rest
        if turn.tids:
            self.on_tids(turn.tids)

    def fd_failed(self, fd: int, exc: OSError) -> None:
        self._fail(f"cannot watch trace source {self.path}: {exc.strerror or exc}")

    def liveness_check(self) -> None:
        """Periodic upkeep at each liveness pass (the raw reader: CPU hotplug, lost events)."""

    @property
    def tracing_dir(self) -> str:
        """The tracing instance's directory (the raw reader's `path` is that directory)."""
        return os.path.dirname(self.path)

    def describe(self) -> str:
        """What is read, for the log line at open."""
        return f"{self.path} ({self.kind})"

    def close(self) -> None:
        if self._fds:
            self._close_fds()
            self._fds = ()
        self._rest_until = None

    # --- open and fail -------------------------------------------------------------------

    def open(self) -> bool:
        try:
            self._fds = self._open_fds()
        except Unusable as exc:
            self.close()
            self.unusable, self.retry_at = str(exc), None  # the feed takes it from here
            return False
        except SourceProblem as exc:
            self._fail(str(exc))
            return False
        except OSError as exc:
            # trace_pipe takes one reader: whoever opened it first (a `cat trace_pipe`)
            # keeps every reader after it out, with a bare "Device or resource busy".
            # Named when /proc lets us see who (the unit's CAP_SYS_PTRACE does).
            # The /proc walk is done once per episode, not at every retry.
            message = f"cannot open trace source {exc.filename or self.path}: "
            busy = message + "another reader holds it (EBUSY)"
            if exc.errno != errno.EBUSY:
                message += exc.strerror or str(exc)
            elif self._state.state.startswith(busy):
                message = self._state.state
            else:
                found = holders([exc.filename or self.path], skip=os.getpid(),
                                budget=LOOP_WALK_BUDGET)
                message = busy + (": " + named(found) if found else ", e.g. a `cat trace_pipe`")
            # A missing permission needs a person (journalctl -p err, README); a source
            # not there yet (tracefs not mounted at boot, a FIFO to come) does not.
            self._fail(message,
                       logging.ERROR if isinstance(exc, PermissionError) else logging.WARNING)
            return False
        self.retry_at = None
        recovered = self._state.recovered("trace source %s open again", self.describe())
        if not recovered and not self._opened_once:
            log.info("reading trace source %s", self.describe())
        self._opened_once = True
        return True

    def _fail(self, message: str, level: int = logging.WARNING) -> None:
        self.close()
        hint = unmounted_tracefs_hint(self.path)
        if hint:
            message = f"{message} ({hint})"
        delay = self._backoff.next_delay()
        self._state.problem(message, level,
                            "%s; retrying with backoff (next in %.1f s)", message, delay)
        self.retry_at = self._clock() + delay
        self.counters.reopens += 1
