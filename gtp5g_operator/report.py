"""What the daemon tells the outside: STATUS= line, state.json, metrics.

The loop calls in after a trace turn, after a push and when anything else
changes; this module turns its parts into the three views.  It reads the
loop's objects only from the loop's own thread.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Iterable, List, Optional

from . import __version__
from .config import Config
from .metrics import Metrics
from .push import Pusher, PushResult
from .state import StateFile
from .tracepipe import TraceSource
from .tracker import TaskTracker

MAX_PENDING = 65536  # new tasks awaiting their first successful push (detect-to-push)


class Reporter:
    def __init__(self, metrics: Optional[Metrics], state: StateFile,
                 clock: Callable[[], float], wall_clock: Callable[[], float]) -> None:
        self.metrics = metrics
        self.state = state
        self._clock = clock
        self._wall = wall_clock
        self._started_at = wall_clock()
        self._counted: Dict[str, int] = {}  # counter name -> value already exported
        self._pending: Dict[int, float] = {}  # tid -> when first seen (monotonic)

    # --- events from the loop ---------------------------------------------------

    def trace_turn(self, source: TraceSource) -> None:
        if self.metrics is None:
            return
        m = self.metrics
        self._add(m.trace_lines, "lines", source.lines)
        self._add(m.trace_bytes, "bytes", source.bytes)
        self._add(m.trace_dropped, "dropped", source.framer.dropped_lines)
        self._add(m.trace_reopens, "reopens", source.reopens)

    def tasks_added(self, tids: Iterable[int]) -> None:
        if self.metrics is None:
            return
        now = self._clock()
        for tid in tids:
            if len(self._pending) < MAX_PENDING:
                self._pending.setdefault(tid, now)

    def pushed(self, result: PushResult, ids: List[int], pusher: Pusher) -> None:
        if self.metrics is None:
            return
        m = self.metrics
        m.pushes.labels("ok" if result.ok else "error").inc()
        m.push_duration.observe(result.duration)
        self._add(m.token_refreshes, "tokens", pusher.tokens_obtained)
        if result.ok:
            m.last_success.set(result.at_wall)
            pushed = set(ids)
            for tid, seen in self._pending.items():
                if tid in pushed:
                    m.detect_to_push.observe(result.at_mono - seen)
            self._pending.clear()

    def reloaded(self, ok: bool) -> None:
        if self.metrics is not None:
            self.metrics.config_reloads.labels("ok" if ok else "error").inc()

    def _add(self, counter: Any, name: str, total: int) -> None:
        delta = total - self._counted.get(name, 0)
        if delta > 0:
            counter.inc(delta)
            self._counted[name] = total

    # --- publishing ---------------------------------------------------------------

    def publish(self, config: Config, loaded_at: float, tracker: TaskTracker,
                source: TraceSource, pusher: Optional[Pusher]) -> None:
        """Refresh gauges, the textfile and state.json (each only if in use/changed)."""
        if self.metrics is not None:
            self.metrics.tracked_processes.set(len(tracker.processes))
            self.metrics.tracked_tasks.set(tracker.task_count)
            self.trace_turn(source)
            self.metrics.write_textfile()
        self.state.write(self.snapshot(config, loaded_at, tracker, source, pusher), self._wall())

    def snapshot(self, config: Config, loaded_at: float, tracker: TaskTracker,
                 source: TraceSource, pusher: Optional[Pusher]) -> Dict[str, Any]:
        last = pusher.last if pusher else None
        token = pusher.token if pusher else None
        return {
            "pid": os.getpid(),
            "version": __version__,
            "started_at": self._started_at,
            "config": {"path": config.source, "loaded_at": loaded_at,
                       "mode": config.strategy.mode, "targets": config.strategy.targets},
            "api": {"url": config.api.url,
                    "token_expires_at": token.expires_at if token else None},
            "trace": {"path": source.path, "open": source.fd is not None,
                      "lines": source.lines, "dropped_lines": source.framer.dropped_lines},
            "processes": [
                {"tgid": tgid, "comm": p.info.comm, "exe": p.info.exe, "uid": p.info.uid,
                 "tids": sorted(p.tasks), "since": p.since}
                for tgid, p in sorted(tracker.processes.items())],
            "last_push": None if last is None else {
                "ok": last.ok, "at": last.at_wall, "count": last.count,
                "duration_s": round(last.duration, 6), "error": last.error},
        }


def status_line(tracker: TaskTracker, pusher: Optional[Pusher], now: float) -> str:
    """One line for systemctl status."""
    text = (f"tracking {len(tracker.processes)} process(es), {tracker.task_count} task(s)")
    last = pusher.last if pusher else None
    if last is None:
        return text + "; no push yet"
    age = max(0.0, now - last.at_mono)
    if last.ok:
        return text + f"; last push ok ({last.count} strategies) {age:.0f}s ago"
    return text + f"; last push failed ({last.error_kind}) {age:.0f}s ago"
