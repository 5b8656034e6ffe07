"""Prometheus metrics: kept by the loop, rendered as text when it publishes.

Off unless `metrics.listen` or `metrics.textfile` is set, and prometheus_client
is imported only then.  The loop is the only writer of the metric objects and
renders the exposition text at each publish (after every push, reload and
liveness pass); the text goes to the textfile and to the runtime directory,
from where the endpoint process serves /metrics.  So the numbers are at most
`liveness_interval` old, and no other thread ever touches the loop's state.
"""

from __future__ import annotations

from typing import Any

from .. import __version__

_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
P = "gtp5g_operator_"


class Metrics:
    def __init__(self) -> None:
        import prometheus_client as prom

        self._prom = prom
        self.registry = prom.CollectorRegistry(auto_describe=True)
        self._trace_and_targets(prom)
        self._api(prom)
        self.config_reloads = self._counter("config_reloads", "Configuration reloads",
                                            ["result"])
        self.scheduler_enabled = prom.Gauge(
            P + "scheduler_enabled", "1 when a sched_ext scheduler is running (strategies "
            "have an effect), 0 when not", ["ops"], registry=self.registry)
        prom.Info(P + "build", "Build information", registry=self.registry).info(
            {"version": __version__})
        for result in ("ok", "error"):  # export zeros, so rate() works from the start
            self.pushes.labels(result)
            self.config_reloads.labels(result)

    def _counter(self, name: str, text: str, labels: Any = ()) -> Any:
        return self._prom.Counter(P + name, text, labels, registry=self.registry)

    def _gauge(self, name: str, text: str) -> Any:
        return self._prom.Gauge(P + name, text, registry=self.registry)

    def _trace_and_targets(self, prom: Any) -> None:
        self.tracked_processes = self._gauge("tracked_processes", "Processes whose tasks "
                                             "are boosted")
        self.tracked_tasks = self._gauge("tracked_tasks", "Tasks (threads) boosted")
        self.trace_lines = self._counter("trace_lines", "Trace lines (text) or records (raw) "
                                         "read")
        self.trace_bytes = self._counter("trace_bytes", "Bytes read from the trace source")
        self.trace_dropped = self._counter("trace_dropped_lines", "Over-long trace lines "
                                           "dropped")
        self.trace_reopens = self._counter("trace_reopens", "Times the trace source had to "
                                           "be (re)opened after a failure or EOF")
        self.trace_lost = self._counter("trace_lost_events", "Trace events the kernel "
                                        "overwrote before they were read")
        self.trace_unrecognised = self._counter("trace_unrecognised_bytes", "Trace text in "
                                                "which no line could be recognised")
        self.trace_reader = prom.Info(P + "trace_reader", "The trace reader in use",
                                      registry=self.registry)

    def _api(self, prom: Any) -> None:
        self.pushes = self._counter("pushes", "Pushes by result", ["result"])
        self.push_duration = prom.Histogram(P + "push_duration_seconds", "Duration of one "
                                            "push (credentials + write)",
                                            buckets=_DURATION_BUCKETS, registry=self.registry)
        self.detect_to_push = prom.Histogram(P + "detect_to_push_seconds", "From a new "
                                             "task's first trace line to the successful "
                                             "push that contains it",
                                             buckets=_DURATION_BUCKETS, registry=self.registry)
        self.token_refreshes = self._counter("token_refreshes", "API credentials obtained")
        self.last_success = self._gauge("last_successful_push_timestamp_seconds",
                                        "Unix time of the last successful push")
        self.api_flavor = prom.Info(P + "api", "The Gthulhu flavor spoken",
                                    registry=self.registry)

    def render(self) -> bytes:
        return bytes(self._prom.generate_latest(self.registry))
