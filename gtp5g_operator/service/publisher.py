"""What the daemon tells the outside, all from one snapshot: the STATUS= line,
state.json, health.json (/health), the metrics text (/metrics and the
node-exporter textfile) and SIGUSR1's log lines.

`snapshot()` builds the state once from the loop's parts; every output is a
rendering of it, so they cannot disagree.  The publisher also keeps what only
it needs: the read-back verdict (`core.boost_verdict`, said once per
episode), the push and reload counts, and the two histograms.  Only the
loop's own thread calls it.
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple

from .. import __version__
from ..core.boost_verdict import BoostReporter, BoostVerdict, not_verified
from ..core.component import NEVER, Component
from ..core.kept_file import KeptFile
from ..core.readback import Comparison
from ..core.sched_ext import SchedulerState
from ..core.schedstat_text import report_json, status_note
from ..core.words import one_line
from .metrics import Histogram, render
from .pusher import PushResult
from .runtime_files import record_textfile
from .runtime_names import HEALTH_FILE, METRICS_FILE, STATE_FILE

if TYPE_CHECKING:
    from ..config import Config
    from .daemon import Daemon

log = logging.getLogger(__name__)

MAX_PENDING = 65536  # new tasks awaiting their first successful push (detect-to-push)
# A change published by nothing else (below) waits this long: a push, due COALESCE after
# a change of the tracked set, publishes it itself; and a churning set publishes at most
# this often while pushes are held back.
SETTLE = 0.1
CLOCK_STEP = 1.0  # seconds the wall clock must move against the monotonic one to be a step


class WallTime:
    """The wall-clock time of a monotonic one, as the wall clock reads now.

    The loop times everything on the monotonic clock; a wall-clock time is made only
    when published.  One taken when a thing happened is in the terms of that moment's
    wall clock, which NTP steps (by hours or years after a boot without a working RTC)
    or an admin sets: `status` said "running since 2024-12-07 (17520h ago)" of a
    daemon started 6 s before NTP stepped the clock two years forward, and the metrics'
    last-success time was as far off.  The price: time the monotonic clock did not count
    (a suspend, a paused VM, then a step) is taken for such a correction too, and the
    times before it show later by its length; from inside, the two look alike, and a
    gNB server neither sleeps nor pauses."""

    def __init__(self, clock: Callable[[], float], wall_clock: Callable[[], float]) -> None:
        self._clock, self._wall = clock, wall_clock
        self._offset = wall_clock() - clock()

    def of(self, mono: float) -> float:
        offset = self._wall() - self._clock()
        # Kept until the clock steps: a value moved by every reading (or by NTP's slewing,
        # 0.5 ms/s at most) would rewrite state.json at every publish.
        if abs(offset - self._offset) > CLOCK_STEP:
            self._offset = offset
        return mono + self._offset


class Publisher(Component):
    name = "publisher"

    def __init__(self, parts: Daemon, directory: str, clock: Callable[[], float],
                 wall_clock: Callable[[], float]) -> None:
        self.parts = parts
        self._clock = clock
        self._wall = wall_clock
        self._wall_time = WallTime(clock, wall_clock)
        self.started_mono = clock()
        self.state = KeptFile(os.path.join(directory, STATE_FILE))
        self._metrics_text = KeptFile(os.path.join(directory, METRICS_FILE))
        self._health = KeptFile(os.path.join(directory, HEALTH_FILE))
        self._metrics_out: List[KeptFile] = []  # where the metrics text goes: set below
        self.histograms = {"push_duration_seconds": Histogram(),
                           "detect_to_push_seconds": Histogram()}
        self.counts: Dict[str, Dict[str, int]] = {"pushes": {"ok": 0, "error": 0},
                                                  "reloads": {"ok": 0, "error": 0}}
        self._pending: Dict[int, float] = {}  # tid -> when first seen (monotonic)
        self.last_success_mono: Optional[float] = None
        self.rejected_mono: Optional[float] = None  # the last reload's, until one is accepted
        self.boost = BoostReporter(logging.getLogger("gtp5g_operator.readback"),
                                   parts.config.strategy.resync_interval, clock)
        self.verdict: BoostVerdict = not_verified("nothing written yet")
        # The last read-back and the scheduler state its verdict was judged with: the
        # verdict is judged again when the scheduler changes between pushes.
        self._readback: Optional[Tuple[Comparison, str]] = None
        self._judged_with: Optional[SchedulerState] = None
        self._published: Tuple[int, int, bool, str] = (-1, -1, False, "")  # see _facts
        self._due = NEVER
        self.configure_metrics(parts.config)

    # --- configuration -------------------------------------------------------------------

    def configure_metrics(self, config: Config) -> None:
        m = config.metrics
        # metrics.prom is the endpoint's alone: kept only while there is one, so that a
        # reload that turns it off leaves no frozen copy behind (as a start without it).
        served = [self._metrics_text] if m.listen else []
        if not served:
            self._metrics_text.remove()
        # The textfile's directory is node-exporter's (--collector.textfile.directory):
        # never made here.  Made, a typo in it ("node_exporter") gave a file nobody
        # read and no log line (run by hand), or "Read-only file system" under the unit.
        self._metrics_out = served + ([KeptFile(m.textfile, consequence=" (metrics.textfile)",
                                                make_directory=False)]
                                      if m.textfile else [])
        before = record_textfile(self.parts.state_directory, m.textfile)  # for the purge
        if before and before != m.textfile:  # ours, and no longer kept up to date
            KeptFile(before).remove()

    def reconfigure(self, old: Config, new: Config) -> bool:
        if old.metrics != new.metrics:
            self.configure_metrics(new)
        self.boost.grace = new.strategy.resync_interval
        return False

    # --- the component's face ---------------------------------------------------------------

    def _facts(self) -> Tuple[int, int, bool, str]:
        """What changes between pushes and liveness passes, cheaply read: the tracked set
        (changed while a failing API holds pushes back) and the trace source opening or
        closing.  Published only by the next push or liveness pass, state.json, /health
        and the metrics said "open" and listed an exited gNB for up to
        strategy.liveness_interval, while the log and the watchdog's STATUS= said otherwise."""
        p = self.parts
        return (p.tracker.generation, p.tracker.task_count, p.trace.source.is_open,
                p.trace.problem)

    def next_deadline(self) -> float:
        if self._facts() == self._published:
            self._due = NEVER
        elif self._due == NEVER:
            self._due = self._clock() + SETTLE
        return self._due

    def run_due(self, now: float) -> None:
        self.publish()

    # --- events from the loop -------------------------------------------------------------

    def tasks_added(self, tids: Iterable[int]) -> None:
        now = self._clock()
        for tid in tids:
            if len(self._pending) < MAX_PENDING:
                self._pending.setdefault(tid, now)

    def pushed(self, result: PushResult) -> None:
        self.counts["pushes"]["ok" if result.ok else "error"] += 1
        self.histograms["push_duration_seconds"].observe(result.duration)
        # Only the tasks this push covered can still be measured; the others exited.  Kept
        # whatever the outcome, an outage held every task a restarting gNB ever had (9,150
        # of them after 150 restarts, growing with the outage up to MAX_PENDING).
        self._pending = {t: seen for t, seen in self._pending.items() if t in result.tids}
        if result.ok:
            self.last_success_mono = result.at_mono
            for seen in self._pending.values():
                self.histograms["detect_to_push_seconds"].observe(result.at_mono - seen)
            self._pending.clear()
            self._readback = (None if result.comparison is None else
                              (result.comparison, result.readback_source))
            self._judged_with = self.parts.scheduler.state
            self.verdict = (self.boost.update(result.comparison, self._judged_with,
                                              result.readback_source)
                            if result.comparison is not None else
                            not_verified(result.readback_problem))
        else:  # what the scheduler lists now is unknown: never show an old read-back
            self._readback = None
            self.verdict = not_verified(f"the last push failed ({result.error_kind})")
        self.publish()

    def _rejudge(self) -> None:
        """The scheduler changed since the last read-back was judged: judge it again
        (the liveness pass publishes right after the scheduler watch reads sysfs)."""
        now = self.parts.scheduler.state
        if self._readback is None or now == self._judged_with:
            return
        self._judged_with = now
        self.verdict = self.boost.update(self._readback[0], now, self._readback[1])

    def reloaded(self, ok: bool) -> None:
        """A reload is over: its count (and, applied, its settings) published now.  A
        rejected one waited for the next push or liveness pass, up to
        strategy.liveness_interval: state.json and the metrics said no reload failed.
        A rejected one is also said by STATUS= and `status` until one is accepted: only
        the metrics' count and the journal said the files on disk were not running."""
        self.counts["reloads"]["ok" if ok else "error"] += 1
        self.rejected_mono = None if ok else self._clock()
        self.publish()

    # --- the snapshot ----------------------------------------------------------------------

    def snapshot(self) -> Dict[str, Any]:
        """The daemon's state now: what state.json holds and every output renders."""
        p = self.parts
        cfg, last, wall = p.config, p.pusher.last, self._wall_time.of
        return {
            "pid": os.getpid(),
            "version": __version__,
            "started_at": wall(self.started_mono),
            "config": {"path": cfg.source, "files": list(cfg.files),
                       "loaded_at": wall(p.loaded_mono),
                       "reload_rejected_at": (None if self.rejected_mono is None else
                                              wall(self.rejected_mono)),
                       "mode": cfg.strategy.mode, "targets": cfg.strategy.targets},
            "api": self._api(wall),
            "trace": {"path": p.trace.source.path, "format": p.trace.source.kind,
                      "open": p.trace.source.is_open,
                      "problem": p.trace.problem, **vars(p.trace.counters)},
            "scheduler": p.scheduler.describe(),
            "boost": self.verdict.state(),
            "cpu_wait": self._cpu_wait(),
            "processes": [
                {"tgid": v.tgid, "comm": v.comm, "exe": v.exe, "uid": v.uid,
                 "tids": list(v.tids), "thread_names": sorted(v.thread_names),
                 "since": wall(v.since)}
                for v in p.tracker.snapshot()],
            "last_push": None if last is None else {
                # at_mono: its age on this host, whatever steps the wall clock takes
                "ok": last.ok, "at": wall(last.at_mono), "at_mono": last.at_mono,
                "count": last.count,
                "duration_s": round(last.duration, 6), "error": last.error,
                "error_kind": last.error_kind},
            "last_success_at": (None if self.last_success_mono is None else
                                wall(self.last_success_mono)),
            "counts": self.counts,
        }

    def _api(self, wall: Callable[[float], float]) -> Dict[str, Any]:
        api = {**self.parts.pusher.writer.describe(), "url": self.parts.config.api.url,
               "credentials_obtained": self.parts.pusher.credentials_obtained()}
        if "token_expires_mono" in api:  # a flavor's, once detected
            expires = api.pop("token_expires_mono")
            api["token_expires_at"] = None if expires is None else wall(expires)
        return api

    def _cpu_wait(self) -> Dict[str, Any]:
        sampler = self.parts.cpu_wait
        return {"unavailable": sampler.unavailable,
                "lifetime": {name: c._asdict() for name, c in sorted(sampler.lifetime.items())},
                "last_window": [report_json(r) for r in sampler.reports.values()]}

    # --- renderings -------------------------------------------------------------------------

    def publish(self) -> None:
        """Refresh state.json, health.json, the metrics (each written only if changed) and
        STATUS=, all from one snapshot."""
        self._rejudge()
        self._published, self._due = self._facts(), NEVER
        snap = self.snapshot()
        self.parts.notifier.send("STATUS=" + self.status_line(snap))
        # rewritten when the state, not just its time stamp, changes
        self.state.write((json.dumps({**snap, "updated_at": self._wall()}, indent=1,
                                     sort_keys=True) + "\n").encode(),
                         json.dumps(snap, sort_keys=True))
        self._health.write((json.dumps(self.health(snap), sort_keys=True) + "\n").encode())
        if self._metrics_out:
            text = render(snap, self.histograms)
            for out in self._metrics_out:
                out.write(text)

    def health(self, snap: Dict[str, Any]) -> Dict[str, Any]:
        """What /health answers from (ages are computed by whoever reads it): the
        snapshot's summary, with the loop's monotonic times."""
        last, boost = snap["last_push"], snap["boost"]
        return {
            "tracked_processes": len(snap["processes"]),
            "tracked_tasks": sum(len(pr["tids"]) for pr in snap["processes"]),
            "started_mono": self.started_mono,
            "resync_interval": self.parts.config.strategy.resync_interval,
            "last_push": last and {k: last[k] for k in ("ok", "at", "at_mono", "error_kind")},
            "last_success_mono": self.last_success_mono,
            "api": {"flavor": snap["api"].get("flavor"), "url": snap["api"]["url"]},
            "trace": {k: snap["trace"][k] for k in ("format", "open", "problem", "lost_events")},
            "scheduler": snap["scheduler"],
            # a difference is not an outage of the operator: in the body, never the status
            "boost": {"verified": boost["verified"], "diagnosis": boost["diagnosis"],
                      **{k: len(boost.get(k) or []) for k in ("covered", "missing",
                                                              "foreign")}},
        }

    def status_line(self, snap: Optional[Dict[str, Any]] = None) -> str:
        """One line for systemctl status."""
        s = snap if snap is not None else self.snapshot()
        tasks = sum(len(pr["tids"]) for pr in s["processes"])
        text = f"tracking {len(s['processes'])} process(es), {tasks} task(s)"
        why = s["trace"]["problem"]
        if not s["trace"]["open"]:  # nothing new can be seen: say so where systemctl shows it
            text += "; trace source NOT OPEN" + (f" ({one_line(why, 160)})" if why else "")
        elif why:  # open, and the kernel records nothing into it
            text += f"; NO TRACE LINES ({one_line(why, 160)})"
        if self.rejected_mono is not None:
            text += "; last reload REJECTED: running the configuration of before"
        scheduler = self.parts.scheduler.status_note()
        if scheduler:
            text += "; " + scheduler
        text += f"; API {s['api'].get('flavor', '?')}"
        last = self.parts.pusher.last
        if last is None:
            return text + ", no push yet"
        age = max(0.0, self._clock() - last.at_mono)
        if not last.ok:
            return text + f", last push failed ({last.error_kind}) {age:.0f}s ago"
        text += f", last push ok ({last.count} entries) {age:.0f}s ago"
        if tasks:
            text += "; " + self.verdict.status_fragment()
        waits = status_note(self.parts.cpu_wait.reports.values())
        return text + ("; " + waits if waits else "")

    def report_lines(self) -> List[str]:
        """The state in a few log lines (SIGUSR1)."""
        state = self.snapshot()
        lines = [f"state: {self.status_line(state)}"]
        lines += [f"state: {key} {json.dumps(state[key], sort_keys=True)}"
                  for key in ("api", "trace", "scheduler", "boost", "cpu_wait")]
        lines += [f"state: process {pr['tgid']} ({pr['comm']}, exe {pr['exe'] or '?'}, "
                  f"uid {pr['uid']}) tasks {pr['tids']}" for pr in state["processes"]]
        return lines

    def close(self) -> None:
        for f in (self.state, self._metrics_text, self._health):
            f.remove()  # `status` then says: not running
