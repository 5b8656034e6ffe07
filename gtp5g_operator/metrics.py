"""Prometheus metrics: an HTTP endpoint and/or a node-exporter textfile.

Both are off unless configured, and prometheus_client is imported only then
(alone it costs 12.8 MB of RSS; beside what the daemon already loads, under
1 MB: 29.8 MB measured with both on).  The loop
is the only writer of the metric objects (each update is one locked
increment or set inside prometheus_client); the HTTP endpoint's thread, which
prometheus_client starts, only reads them — it never touches the loop's own
state.
"""

from __future__ import annotations

import logging
from typing import Optional

from . import __version__
from .config import MetricsConfig, split_listen
from .files import atomic_write

log = logging.getLogger(__name__)

_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Updated by the loop; exported by prometheus_client."""

    def __init__(self, config: MetricsConfig) -> None:
        import prometheus_client as prom

        self._prom = prom
        self.registry = prom.CollectorRegistry(auto_describe=True)
        r = self.registry
        p = "gtp5g_operator_"
        self.tracked_processes = prom.Gauge(p + "tracked_processes",
                                            "Processes whose tasks are boosted", registry=r)
        self.tracked_tasks = prom.Gauge(p + "tracked_tasks", "Tasks (threads) boosted",
                                        registry=r)
        self.trace_lines = prom.Counter(p + "trace_lines", "Trace lines read", registry=r)
        self.trace_bytes = prom.Counter(p + "trace_bytes", "Bytes read from trace_pipe",
                                        registry=r)
        self.trace_dropped = prom.Counter(p + "trace_dropped_lines",
                                          "Over-long trace lines dropped", registry=r)
        self.trace_reopens = prom.Counter(p + "trace_reopens",
                                          "Times trace_pipe had to be (re)opened after a "
                                          "failure or EOF", registry=r)
        self.pushes = prom.Counter(p + "pushes", "Strategy pushes by result", ["result"],
                                   registry=r)
        self.push_duration = prom.Histogram(p + "push_duration_seconds",
                                            "Duration of one push (token + post)",
                                            buckets=_DURATION_BUCKETS, registry=r)
        self.detect_to_push = prom.Histogram(p + "detect_to_push_seconds",
                                             "From a new task's first trace line to the "
                                             "successful push that contains it",
                                             buckets=_DURATION_BUCKETS, registry=r)
        self.token_refreshes = prom.Counter(p + "token_refreshes", "API tokens obtained",
                                            registry=r)
        self.last_success = prom.Gauge(p + "last_successful_push_timestamp_seconds",
                                       "Unix time of the last successful push", registry=r)
        self.config_reloads = prom.Counter(p + "config_reloads", "Configuration reloads",
                                           ["result"], registry=r)
        prom.Info(p + "build", "Build information", registry=r).info({"version": __version__})
        for result in ("ok", "error"):  # export zeros, so rate() works from the start
            self.pushes.labels(result)
            self.config_reloads.labels(result)
        self.textfile = ""
        self._textfile_error = ""
        self.listen = ""
        self.configure(config)

    def configure(self, config: MetricsConfig) -> None:
        self.textfile = config.textfile
        if config.listen and not self.listen:
            host, port = split_listen(config.listen)
            self._prom.start_http_server(port, host, registry=self.registry)
            self.listen = config.listen
            log.info("metrics on http://%s/metrics", config.listen)
        elif config.listen != self.listen:
            log.warning("metrics.listen changes take effect at restart (still serving %s)",
                        self.listen or "nothing")

    def write_textfile(self) -> None:
        """Atomically rewrite the textfile; a failure is logged once per cause."""
        if not self.textfile:
            return
        try:
            atomic_write(self.textfile, self._prom.generate_latest(self.registry))
        except OSError as exc:
            if exc.strerror != self._textfile_error:
                log.warning("cannot write metrics textfile %s: %s", self.textfile,
                            exc.strerror)
            self._textfile_error = exc.strerror or ""
        else:
            self._textfile_error = ""


def make_metrics(config: MetricsConfig) -> Optional[Metrics]:
    if not config.listen and not config.textfile:
        return None
    return Metrics(config)

