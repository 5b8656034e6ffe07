"""Counting the trace events the kernel threw away before the raw reader got them.

A page of `trace_pipe_raw` says that events were lost before it (the
RB_MISSED_EVENTS flag), and usually how many (RB_MISSED_STORED: a count
after the data) — but a page full to the last byte has no room for the count.
The kernel's per-CPU `stats` file has the exact totals (`overrun`, plus
`commit overrun` and `dropped events`, which never flag a page).  So:

* a flagged page makes the CPU's `stats` be read once at the end of the
  turn (at most one small file read per CPU per turn, and only while events
  are being lost), and the CPU's loss is its total's growth since the
  reader opened: exact, never counted twice, right also for pages whose
  count was not stored;
* every liveness pass reads every CPU's `stats` too (a few µs per CPU),
  which catches the losses that never flag a page;
* where `stats` cannot be read, the pages' stored counts are summed.

A loss is warned about once per episode, whichever CPUs it hits (the
causes, a ring too small or a reader capped too hard, are the host's); an
episode ends after `EPISODE_QUIET` seconds without a loss on any CPU (then
one info line with the episode's total and its CPUs).

The same `stats` show events taken by another reader: a read is destructive,
and the kernel refuses a second `trace_pipe` but not a second reader of a
CPU's `trace_pipe_raw` (trace-cmd, a `cat`), which then silently takes its
share of the gNB's lines.  Every liveness pass compares the growth of the
CPUs' `read events` with the events this reader consumed meanwhile; more
than `SHARED_SLACK` of them read by someone else is warned about once per
episode, which ends (one info line) after `EPISODE_QUIET` seconds in which
nobody else took any.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Set, Tuple

from .source import TraceCounters
from .tracefs import (
    LOOP_WALK_BUDGET,
    CpuStats,
    holders,
    named,
    other_recording,
    read_cpu_stats,
    reader_files,
)

log = logging.getLogger(__name__)

EPISODE_QUIET = 10.0  # seconds without a loss on any CPU that end the episode
SHOWN_CPUS = 8  # CPUs named in the line that ends an episode
# events read by others before saying so: more than the text reader can hold back (a
# page of formatted text in the kernel, a partial line here); the raw reader holds none
SHARED_SLACK = 256


@dataclass
class _Episode:
    started: float
    last: float  # when the last loss was seen
    lost: int
    cpus: Set[int]


def cpu_list(cpus: Set[int]) -> str:
    shown = sorted(cpus)
    if len(shown) == 1:
        return f"CPU {shown[0]}"
    more = ", …" if len(shown) > SHOWN_CPUS else ""
    return f"{len(shown)} CPUs ({', '.join(map(str, shown[:SHOWN_CPUS]))}{more})"


class LossCounter:
    def __init__(self, counters: TraceCounters, tracing_dir: str,
                 clock: Callable[[], float], counts_events: Callable[[], bool]) -> None:
        """`counts_events`: whether `counters.lines` grows by one per event read now (the
        text reader's payload-PID layout counts PID= fields instead)."""
        self.counters = counters
        self._dir = tracing_dir
        self._clock = clock
        self._counts_events = counts_events
        self._seen: Dict[int, Optional[int]] = {}  # cpu -> stats total counted (None: no stats)
        self._flagged: Set[int] = set()
        # One for the host: per CPU, a flood that overran the rings of a 64-CPU host
        # logged 64 warnings and 64 info lines an episode, with one cause.
        self._episode: Optional[_Episode] = None
        self._read: Dict[int, int] = {}  # cpu -> its stats' read events at the last pass
        self._consumed = self._own()  # what this reader had consumed at the last pass
        self._taken = 0  # events read by someone else in this episode (bounded below)
        self._taken_at = 0.0  # when _taken last grew
        self._shared_said = False

    def watch(self, cpu: int) -> None:
        """Start counting `cpu`'s losses from now on."""
        stats = read_cpu_stats(self._dir, cpu)
        self._seen[cpu] = None if stats is None else stats.lost
        if stats is not None:
            self._read[cpu] = stats.read_events

    def forget(self, cpu: int) -> None:
        self._seen.pop(cpu, None)
        self._read.pop(cpu, None)
        self._flagged.discard(cpu)

    def page_lost(self, cpu: int, lost: int) -> None:
        """A page of `cpu` said `lost` events (or LOST_UNKNOWN) were lost before it."""
        if self._seen.get(cpu) is not None:
            self._flagged.add(cpu)  # counted from stats at the end of the turn
        else:  # LOST_UNKNOWN: no count anywhere, still an episode to warn about
            self._add(cpu, max(0, lost))

    def settle(self) -> None:
        """End of a turn: count the CPUs whose pages were flagged."""
        if self._flagged:
            for cpu in sorted(self._flagged):
                self._from_stats(cpu)
            self._flagged.clear()

    def poll(self) -> None:
        """Liveness pass: read every CPU's stats, end the quiet episodes, and see
        whether anyone else reads the ring."""
        read = 0
        for cpu in sorted(self._seen):
            stats = self._from_stats(cpu)  # None, or a CPU `watch` read stats of
            if stats is not None:
                # below the last: the buffer was reset (`> trace`)
                read += max(0, stats.read_events - self._read[cpu])
                self._read[cpu] = stats.read_events
        self._shared(read)
        now = self._clock()
        episode = self._episode
        if episode is not None and now - episode.last >= EPISODE_QUIET:
            self._episode = None
            log.info("no trace events dropped for %.0f s; %d were dropped in that episode "
                     "(%.0f s long, on %s)", now - episode.last, episode.lost,
                     episode.last - episode.started, cpu_list(episode.cpus))

    def _from_stats(self, cpu: int) -> Optional[CpuStats]:
        seen = self._seen.get(cpu)
        if seen is None:
            return None
        stats = read_cpu_stats(self._dir, cpu)
        if stats is None:
            return None
        self._seen[cpu] = stats.lost  # below `seen`: the buffer was reset (e.g. `> trace`)
        if stats.lost > seen:
            self._add(cpu, stats.lost - seen)
        return stats

    def _own(self) -> Tuple[int, int]:
        c = self.counters
        return c.lines + c.dropped_lines, c.unrecognised_bytes

    def _shared(self, read: int) -> None:
        """`read` events left the ring since the last pass: were they all ours?"""
        (lines, unrecognised), (last_lines, last_unrecognised) = self._own(), self._consumed
        self._consumed = (lines, unrecognised)
        if unrecognised != last_unrecognised or not self._counts_events():
            return  # lines that were read but not counted: no judgement this pass
        # Kept at or above 0: lines held back in one pass are counted in the next, and
        # events of several lines make ours exceed the kernel's count.
        taken, now = max(0, self._taken + read - (lines - last_lines)), self._clock()
        if taken > self._taken:
            self._taken_at = now
        self._taken = taken
        if self._shared_said and now - self._taken_at >= EPISODE_QUIET:
            # Said once for the daemon's life, a reader stopped was never said, and the
            # next one (another day, another `cat`) took its share of the gNB's lines
            # without a word.
            log.info("no other reader has taken trace events from this ring for %.0f s "
                     "(%d were taken in that episode)", now - self._taken_at, self._taken)
            self._taken, self._shared_said = 0, False
        if self._taken > SHARED_SLACK and not self._shared_said:
            self._shared_said = True
            # Named as an EBUSY holder is (psmisc's fuser is not on every host); the
            # /proc walk is done once an episode.
            found = holders(reader_files(self._dir), skip=os.getpid(), budget=LOOP_WALK_BUDGET)
            log.warning("another reader is taking trace events from this ring (%d of them "
                        "were read but not by this daemon): each event goes to one reader, so "
                        "gNB tasks can be missed; %s (warning once per episode)", self._taken,
                        f"it is {named(found)}" if found else
                        "`gtp5g-operator doctor` run as root names it")

    def _add(self, cpu: int, lost: int) -> None:
        self.counters.lost_events += lost
        now = self._clock()
        episode = self._episode
        if episode is not None:
            episode.last = now
            episode.lost += lost
            episode.cpus.add(cpu)
            return
        self._episode = _Episode(now, now, lost, {cpu})
        # Read only here (once per episode): another tool's tracer or events flood the
        # ring with records that are read like the gNB's, and are then the likelier cause.
        other = other_recording(self._dir)
        log.warning("the kernel dropped %s trace events on CPU %d: the ring buffer is too "
                    "small for this stream or the daemon is capped too hard%s (counted in "
                    "trace_lost_events; warning once per episode, for all CPUs)",
                    lost if lost else "an unknown number of", cpu,
                    f"; the instance also records {other}, which fill the ring too"
                    if other else "")
