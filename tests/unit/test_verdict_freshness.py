"""The read-back verdict every output shows is never older than what it depends on:
judged again when the sched_ext scheduler changes between pushes, and withdrawn
("not verified") when a push fails, so /health, state.json, the gauges and
STATUS= never say "all covered" while nothing is being read back or while no
scheduler runs."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pytest

pytest.importorskip("prometheus_client")  # the gauges; not a build dependency of the package

from gtp5g_operator.commands.status import format_status
from gtp5g_operator.config import Config, TraceConfig
from gtp5g_operator.core.readback import Comparison
from gtp5g_operator.core.tracker import ProcessView
from gtp5g_operator.gthulhu.errors import ApiError
from gtp5g_operator.service.daemon import FIRST_PUSH_DELAY, Daemon
from gtp5g_operator.service.metrics import render
from tests.doubles import Clock, RecordingWriter


class ReadingWriter(RecordingWriter):
    """Lists every task it was given as covered; fails while `down` is set."""

    readback_source = "http://scheduler.example/strategies"

    def __init__(self) -> None:
        super().__init__()
        self.down: Optional[ApiError] = None
        self.ids: List[int] = [11, 12]

    def write(self, views: Sequence[ProcessView], deadline: float) -> int:
        if self.down is not None:
            raise self.down
        return super().write(views, deadline)

    def read_back(self, views: Sequence[ProcessView], deadline: float,
                  rule: Optional[str] = None) -> Optional[Comparison]:
        return Comparison("ids", tracked=len(self.ids), listed=len(self.ids),
                          covered=tuple(self.ids), missing=())


def set_scheduler(root: Path, state: str, ops: str = "") -> None:
    base = root / "kernel" / "sched_ext"
    (base / "root").mkdir(parents=True, exist_ok=True)
    (base / "state").write_text(state + "\n")
    (base / "root" / "ops").write_text(ops + "\n")


def test_the_verdict_follows_the_scheduler_and_a_failing_api(tmp_path: Path) -> None:
    fifo = tmp_path / "trace_pipe"
    os.mkfifo(fifo)
    sysfs = tmp_path / "sys"
    set_scheduler(sysfs, "enabled", "gthulhu")
    clock, writer = Clock(), ReadingWriter()
    sent: List[str] = []
    cfg = Config(trace=TraceConfig(pipe=str(fifo)))
    d = Daemon(cfg, str(tmp_path / "config.toml"), env={"RUNTIME_DIRECTORY": str(tmp_path / "run")},
               clock=clock, wall_clock=clock, sysfs=str(sysfs), make_writer=lambda c: writer)
    d.notifier.send = lambda *fields: sent.extend(fields)  # type: ignore[method-assign]
    d.setup()

    def boost() -> Dict[str, Any]:
        state: Dict[str, Any] = json.loads((tmp_path / "run" / "state.json").read_text())
        return state["boost"]  # type: ignore[no-any-return]

    def gauges() -> str:
        return render(d.publisher.snapshot(), d.publisher.histograms).decode()

    try:
        clock.now += FIRST_PUSH_DELAY
        d.run_once()
        assert boost()["verified"] and boost()["diagnosis"].startswith("all covered")
        # the scheduler goes away between pushes: the next liveness pass says so everywhere
        set_scheduler(sysfs, "disabled")
        clock.now += cfg.strategy.liveness_interval
        d.run_once()
        assert "no sched_ext scheduler is running" in boost()["diagnosis"]
        assert 'scheduler_info{ops="gthulhu"}' not in gauges()
        assert "no sched_ext scheduler" in [f for f in sent if f.startswith("STATUS=")][-1]
        # another scheduler is as good as none, and STATUS= says so with nothing tracked
        set_scheduler(sysfs, "enabled", "rusty")
        clock.now += cfg.strategy.liveness_interval
        d.run_once()
        assert "'rusty' is running, not Gthulhu's" in [
            f for f in sent if f.startswith("STATUS=")][-1]
        state = json.loads((tmp_path / "run" / "state.json").read_text())
        assert ("scheduler:  sched_ext scheduler rusty running, NOT Gthulhu's (strategies "
                "have no effect)") in format_status(state, clock.now, clock.now).splitlines()
        # the API fails: what the scheduler lists is no longer known
        writer.down = ApiError("http-5xx", "HTTP 500")
        clock.now += cfg.strategy.resync_interval
        d.run_once()
        assert not d.pusher.last.ok  # type: ignore[union-attr]
        assert not boost()["verified"]
        # absent while not verified (another family's HELP may name it)
        assert not re.search(r"^(# TYPE )?gtp5g_operator_scheduler_covered_tasks\b", gauges(),
                             re.M)
    finally:
        d.close()


class CountingWriter(RecordingWriter):
    def __init__(self, obtained: int) -> None:
        super().__init__()
        self.obtained = obtained

    def describe(self) -> Dict[str, Any]:
        return {**super().describe(), "credentials_obtained": self.obtained}


def test_counters_and_the_last_success_gauge_for_an_alert(tmp_path: Path) -> None:
    """`token_refreshes_total` never goes back when a reload brings a new writer, and
    `last_successful_push_timestamp_seconds` exists before the first success, so
    the README's alert `time() - it > 3 * resync` fires for an API never reached."""
    fifo = tmp_path / "trace_pipe"
    os.mkfifo(fifo)
    clock, first = Clock(), CountingWriter(2)
    first.write = lambda views, deadline: (_ for _ in ()).throw(  # type: ignore[method-assign]
        ApiError("connect", "cannot reach"))
    d = Daemon(Config(trace=TraceConfig(pipe=str(fifo))), str(tmp_path / "config.toml"),
               env={"RUNTIME_DIRECTORY": str(tmp_path / "run")}, clock=clock,
               wall_clock=clock, make_writer=lambda c: first)
    d.notifier.send = lambda *fields: None  # type: ignore[method-assign]
    d.setup()
    try:
        clock.now += FIRST_PUSH_DELAY
        d.run_once()
        text = render(d.publisher.snapshot(), d.publisher.histograms).decode()
        # (its value, the start time until a success: test_metrics_first_success.py)
        assert "\ngtp5g_operator_last_successful_push_timestamp_seconds " in text
        assert "\ngtp5g_operator_token_refreshes_total 2.0\n" in text
        d.pusher.set_writer(CountingWriter(1))  # what a reload with a new api.url does
        text = render(d.publisher.snapshot(), d.publisher.histograms).decode()
        assert "\ngtp5g_operator_token_refreshes_total 3.0\n" in text
    finally:
        d.close()
