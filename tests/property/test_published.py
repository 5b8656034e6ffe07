"""Properties of the readers of the daemon's published files: `gtp5g-operator status`
(commands/status) on any state.json, and the /health answer (service/health) on
any published document.  Anything may be in a file a user points `status` at, and
these run as another process than the daemon that wrote them: they never raise."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gtp5g_operator.commands.status import format_status, show_status
from gtp5g_operator.service.health import health_answer
from gtp5g_operator.service.runtime_names import STATE_FILE
from tests.property.bounds import check_total, one_line
from tests.property.strategies import (
    deep_text,
    finite_numbers,
    json_answers,
    json_objects,
    json_values,
    numbers,
)

NOW = 1_780_000_000.0

# A state.json as the daemon writes it: every field status reads, in its place.
STATE: Dict[str, Any] = {
    "version": "1.0", "pid": 1, "started_at": NOW - 60, "updated_at": NOW,
    "config": {"path": "/etc/gtp5g-operator/config.toml", "loaded_at": NOW - 60,
               "mode": "overwrite", "targets": "both"},
    "trace": {"path": "/sys/kernel/tracing/trace_pipe", "format": "raw", "open": True,
              "lines": 1200, "dropped_lines": 0, "lost_events": 0},
    "api": {"url": "http://127.0.0.1:8080", "flavor": "v0", "token_expires_at": NOW + 600,
            "policy_id": "gtp5g-operator@node-1"},
    "scheduler": {"enabled": True, "ops": "gthulhu", "sched_ext": True},
    "last_push": {"ok": True, "count": 4, "at": NOW - 1, "duration_s": 0.002},
    "processes": [{"tgid": 4242, "comm": "nr-gnb", "exe": "/usr/bin/nr-gnb", "uid": 0,
                   "tids": [4242, 4243], "since": NOW - 30}],
}


def _paths(value: Any, prefix: Tuple[Any, ...] = ()) -> List[Tuple[Any, ...]]:
    """Where a value can be replaced in `value`: every subtree, every leaf."""
    found = [prefix] if prefix else []
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        found.extend(_paths(inner, (*prefix, key)))
    return found


PATHS = _paths(STATE)


def _child(holder: Any, step: Any) -> Any:
    if isinstance(holder, dict) and isinstance(step, str):
        return holder.get(step)
    if isinstance(holder, list) and isinstance(step, int) and step < len(holder):
        return holder[step]
    return None  # an earlier change replaced what was there


def _replaced(changes: Dict[Tuple[Any, ...], Any]) -> Dict[str, Any]:
    state = copy.deepcopy(STATE)
    for path, value in sorted(changes.items(), key=lambda c: len(c[0])):
        holder: Any = state
        for step in path[:-1]:
            holder = _child(holder, step)
        if _child(holder, path[-1]) is not None or isinstance(holder, dict):
            holder[path[-1]] = value
    return state


# The daemon's state with a few of its values (leaves or whole subtrees) replaced by anything.
states = st.dictionaries(st.sampled_from(PATHS), json_values(6), min_size=1,
                         max_size=4).map(_replaced)


@given(st.one_of(states, json_objects()), st.one_of(st.just(NOW), st.floats(0, 1e10)))
@example({"started_at": 10**400}, NOW)  # float(10**400) overflows in math.isfinite
@example({"processes": [{"since": 10**400}]}, NOW)
def test_format_status_never_raises(state: Dict[str, Any], now: float) -> None:
    check_total(lambda: format_status(state, now), returns=str)


@pytest.fixture(scope="module")
def daemon_pid() -> Iterator[int]:
    """A live process whose command line says gtp5g: `status` formats only for one."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()",
                              "gtp5g-operator-stand-in"], stdin=subprocess.PIPE)
    try:
        yield child.pid
    finally:
        assert child.stdin is not None
        child.stdin.close()  # it exits at EOF
        child.wait(30)


def state_files(pid: int) -> st.SearchStrategy[bytes]:
    def with_pid(state: Dict[str, Any]) -> bytes:
        return json.dumps({**state, "pid": pid}).encode("utf-8", "surrogatepass")

    return st.one_of(
        states.map(with_pid),  # NaN and Infinity in it: read_json_file refuses those
        json_answers,
        st.builds(lambda n: b'{"pid": %d, "version": %s}' % (pid, deep_text(n, "list")),
                  st.integers(1, 100_000)),
        st.builds(lambda n: b'{"pid": %d, "version": %s}' % (pid, b"9" * n),
                  st.integers(1, 10_000)),
    )


@given(st.data(), st.booleans())
@settings(max_examples=50)  # a file written and read per example
def test_show_status_never_raises(daemon_pid: int, data: st.DataObject,
                                  as_json: bool) -> None:
    text = data.draw(st.one_of(state_files(daemon_pid), st.just(
        b'{"pid": %d, "version": %s}' % (daemon_pid, deep_text(100_000, "list")))),
        label="state.json")
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / STATE_FILE).write_bytes(text)
        result = check_total(lambda: show_status(directory, as_json), returns=tuple)
    assert isinstance(result, tuple)
    code, out = result
    assert code in (0, 1, 3) and isinstance(out, str)
    if code != 0:
        assert one_line(out), out


# --- /health ------------------------------------------------------------------------------------

HEALTH: Dict[str, Any] = {
    "tracked_processes": 1, "tracked_tasks": 2, "api": {"flavor": "v0"},
    "trace": {"open": True}, "scheduler": {"enabled": True}, "resync_interval": 10.0,
    "last_push": {"ok": True, "at_mono": 99.0, "error_kind": None},
    "last_success_mono": 99.0, "started_mono": 1.0,
}
health_docs = st.one_of(
    st.none(), json_objects(),
    st.fixed_dictionaries({}, optional={k: json_values(4) for k in HEALTH}),
    st.dictionaries(st.sampled_from(list(HEALTH)), st.one_of(numbers, json_values(3)),
                    max_size=3).map(lambda changes: {**HEALTH, **changes}))
heartbeats = st.one_of(st.none(), st.tuples(st.floats(), st.floats()),
                       st.tuples(finite_numbers, finite_numbers))


def judge_health(doc: Optional[Dict[str, Any]], beat: Optional[Tuple[float, float]],
                 now: float) -> None:
    result = check_total(lambda: health_answer(doc, beat, now), returns=tuple)
    assert isinstance(result, tuple)
    code, body = result
    assert code in (200, 503) and body.get("status") in (
        "ok", "stalled", "api-unreachable", "starting")


# What the daemon itself publishes for a time or an interval: numbers a clock shows.
ordinary_times = st.one_of(st.none(), st.floats(-1e11, 1e11), st.integers(-(10**11), 10**11))
ordinary_docs = st.one_of(st.none(), st.fixed_dictionaries({}, optional={
    **{k: json_values(4) for k in ("tracked_processes", "tracked_tasks", "api", "trace",
                                   "scheduler")},
    **{k: ordinary_times for k in ("resync_interval", "last_success_mono", "started_mono")},
    "last_push": st.one_of(st.none(), json_values(3).filter(lambda v: not isinstance(v, dict)),
                           st.fixed_dictionaries({}, optional={
                               "ok": json_values(2), "at_mono": ordinary_times,
                               "error_kind": json_values(2)})),
}))


@given(ordinary_docs, heartbeats, st.floats(0, 1e9))
def test_health_answer_of_documents_with_ordinary_numbers(
        doc: Optional[Dict[str, Any]], beat: Optional[Tuple[float, float]], now: float) -> None:
    judge_health(doc, beat, now)


@settings(report_multiple_bugs=False)
@given(health_docs, heartbeats, st.floats(0, 1e9))
@example({"last_push": {"at_mono": 10**400}}, (1.0, 2.0), 1.0)
@example({"resync_interval": "10"}, (1.0, 2.0), 1.0)
@example({"resync_interval": [1]}, (1.0, 2.0), 1.0)
def test_health_answer_of_any_document(doc: Optional[Dict[str, Any]],
                                       beat: Optional[Tuple[float, float]], now: float) -> None:
    judge_health(doc, beat, now)
