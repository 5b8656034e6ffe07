"""The metrics as README documents them: the last-success gauge exists before any
push succeeded (alert on time() - gtp5g_operator_last_successful_push_timestamp_seconds
> 3 * resync), and the table names exactly the families exported."""

import re
from pathlib import Path
from typing import Dict, Set

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


def test_the_readmes_metrics_table_is_what_is_exported() -> None:
    """Every family /metrics and the textfile export is in README's table with its
    type, and the table lists no other.  A row may abbreviate: `_tracked_tasks`
    after `gtp5g_operator_tracked_processes` ends a prefix of the row's first name."""
    snap = {"started_at": 1.0, "scheduler": {"ops": "gthulhu", "enabled": True},
            "boost": {"verified": True, "covered": [1], "scheduler": "gthulhu"}}
    exported = dict(re.findall(r"^# TYPE (\S+) (\S+)$", render(snap, histograms()).decode(),
                               re.MULTILINE))
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("\n| metric | type | meaning |\n", 1)[1].split("\n\n", 1)[0]
    documented: Dict[str, str] = {}
    for row in table.splitlines()[1:]:
        cells = row.split(" | ")
        names = [re.sub(r"\{.*", "", n) for n in re.findall(r"`([^`]+)`", cells[0])]
        base = names[0]
        prefixes = [base[:i] for i, c in enumerate(base) if c == "_"]
        for name in names:
            full = name if not name.startswith("_") else next(
                (p + name for p in prefixes if p + name in exported), f"{base}…{name}")
            documented[full] = cells[1].strip()
    assert documented == exported


def test_the_scheduler_gauge_is_documented_as_what_it_says() -> None:
    """README's row said `scheduler_enabled` is "0 when strategies have no effect": with
    another sched_ext scheduler running (rusty) it is 1, and the strategies still have
    no effect (only Gthulhu's reads them).  An alert on `== 0` missed that host.  The
    row must name the ops that do read the strategies, as the code knows them."""
    from gtp5g_operator.core.sched_ext import GTHULHU_OPS

    def gauge(sched: Dict[str, object]) -> str:
        text = render({"started_at": 1.0, "scheduler": sched}, histograms()).decode()
        found = re.search(r"^gtp5g_operator_scheduler_enabled\{ops=\"\w*\"\} (\S+)$", text,
                          re.MULTILINE)
        assert found, text
        return found.group(1)

    assert gauge({"ops": "rusty", "enabled": True}) == "1.0"
    assert gauge({"ops": "goland", "enabled": True}) == "1.0"
    assert gauge({"ops": "", "enabled": False}) == "0.0"
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    row = next(line for line in readme.splitlines()
               if line.startswith("| `gtp5g_operator_scheduler_enabled"))
    assert "0 when strategies have no effect" not in row, row
    assert all(f"`{name}`" in row for name in GTHULHU_OPS), row


def test_the_readme_names_every_value_of_a_result_label() -> None:
    """README's row said `config_reloads_total{result}`, "reloads accepted / rejected":
    an alert written on result="rejected" matched nothing, the values are ok and error."""
    snap = {"started_at": 1.0, "counts": {"pushes": {"ok": 1, "error": 1},
                                          "reloads": {"ok": 1, "error": 1}}}
    text = render(snap, histograms()).decode()
    results: Dict[str, Set[str]] = {}
    for name, value in re.findall(r'^(\w+)\{result="(\w+)"\}', text, re.MULTILINE):
        results.setdefault(name, set()).add(value)
    assert set(results) == {"gtp5g_operator_pushes_total",
                            "gtp5g_operator_config_reloads_total"}, results
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name, values in results.items():
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{name}"))
        named = set(re.findall(r'"(\w+)"', row.split(" | ")[0]))
        assert named == values, (name, named, values)


def test_no_help_text_says_boosted_of_what_is_only_tracked() -> None:
    """HELP said tracked_processes are "Processes whose tasks are boosted" and
    tracked_tasks "Tasks (threads) boosted", and covered tasks were those the scheduler
    "boosts": on a host without Gthulhu's scheduler (strategies without effect) or with
    a failing API, a panel titled by them showed boosted tasks.  Only what the server
    lists while Gthulhu's scheduler runs is boosted, and the texts must say so."""
    snap = {"started_at": 1.0, "processes": [{"tids": [1, 2]}],
            "scheduler": {"ops": "", "enabled": False},
            "boost": {"verified": True, "covered": [1, 2], "scheduler": ""}}
    helps = dict(re.findall(r"^# HELP (\S+) (.*)$", render(snap, histograms()).decode(),
                            re.MULTILINE))
    for name in ("tracked_processes", "tracked_tasks", "scheduler_covered_tasks"):
        text = helps["gtp5g_operator_" + name]
        assert "boost" not in text or "boosted only when" in text, text
