"""The trace feed: the loop's one trace component, holding the current source.

It chooses the source for `trace.format` and `trace.pipe`, keeps the
counters across sources, swaps in a new source when a reload changes the
trace settings, and falls back to the text reader when the binary one finds
it cannot work here — so the loop never needs to know which reader runs.

`trace.format`:

* "text": trace_pipe's text (`text_reader`).
* "raw": the per-CPU binary ring buffer beside trace_pipe (`raw_reader`).
* "auto" (the default): raw when `trace.pipe` is the kernel's trace_pipe on
  tracefs, or does not exist yet (tracefs may be mounted later); text for a
  FIFO or any other file.

Whenever raw turns out not to work (not tracefs after all, a kernel without
the raw files or their layout, no permission) the feed says so in one line
and reads the text instead: never nothing.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Callable, Collection

from ..config.schema import TraceConfig
from ..core.component import Component
from .raw_reader import RawTraceSource
from .source import OnTids, TraceCounters, TraceSource
from .text_reader import TextTraceSource
from .tracefs import is_tracefs_pipe, resolve_pipe

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)

SourceFactory = Callable[[TraceConfig, Callable[[], float], OnTids, TraceCounters], TraceSource]


def choose_format(config: TraceConfig) -> str:
    """"raw" or "text" for `trace.format` and what `trace.pipe` points at now."""
    if config.format != "auto":
        return config.format
    path = resolve_pipe(config.pipe)
    try:
        st = os.stat(path)
    except OSError:
        return "raw"  # not there (yet): raw waits for it, and reads text if it is a FIFO
    return "raw" if is_tracefs_pipe(path, st) else "text"


def make_source(config: TraceConfig, clock: Callable[[], float], on_tids: OnTids,
                counters: TraceCounters) -> TraceSource:
    if choose_format(config) == "raw":
        return RawTraceSource(config.pipe, clock, on_tids, counters)
    return TextTraceSource(config.pipe, clock, on_tids, counters)


class TraceFeed(Component):
    name = "trace"

    def __init__(self, config: TraceConfig, clock: Callable[[], float], on_tids: OnTids,
                 factory: SourceFactory = make_source) -> None:
        self._config = config
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
        opened = self.source.open()
        return self._fall_back() if self.source.unusable else opened

    def watched_fds(self) -> Collection[int]:
        return self.source.watched_fds()

    def on_readable(self, fd: int) -> None:
        self.source.on_readable(fd)

    def fd_failed(self, fd: int, exc: OSError) -> None:
        self.source.fd_failed(fd, exc)

    def next_deadline(self) -> float:
        return self.source.next_deadline()

    def run_due(self, now: float) -> None:
        self.source.run_due(now)  # may (re)open the source
        if self.source.unusable:
            self._fall_back()

    def liveness_check(self) -> None:
        """One of the liveness pass's checks (service/daemon.py): CPU hotplug, lost events."""
        self.source.liveness_check()

    def reconfigure(self, old: Config, new: Config) -> bool:
        if old.trace != new.trace:
            self._config = new.trace
            self.source.close()
            self.source = self._factory(new.trace, self._clock, self._on_tids, self.counters)
            self.open()
        return False

    def close(self) -> None:
        self.source.close()

    # --- falling back to text ------------------------------------------------------------------

    def _fall_back(self) -> bool:
        """The current source can never work here: read the text instead (one log line)."""
        why = self.source.unusable
        self.source.close()
        self.source = TextTraceSource(self._config.pipe, self._clock, self._on_tids,
                                      self.counters)
        asked = self._config.format == "raw"
        log.log(logging.WARNING if asked else logging.INFO,
                "%s: cannot read the binary ring buffer (%s); reading %s as text instead",
                "trace.format = raw" if asked else "trace.format = auto", why,
                self.source.path)
        return self.source.open()
