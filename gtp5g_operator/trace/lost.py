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

Each CPU's loss is warned about once per episode; an episode ends after
`EPISODE_QUIET` seconds without a loss on that CPU (then one info line
with the episode's total).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Set

from .ringbuf import LOST_UNKNOWN
from .source import TraceCounters
from .tracefs import CpuStats

log = logging.getLogger(__name__)

EPISODE_QUIET = 10.0  # seconds without a loss on a CPU that end its episode

ReadStats = Callable[[int], Optional[CpuStats]]


@dataclass
class _Episode:
    started: float
    last: float  # when the last loss was seen
    lost: int


class LossCounter:
    def __init__(self, counters: TraceCounters, read_stats: ReadStats,
                 clock: Callable[[], float]) -> None:
        self.counters = counters
        self._read_stats = read_stats
        self._clock = clock
        self._seen: Dict[int, Optional[int]] = {}  # cpu -> stats total counted (None: no stats)
        self._flagged: Set[int] = set()
        self._episodes: Dict[int, _Episode] = {}

    def watch(self, cpu: int) -> None:
        """Start counting `cpu`'s losses from now on."""
        stats = self._read_stats(cpu)
        self._seen[cpu] = None if stats is None else stats.lost

    def forget(self, cpu: int) -> None:
        self._seen.pop(cpu, None)
        self._flagged.discard(cpu)

    def page_lost(self, cpu: int, lost: int) -> None:
        """A page of `cpu` said `lost` events (or LOST_UNKNOWN) were lost before it."""
        if self._seen.get(cpu) is not None:
            self._flagged.add(cpu)  # counted from stats at the end of the turn
        elif lost != LOST_UNKNOWN:
            self._add(cpu, lost)
        else:
            self._add(cpu, 0)  # no count anywhere: still an episode to warn about

    def settle(self) -> None:
        """End of a turn: count the CPUs whose pages were flagged."""
        if self._flagged:
            for cpu in sorted(self._flagged):
                self._from_stats(cpu)
            self._flagged.clear()

    def poll(self) -> None:
        """Liveness pass: read every CPU's stats and end the quiet episodes."""
        for cpu in sorted(self._seen):
            self._from_stats(cpu)
        now = self._clock()
        for cpu, episode in list(self._episodes.items()):
            if now - episode.last >= EPISODE_QUIET:
                del self._episodes[cpu]
                log.info("no trace events dropped on CPU %d for %.0f s; %d were dropped in "
                         "that episode (%.0f s long)", cpu, now - episode.last, episode.lost,
                         episode.last - episode.started)

    def _from_stats(self, cpu: int) -> None:
        seen = self._seen.get(cpu)
        if seen is None:
            return
        stats = self._read_stats(cpu)
        if stats is None:
            return
        self._seen[cpu] = stats.lost  # below `seen`: the buffer was reset (e.g. `> trace`)
        if stats.lost > seen:
            self._add(cpu, stats.lost - seen)

    def _add(self, cpu: int, lost: int) -> None:
        self.counters.lost_events += lost
        now = self._clock()
        episode = self._episodes.get(cpu)
        if episode is not None:
            episode.last = now
            episode.lost += lost
            return
        self._episodes[cpu] = _Episode(now, now, lost)
        log.warning("the kernel dropped %s trace events on CPU %d: the ring buffer is too "
                    "small for this stream or the daemon is capped too hard (counted in "
                    "trace_lost_events; warning once per episode)",
                    lost if lost else "an unknown number of", cpu)
