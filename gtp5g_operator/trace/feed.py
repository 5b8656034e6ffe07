"""The trace feed: the loop's one trace component, holding the current source.

It chooses the source for `trace.format` and `trace.pipe`, keeps the
counters across sources, and swaps in a new source when a reload changes
the trace settings, so the loop never needs to know which reader runs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Collection

from ..config.schema import TraceConfig
from ..core.component import Component
from .source import OnTids, TraceCounters, TraceSource
from .text_reader import TextTraceSource

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)

SourceFactory = Callable[[TraceConfig, Callable[[], float], OnTids, TraceCounters], TraceSource]


def make_source(config: TraceConfig, clock: Callable[[], float], on_tids: OnTids,
                counters: TraceCounters) -> TraceSource:
    return TextTraceSource(config.pipe, clock, on_tids, counters)


class TraceFeed(Component):
    name = "trace"

    def __init__(self, config: TraceConfig, clock: Callable[[], float], on_tids: OnTids,
                 factory: SourceFactory = make_source) -> None:
        self._clock = clock
        self._on_tids = on_tids
        self._factory = factory
        self.counters = TraceCounters()
        self.source = factory(config, clock, on_tids, self.counters)

    # --- what the reports read ------------------------------------------------------------

    @property
    def kind(self) -> str:
        return self.source.kind

    @property
    def path(self) -> str:
        return self.source.path

    @property
    def is_open(self) -> bool:
        return self.source.is_open

    # --- the component's face, delegated ---------------------------------------------------

    def open(self) -> bool:
        return self.source.open()

    def watched_fds(self) -> Collection[int]:
        return self.source.watched_fds()

    def on_readable(self, fd: int) -> None:
        self.source.on_readable(fd)

    def fd_failed(self, fd: int, exc: OSError) -> None:
        self.source.fd_failed(fd, exc)

    def next_deadline(self) -> float:
        return self.source.next_deadline()

    def run_due(self, now: float) -> None:
        self.source.run_due(now)

    def reconfigure(self, old: Config, new: Config) -> bool:
        if old.trace != new.trace:
            self.source.close()
            self.source = self._factory(new.trace, self._clock, self._on_tids, self.counters)
            self.source.open()
        return False

    def close(self) -> None:
        self.source.close()
