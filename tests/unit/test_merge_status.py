"""Merge of strategy lists, and the status table. Pure."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict

import pytest

from gtp5g_operator.commands.status import format_status, show_status
from gtp5g_operator.gthulhu.merge import OwnedIds, merge_strategies

OURS = [{"pid": 10, "priority": True, "execution_time": 1}]


def s(pid: int, **kw: object) -> Dict[str, Any]:
    return {"pid": pid, "priority": True, "execution_time": 5, **kw}


def test_others_kept_owned_replaced() -> None:
    current = [s(1), s(7), s(9)]
    assert merge_strategies(current, OURS, owned={7: (True, 5)}) == [s(1), s(9), *OURS]


def test_an_owned_pid_saying_something_else_is_another_writers() -> None:
    """The PID was reused (the task died while this host was down): another writer's
    entry for the new process says other values, and is kept."""
    current = [s(7, priority=False, execution_time=9), s(8, command_regex="x")]
    assert merge_strategies(current, OURS, owned={7: (True, 5), 8: (True, 5)}) == [
        *current, *OURS]


def test_our_wanted_pid_replaces_another_writers_entry() -> None:
    assert merge_strategies([s(10, execution_time=99)], OURS, owned={}) == OURS


def test_expanded_selector_strategy_is_kept_once_without_pid() -> None:
    sel = [{"key": "app", "value": "upf"}]
    current = [s(20, selectors=sel), s(21, selectors=sel), s(3)]
    merged = merge_strategies(current, OURS, owned={})
    assert merged == [{"priority": True, "execution_time": 5, "selectors": sel}, s(3), *OURS]


def test_entries_without_usable_pid_are_dropped() -> None:
    current = [{"priority": True}, s(0), {"pid": "7"}, {"pid": True}]
    assert merge_strategies(current, [], owned={}) == []


def test_clear_removes_only_owned() -> None:
    assert merge_strategies([s(1), s(10)], [], owned={10: (True, 5)}) == [s(1)]


def test_status_table() -> None:
    now = time.time()
    state = {
        "pid": 42, "version": "0.1.0", "started_at": now - 300,
        "config": {"path": "/etc/gtp5g-operator/config.toml", "loaded_at": now - 300,
                   "mode": "overwrite", "targets": "both",
                   "files": ["/etc/gtp5g-operator/config.toml",
                             "/etc/gtp5g-operator/config.d/50-site.toml"]},
        "api": {"url": "http://127.0.0.1:8080", "token_expires_at": now + 3600},
        "trace": {"path": "/sys/kernel/tracing/trace_pipe", "open": True, "lines": 1234567,
                  "dropped_lines": 0},
        "processes": [{"tgid": 29493, "comm": "nr-gnb", "exe": "/usr/bin/nr-gnb", "uid": 0,
                       "tids": [29493, 29534], "since": now - 60}],
        "last_push": {"ok": True, "at": now - 3, "count": 3, "duration_s": 0.0041,
                      "error": ""},
    }
    text = format_status(state, now)
    assert "PID 42, running since" in text and "(5m ago)" in text
    assert "1,234,567 lines, 0 dropped" in text
    # the README: status names "the configuration files with when they were loaded"
    assert ("config:     /etc/gtp5g-operator/config.toml + "
            "/etc/gtp5g-operator/config.d/50-site.toml, loaded") in text
    assert "last push:  ok, 3 entries" in text and "4.1 ms" in text
    header, row = text.splitlines()[-2:]
    assert header.split() == ["TGID", "NAME", "UID", "ACTIVE", "TIDS", "SINCE", "EXE"]
    assert row.split()[:5] == ["29493", "nr-gnb", "0", "29493", "29534"]
    assert row.endswith("(60s ago)  /usr/bin/nr-gnb")  # EXE last, as ps puts COMMAND
    state["processes"] = []
    state["last_push"] = {"ok": False, "at": now, "count": 0, "error": "connect: refused"}
    text = format_status(state, now)
    assert "FAILED (connect: refused)" in text and text.endswith("no nr-gnb process tracked")


def test_status_table_of_big_gnbs_stays_narrow() -> None:
    """A big host: several gNBs of 1,000 threads each.  A row shows a few TIDs and the
    count (--json has them all), so the table stays one screen wide."""
    now = time.time()
    state = {"processes": [{"tgid": tgid, "comm": "nr-gnb", "exe": "/usr/bin/nr-gnb",
                            "uid": 0, "tids": list(range(tgid, tgid + 1001)),
                            "since": now - 60} for tgid in (4_100_000, 4_190_000)]}
    lines = format_status(state, now).splitlines()[-3:]
    assert max(len(line) for line in lines) < 160
    assert "4100000 4100001" in lines[1] and "(1,001 in all)" in lines[1]
    assert lines[1].endswith("(60s ago)  /usr/bin/nr-gnb")


@pytest.mark.parametrize("state", [
    {"pid": "x", "processes": "not a list", "trace": [], "api": None, "last_push": 5},
    {"processes": [None, 3, {"tgid": None, "tids": "1 2"}], "config": "c"},
    {"config": {"files": "c.toml"}}, {"config": {"files": [None, 3, {"a": 1}]}},
    {"started_at": "yesterday", "last_push": {"ok": True, "duration_s": "fast", "at": 1e300}},
    {},
])
def test_status_of_a_wrong_shaped_state_never_raises(state: Dict[str, Any]) -> None:
    text = format_status(state, time.time())
    assert text.startswith("gtp5g-operator ")


def test_status_command_on_files_of_the_wrong_shape(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("[1, 2]")
    code, text = show_status(str(tmp_path), False)
    assert code == 1 and "not a JSON object" in text
    (tmp_path / "state.json").unlink()
    os.mkfifo(tmp_path / "state.json")  # would hang a plain open()
    code, text = show_status(str(tmp_path), False)
    assert code == 1 and "not a regular file" in text


def test_an_earlier_versions_owned_file_is_rewritten_once_in_this_format(
        tmp_path: Path) -> None:
    """0.1.0's owned.json names PIDs only; the same PIDs pushed again with the same values
    must still rewrite it once, recording what was posted (else a later change of
    strategy.priority would judge those entries by values never recorded)."""
    path = tmp_path / "owned.json"
    path.write_text(json.dumps({"api_url": "http://a", "pids": [7, 8]}))
    owned = OwnedIds(str(tmp_path), "http://a", (True, 20_000_000))
    owned.replace({7: (True, 20_000_000), 8: (True, 20_000_000)})
    data = json.loads(path.read_text())
    assert data["pids"] == [7, 8]
    assert data["strategies"] == [{"pid": 7, "priority": True, "execution_time": 20_000_000},
                                  {"pid": 8, "priority": True, "execution_time": 20_000_000}]
