"""What the daemon tells the outside: the STATUS= line, state.json, metrics,
health.json — built from the loop's parts, only from the loop's own thread."""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Protocol

from .. import __version__
from ..core.component import Component
from .metrics import Metrics
from .pusher import PushResult
from .runtime_files import HEALTH_FILE, METRICS_FILE, PublishedFile, StateFile

if TYPE_CHECKING:
    from ..config import Config
    from ..core.tracker import TaskTracker
    from ..trace.feed import TraceFeed
    from .pusher import Pusher
    from .scheduler_watch import SchedulerWatch

log = logging.getLogger(__name__)

MAX_PENDING = 65536  # new tasks awaiting their first successful push (detect-to-push)


class Parts(Protocol):
    """The daemon as the publisher sees it."""

    config: Config
    loaded_at: float
    tracker: TaskTracker
    trace: TraceFeed
    pusher: Pusher
    scheduler: SchedulerWatch


class Publisher(Component):
    name = "publisher"

    def __init__(self, parts: Parts, directory: str, clock: Callable[[], float],
                 wall_clock: Callable[[], float]) -> None:
        self.parts = parts
        self._clock = clock
        self._wall = wall_clock
        self.started_at = wall_clock()
        self.started_mono = clock()
        self.state = StateFile(directory)
        self._metrics_text = PublishedFile(os.path.join(directory, METRICS_FILE))
        self._health = PublishedFile(os.path.join(directory, HEALTH_FILE))
        self._textfile: Optional[PublishedFile] = None
        self.metrics: Optional[Metrics] = None
        self._counted: Dict[str, int] = {}  # counter name -> value already exported
        self._pending: Dict[int, float] = {}  # tid -> when first seen (monotonic)
        self.last_success_mono: Optional[float] = None
        self.configure_metrics(parts.config)

    # --- configuration -------------------------------------------------------------------

    def configure_metrics(self, config: Config) -> None:
        m = config.metrics
        if (m.listen or m.textfile) and self.metrics is None:
            self.metrics = Metrics()
        self._textfile = PublishedFile(m.textfile) if m.textfile else None

    def reconfigure(self, old: Config, new: Config) -> bool:
        if old.metrics != new.metrics:
            self.configure_metrics(new)
        return False

    # --- events from the loop -------------------------------------------------------------

    def tasks_added(self, tids: Iterable[int]) -> None:
        if self.metrics is None:
            return
        now = self._clock()
        for tid in tids:
            if len(self._pending) < MAX_PENDING:
                self._pending.setdefault(tid, now)

    def pushed(self, result: PushResult) -> None:
        if result.ok:
            self.last_success_mono = result.at_mono
        if self.metrics is not None:
            self._push_metrics(self.metrics, result)
        self.publish()

    def _push_metrics(self, m: Metrics, result: PushResult) -> None:
        m.pushes.labels("ok" if result.ok else "error").inc()
        m.push_duration.observe(result.duration)
        if result.ok:
            m.last_success.set(result.at_wall)
            for tid, seen in self._pending.items():
                if tid in result.tids:
                    m.detect_to_push.observe(result.at_mono - seen)
            self._pending.clear()

    def reloaded(self, ok: bool) -> None:
        if self.metrics is not None:
            self.metrics.config_reloads.labels("ok" if ok else "error").inc()

    # --- publishing --------------------------------------------------------------------------

    def publish(self) -> None:
        """Refresh metrics, state.json and health.json (each written only if changed)."""
        if self.metrics is not None:
            self._refresh_metrics(self.metrics)
            text = self.metrics.render()
            self._metrics_text.write(text)
            if self._textfile is not None:
                self._textfile.write(text)
        self.state.write_state(self.snapshot(), self._wall())
        self._health.write((json.dumps(self.health(), sort_keys=True) + "\n").encode())

    def _refresh_metrics(self, m: Metrics) -> None:
        p = self.parts
        m.tracked_processes.set(len(p.tracker.processes))
        m.tracked_tasks.set(p.tracker.task_count)
        c = p.trace.counters
        for counter, name, total in (
                (m.trace_lines, "lines", c.lines), (m.trace_bytes, "bytes", c.bytes),
                (m.trace_dropped, "dropped", c.dropped_lines),
                (m.trace_reopens, "reopens", c.reopens), (m.trace_lost, "lost", c.lost_events),
                (m.trace_unrecognised, "unrecognised", c.unrecognised_bytes),
                (m.token_refreshes, "tokens", self._api().get("credentials_obtained", 0))):
            delta = total - self._counted.get(name, 0)
            if delta > 0:
                counter.inc(delta)
                self._counted[name] = total
        m.trace_reader.info({"format": p.trace.kind, "path": p.trace.path})
        m.api_flavor.info({"flavor": str(self._api().get("flavor", "?"))})
        p.scheduler.export(m.scheduler_enabled)

    def _api(self) -> Dict[str, Any]:
        return self.parts.pusher.writer.describe()

    def snapshot(self) -> Dict[str, Any]:
        p = self.parts
        cfg, last, c = p.config, p.pusher.last, p.trace.counters
        return {
            "pid": os.getpid(),
            "version": __version__,
            "started_at": self.started_at,
            "config": {"path": cfg.source, "loaded_at": p.loaded_at,
                       "mode": cfg.strategy.mode, "targets": cfg.strategy.targets},
            "api": {**self._api(), "url": cfg.api.url},
            "trace": {"path": p.trace.path, "format": p.trace.kind, "open": p.trace.is_open,
                      "lines": c.lines, "dropped_lines": c.dropped_lines,
                      "lost_events": c.lost_events, "reopens": c.reopens,
                      "unrecognised_bytes": c.unrecognised_bytes},
            "scheduler": p.scheduler.describe(),
            "processes": [
                {"tgid": v.tgid, "comm": v.comm, "exe": v.exe, "uid": v.uid,
                 "tids": list(v.tids), "thread_names": sorted(v.thread_names),
                 "since": v.since}
                for v in p.tracker.snapshot()],
            "last_push": None if last is None else {
                "ok": last.ok, "at": last.at_wall, "count": last.count,
                "duration_s": round(last.duration, 6), "error": last.error,
                "error_kind": last.error_kind},
        }

    def health(self) -> Dict[str, Any]:
        """What /health answers from (ages are computed by whoever reads it)."""
        p = self.parts
        last = p.pusher.last
        return {
            "tracked_processes": len(p.tracker.processes),
            "tracked_tasks": p.tracker.task_count,
            "started_mono": self.started_mono,
            "resync_interval": p.config.strategy.resync_interval,
            "last_push": None if last is None else {
                "ok": last.ok, "at": last.at_wall, "at_mono": last.at_mono,
                "error_kind": last.error_kind},
            "last_success_mono": self.last_success_mono,
            "api": {"flavor": self._api().get("flavor"), "url": p.config.api.url},
            "trace": {"format": p.trace.kind, "open": p.trace.is_open,
                      "lost_events": p.trace.counters.lost_events},
            "scheduler": p.scheduler.describe(),
        }

    def status_line(self) -> str:
        """One line for systemctl status."""
        p = self.parts
        text = f"tracking {len(p.tracker.processes)} process(es), {p.tracker.task_count} task(s)"
        scheduler = p.scheduler.status_note()
        if scheduler:
            text += "; " + scheduler
        last = p.pusher.last
        text += f"; API {self._api().get('flavor', '?')}"
        if last is None:
            return text + ", no push yet"
        age = max(0.0, self._clock() - last.at_mono)
        if last.ok:
            return text + f", last push ok ({last.count} entries) {age:.0f}s ago"
        return text + f", last push failed ({last.error_kind}) {age:.0f}s ago"

    def report_lines(self) -> List[str]:
        """The state in a few log lines (SIGUSR1)."""
        state = self.snapshot()
        lines = [f"state: {self.status_line()}",
                 f"state: api {json.dumps(state['api'], sort_keys=True)}",
                 f"state: trace {json.dumps(state['trace'], sort_keys=True)}",
                 f"state: scheduler {json.dumps(state['scheduler'], sort_keys=True)}"]
        lines += [f"state: process {pr['tgid']} ({pr['comm']}, exe {pr['exe'] or '?'}, "
                  f"uid {pr['uid']}) tasks {pr['tids']}" for pr in state["processes"]]
        return lines

    def close(self) -> None:
        for f in (self.state, self._metrics_text, self._health):
            f.remove()  # `status` then says: not running
