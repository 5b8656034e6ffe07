"""The trace feed: the loop's one trace component, holding the current source.

It keeps the counters across sources, swaps in a new source when a reload
changes the trace settings, and hands over to the next reader of `readers`
when the current one is `Unusable` here (the binary reader: not tracefs after
all, no raw files or layout, no permission), saying so in one line: the loop
never needs to know which reader runs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Collection, Sequence

from ..config.schema import AUTO, TraceConfig
from ..core.component import Component
from ..core.once import StateLog
from .readers import READERS, Reader, choose, first_able
from .source import OnTids, TraceCounters
from .tracefs import silenced

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)


class TraceFeed(Component):
    name = "trace"

    def __init__(self, config: TraceConfig, clock: Callable[[], float], on_tids: OnTids,
                 readers: Sequence[Reader] = READERS) -> None:
        self._config = config
        self._clock = clock
        self._on_tids = on_tids
        self._readers = readers
        self.counters = TraceCounters()
        self._bytes_at_pass = 0  # counters.bytes at the last liveness pass
        self._tracing = StateLog(log)
        self.source = choose(config, readers).create(config, clock, on_tids, self.counters)

    # --- what the reports read (and `source`'s kind, path, is_open) ----------------------

    @property
    def problem(self) -> str:
        """Why no gNB task can be seen now ("" when they can, or before the first try):
        the source is not open, or it is and the kernel records no tracer line (tracing
        off, the bpf_printk event off).  That one was said by the journal alone: state.json,
        /health, STATUS= and the trace_open metric (whose HELP says "0: no gNB task can be
        seen") all said the trace was fine."""
        return self._tracing.state if self.source.is_open else self.source.problem_now

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
        """One of the liveness pass's checks (service/daemon.py): CPU hotplug, lost events,
        and tracing or the bpf_printk event turned off (an open source that silently gets
        nothing)."""
        self.source.liveness_check()
        read, self._bytes_at_pass = self.counters.bytes - self._bytes_at_pass, self.counters.bytes
        if not self.source.is_open:
            return
        directory = self.source.tracing_dir
        silence = silenced(directory)
        if silence is not None and silence.event and read and silence.why != self._tracing.state:
            # Lines arrive with the event off (trace_marker's: a replay, the tests): it
            # stops none of them, so it is named only to a source that got nothing, and
            # once named, stays so until it is turned on (no flapping with the traffic).
            silence = None
        if silence is not None:
            self._tracing.problem(
                silence.why, logging.WARNING, "%s: the kernel records no gtp5g tracer line, "
                "so no gNB task can be seen; %s", silence.why, silence.fix)
        else:
            self._tracing.recovered("the kernel records trace lines in %s again", directory)

    def reconfigure(self, old: Config, new: Config) -> bool:
        if old.trace != new.trace:
            self._config = new.trace
            self.source.close()
            self.source = choose(new.trace, self._readers).create(
                new.trace, self._clock, self._on_tids, self.counters)
            self.open()
        return False

    def close(self) -> None:
        self.source.close()

    # --- falling back to text ------------------------------------------------------------------

    def _fall_back(self) -> bool:
        """The current source can never work here: the next reader takes over (one line)."""
        why, failed = self.source.unusable, type(self.source)
        self.source.close()
        later = self._readers[self._readers.index(failed) + 1:] or self._readers[-1:]
        reader = first_able(self.source.path, later)
        self.source = reader.create(self._config, self._clock, self._on_tids, self.counters)
        asked = self._config.format != AUTO
        log.log(logging.WARNING if asked else logging.INFO,
                "trace.format = %s: cannot read the %s trace (%s); reading %s with the %s "
                "reader instead", self._config.format, failed.kind, why, self.source.path,
                reader.kind)
        return self.source.open()
