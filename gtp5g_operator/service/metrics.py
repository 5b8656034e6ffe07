"""Prometheus metrics: rendered from the one snapshot the loop publishes.

Off unless `metrics.listen` or `metrics.textfile` is set, and prometheus_client
is imported only then.  Nothing is mirrored: a custom collector turns the
snapshot (the same dict as state.json, built by `Publisher.snapshot`) and the
two histograms the loop keeps into metric families at each publish
(`Publisher.publish`).  The text goes to the textfile and to
the runtime directory, from where the endpoint process serves /metrics.
"""

from __future__ import annotations

import bisect
import itertools
from typing import Any, Dict, Iterator, List, Mapping, Sequence, Tuple

from .. import __version__
from ..core.words import obj

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
P = "gtp5g_operator_"
NS = 1e-9


class Histogram:
    """A histogram the loop observes into (the collector reads it)."""

    def __init__(self, buckets: Sequence[float] = DURATION_BUCKETS) -> None:
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> List[Tuple[str, int]]:
        return list(zip((*map(str, self.bounds), "+Inf"), itertools.accumulate(self.counts),
                        strict=True))


def _n(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else 0.0


class SnapshotCollector:
    """Metric families from the snapshot and the histograms (prometheus_client's
    custom-collector protocol: `collect()` yields families)."""

    def __init__(self, snapshot: Mapping[str, Any], histograms: Mapping[str, Histogram]) -> None:
        self.snap = snapshot
        self.histograms = histograms

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
            InfoMetricFamily,
        )

        s = self.snap
        trace, counts = obj(s.get("trace")), obj(s.get("counts"))
        # Tracked is not boosted (no scheduler, a failing API): the HELP said "boosted", and
        # a panel titled by it showed tasks boosted on a host whose strategies had no effect.
        yield GaugeMetricFamily(P + "tracked_processes", "gNB processes tracked, whose tasks "
                                "are written to the API (boosted only when the server "
                                "lists them and Gthulhu's scheduler runs: "
                                "scheduler_covered_tasks)",
                                value=len(s.get("processes") or []))
        yield GaugeMetricFamily(P + "tracked_tasks", "Tasks (threads) of the tracked "
                                "processes, written to the API",
                                value=sum(len(obj(p).get("tids") or []) for p in
                                          s.get("processes") or []))
        for key, name, text in (
                ("lines", "trace_lines", "Trace lines (text) or records (raw) read"),
                ("bytes", "trace_bytes", "Bytes read from the trace source"),
                ("dropped_lines", "trace_dropped_lines", "Over-long trace lines dropped"),
                ("reopens", "trace_reopens", "Times the trace source had to be (re)opened "
                                             "after a failure or EOF"),
                ("lost_events", "trace_lost_events", "Trace events the kernel overwrote "
                                                     "before they were read"),
                ("unrecognised_bytes", "trace_unrecognised_bytes", "Trace text in which no "
                                                                   "line could be recognised")):
            yield CounterMetricFamily(P + name, text, value=_n(trace.get(key)))
        yield InfoMetricFamily(P + "trace_reader", "The trace reader in use", value={
            "format": str(trace.get("format", "")), "path": str(trace.get("path", ""))})
        yield GaugeMetricFamily(P + "trace_open", "1 while the trace source is open and the "
                                "kernel records into it (0: no gNB task can be seen; "
                                "/health's trace.problem says why)",
                                value=int(trace.get("open") is True and not trace.get("problem")))
        yield from self._api(counts, CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily,
                             HistogramMetricFamily)
        yield from self._scheduler(GaugeMetricFamily, InfoMetricFamily)
        yield from self._cpu_wait(CounterMetricFamily, GaugeMetricFamily)
        reloads = CounterMetricFamily(P + "config_reloads", "Configuration reloads",
                                      labels=["result"])
        for result in ("ok", "error"):
            reloads.add_metric([result], _n(obj(counts.get("reloads")).get(result)))
        yield reloads
        # A gauge, not only the count: an alert on the rejected count rising resolved once
        # its range had passed, while the host still ran the configuration of before.
        rejected = obj(s.get("config")).get("reload_rejected_at") is not None
        yield GaugeMetricFamily(P + "config_last_reload_successful", "0 from a rejected "
                                "reload until one is accepted (the files on disk are not "
                                "what runs), else 1", value=int(not rejected))
        yield InfoMetricFamily(P + "build", "Build information", value={"version": __version__})

    def _api(self, counts: Mapping[str, Any], counter: Any, gauge: Any, info: Any,
             histogram: Any) -> Iterator[Any]:
        s, api = self.snap, obj(self.snap.get("api"))
        pushes = counter(P + "pushes", "Pushes by result", labels=["result"])
        for result in ("ok", "error"):  # both exported from the start, so rate() works
            pushes.add_metric([result], _n(obj(counts.get("pushes")).get(result)))
        yield pushes
        for name, text in (("push_duration_seconds", "Duration of one push (credentials + "
                                                     "write + read-back)"),
                           ("detect_to_push_seconds", "From a new task's first trace line "
                                                      "to the successful push that contains "
                                                      "it")):
            h = self.histograms[name]
            yield histogram(P + name, text, buckets=h.cumulative(), sum_value=h.sum)
        yield counter(P + "token_refreshes", "API credentials obtained",
                      value=_n(api.get("credentials_obtained")))
        # Always exported: absent until the first success, the documented alert
        # (time() - this > 3 * resync) would never fire for a daemon that never reached
        # the API.  Until then it is the start time, as /health gives a new daemon until
        # 3 x resync_interval after its start.
        last = _n(s.get("last_success_at")) or _n(s.get("started_at"))
        yield gauge(P + "last_successful_push_timestamp_seconds", "Unix time of the last "
                    "successful push (the daemon's start while none has succeeded)",
                    value=last)
        yield info(P + "api", "The Gthulhu flavor spoken", value={
            "flavor": str(api.get("flavor", "?"))})

    def _scheduler(self, gauge: Any, info: Any) -> Iterator[Any]:
        sched, boost = obj(self.snap.get("scheduler")), obj(self.snap.get("boost"))
        if sched:
            enabled = gauge(P + "scheduler_enabled", "1 when a sched_ext scheduler is running "
                            "(ops names it: only Gthulhu's reads the strategies), 0 when none "
                            "is", labels=["ops"])
            enabled.add_metric([str(sched.get("ops", ""))], 1 if sched.get("enabled") else 0)
            yield enabled
        if not boost.get("verified"):
            return  # nothing read back: no numbers rather than zeros
        for key, text in (("covered", "Tracked tasks the server lists (boosted only "
                                      "when Gthulhu's scheduler runs: scheduler_enabled)"),
                          ("missing", "Tracked tasks the scheduler does not list"),
                          ("foreign", "Tasks listed under this host's rule that it does not "
                                      "track")):
            yield gauge(P + f"scheduler_{key}_tasks", text, value=len(boost.get(key) or []))
        yield info(P + "scheduler", "The sched_ext scheduler that reads the strategies",
                   value={"ops": str(boost.get("scheduler") or "")})

    def _cpu_wait(self, counter: Any, gauge: Any) -> Iterator[Any]:
        waits = obj(self.snap.get("cpu_wait"))
        lifetime, windows = obj(waits.get("lifetime")), waits.get("last_window") or []
        for key, name, text, scale in (
                ("run_ns", "target_run_seconds", "Time the tracked tasks ran on a CPU", NS),
                ("wait_ns", "target_runqueue_wait_seconds", "Time the tracked tasks were "
                                                            "runnable but waited for a CPU", NS),
                ("slices", "target_timeslices", "Times the tracked tasks got a CPU", 1)):
            family = counter(P + name, text, labels=["process"])
            for process, c in sorted(lifetime.items()):
                family.add_metric([process], _n(obj(c).get(key)) * scale)
            yield family
        worst = gauge(P + "target_worst_task_wait_ratio", "The highest share of its runnable "
                      "time any one tracked task waited for a CPU over the last window",
                      labels=["process"])
        for report in windows:
            w = obj(obj(report).get("worst"))
            if w.get("wait_share") is not None:
                worst.add_metric([str(obj(report).get("process"))], _n(w.get("wait_share")))
        yield worst


def render(snapshot: Mapping[str, Any], histograms: Dict[str, Histogram]) -> bytes:
    import prometheus_client as prom

    # generate_latest reads any object with collect(): no registry is needed for one
    return bytes(prom.generate_latest(SnapshotCollector(snapshot, histograms)))
