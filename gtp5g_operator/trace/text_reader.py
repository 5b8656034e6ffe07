"""The text trace source: non-blocking reads of trace_pipe into a LineFramer.

What the bytes mean is `textscan`'s job.  The kernel's trace_pipe never
returns EOF, but the FIFO that tests and replays use does when its writer
closes, so EOF means "reopen" — after a backoff, so a source that keeps
failing never spins.

Where the kernel overwrote events, trace_pipe prints `CPU:N [LOST M EVENTS]`;
the tracing instance's per-CPU `stats` count the same exactly, so they are
read at each liveness pass (`lost.LossCounter`, as the raw reader does) and
nothing is looked for per line.  A FIFO has no ring buffer behind it.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Callable, Optional, Set, Tuple

from ..config.paths import is_tracefs_pipe, mode_problem, resolve_pipe
from ..core.once import StateLog
from .framing import LineFramer
from .lost import LossCounter
from .source import OnTids, SourceProblem, TraceCounters, TraceSource, Turn
from .textscan import DEFAULT, Layout, scan
from .tracefs import per_cpu_dirs, unusual_options

log = logging.getLogger(__name__)

UNRECOGNISED_WARN_BYTES = 16 * 1024  # this much text without one recognised line: say so
# A turn scans up to this many fills of the framer (256 KiB each): a flood then
# pays the loop's walk over every component once per MiB, not once per fill,
# and a turn still ends within a few milliseconds.
FILLS_PER_TURN = 4


class TextTraceSource(TraceSource):
    kind = "text"

    def __init__(self, setting: str, clock: Callable[[], float], on_tids: OnTids,
                 counters: Optional[TraceCounters] = None, *, require_tracefs: bool = True) -> None:
        super().__init__(resolve_pipe(setting), clock, on_tids, counters)
        self.setting = setting
        self._require_tracefs = require_tracefs  # False: tests with a fake tracefs
        self._loss: Optional[LossCounter] = None
        self.framer = LineFramer()
        self._layout_state = StateLog(log)
        self._unrecognised = StateLog(log)
        self._unrecognised_run = 0  # bytes since the last recognised line
        self._long_line = StateLog(log)  # never recovers: warned once

    # --- open / close -------------------------------------------------------------------

    def _open_fds(self) -> Tuple[int, ...]:
        self.path = resolve_pipe(self.setting)
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        st = os.fstat(fd)
        problem = mode_problem(self.path, st)  # the path may have been replaced
        if problem:
            os.close(fd)
            raise SourceProblem(problem)
        if is_tracefs_pipe(self.path, st) or not self._require_tracefs:
            # the payload-PID layout counts PID= fields, not events
            self._loss = LossCounter(self.counters, self.tracing_dir, self._clock,
                                     lambda: self._layout_state.state != "payload PID")
            for cpu in per_cpu_dirs(self.tracing_dir):
                self._loss.watch(cpu)
        return (fd,)

    def _close_fds(self) -> None:
        os.close(self._fds[0])
        self.framer.reset()  # a partial line of the old stream must not join the new one
        self._loss = None

    def liveness_check(self) -> None:
        if self._loss is not None:
            self._loss.poll()

    # --- reading ---------------------------------------------------------------------------

    def _read_turn(self, fd: int) -> Turn:
        """Fill and scan the framer until EAGAIN, at most FILLS_PER_TURN times:
        bounded per turn, so a flood cannot starve the watchdog or the push."""
        turn = Turn()
        for _ in range(FILLS_PER_TURN):
            full = self._fill(fd, turn)
            turn.tids |= self._scan_framed()
            if not full:
                break
        self.counters.bytes += turn.bytes
        if turn.problem:  # the last line before EOF may lack its newline
            turn.tids |= self._scan(*self.framer.flush_partial())
        return turn

    def _fill(self, fd: int, turn: Turn) -> bool:
        """Read into the framer until it is full (True: more may be waiting), EAGAIN or
        a problem (set on `turn`)."""
        framer = self.framer
        while framer.filled < len(framer.buf):
            try:
                n = os.readv(fd, [framer.space()])
            except BlockingIOError:
                return False
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                turn.problem = f"reading trace source {self.path} failed: {exc.strerror}"
                return False
            if n == 0:
                turn.problem = f"trace source {self.path} reached end of file"
                return False
            framer.commit(n)
            turn.bytes += n
        return True

    def _scan_framed(self) -> Set[int]:
        framer = self.framer
        dropped = framer.dropped_lines
        tids = self._scan(*framer.frame())
        framer.release()
        if framer.dropped_lines != dropped:
            self.counters.dropped_lines += framer.dropped_lines - dropped
            self._long_line.problem("long", logging.WARNING, "dropped a trace line longer than "
                                    "%d bytes (counted in trace_dropped_lines; warning once)",
                                    framer.max_line)
        return tids

    def _scan(self, start: int, end: int) -> Set[int]:
        if end <= start:
            return set()
        tids, lines, layout = scan(self.framer.buf, start, end)
        self.counters.lines += lines
        if layout is None:
            self._not_recognised(end - start)
        else:
            self._recognised(layout)
        return tids

    # --- saying what the text looks like ---------------------------------------------------

    def _recognised(self, layout: Layout) -> None:
        self._unrecognised_run = 0
        self._unrecognised.recovered("trace lines are recognised again (%s layout)",
                                     layout.name)
        if layout is DEFAULT:
            self._layout_state.recovered("trace_pipe prints the default layout again")
        else:
            self._layout_state.problem(
                layout.name, logging.WARNING, "trace_pipe prints the %s layout (options/%s "
                "is %s): reading task IDs from it", layout.name, layout.option,
                "off" if layout.option == "context-info" else "on")

    def _not_recognised(self, size: int) -> None:
        self.counters.unrecognised_bytes += size
        self._unrecognised_run += size
        if self._unrecognised_run < UNRECOGNISED_WARN_BYTES:
            return
        options = unusual_options(self.tracing_dir)
        hint = ("; the tracing instance has " + ", ".join(options)) if options else (
            "; is options/bin on, or options/context-info off with a tracer that does "
            "not print PID=?")
        self._unrecognised.problem(
            "unrecognised", logging.WARNING, "%d bytes arrived from %s but no trace line in "
            "them could be recognised, so no task is seen%s (warning once until lines are "
            "recognised again)", self._unrecognised_run, self.path, hint)
