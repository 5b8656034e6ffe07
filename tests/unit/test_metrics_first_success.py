"""The last-success gauge exists before any push succeeded (README: alert on
time() - gtp5g_operator_last_successful_push_timestamp_seconds > 3 * resync)."""

from typing import Dict

import pytest

pytest.importorskip("prometheus_client")

from gtp5g_operator.service.metrics import Histogram, render

NAME = "gtp5g_operator_last_successful_push_timestamp_seconds"


def value(text: bytes) -> float:
    for line in text.decode().splitlines():
        if line.startswith(NAME + " "):
            return float(line.split()[1])
    raise AssertionError(f"{NAME} is absent")


def histograms() -> Dict[str, Histogram]:
    return {"push_duration_seconds": Histogram(), "detect_to_push_seconds": Histogram()}


def test_never_succeeded_exports_the_start_time() -> None:
    snap = {"started_at": 1_700_000_000.0, "last_success_at": None,
            "counts": {"pushes": {"ok": 0, "error": 7}}}
    assert value(render(snap, histograms())) == 1_700_000_000.0


def test_after_a_success_exports_it() -> None:
    snap = {"started_at": 1_700_000_000.0, "last_success_at": 1_700_000_123.0}
    assert value(render(snap, histograms())) == 1_700_000_123.0


def test_the_trace_source_being_closed_is_a_metric() -> None:
    # STATUS=, status and /health said NOT OPEN; Prometheus only saw reopens rise slowly
    open_, closed = ({"started_at": 1.0, "trace": {"open": o}} for o in (True, False))
    for snap, want in ((open_, "1.0"), (closed, "0.0")):
        lines = render(snap, histograms()).decode().splitlines()
        assert f"gtp5g_operator_trace_open {want}" in lines
