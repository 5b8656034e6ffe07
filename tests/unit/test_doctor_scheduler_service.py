"""doctor's scheduler check over a fake sysfs, and its service checks over a fake
state.json, a fake /proc (is the PID a gtp5g-operator?) and stand-in systemctl programs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import pytest

from gtp5g_operator.commands.doctor.model import FAIL, OK, WARN, Check
from gtp5g_operator.commands.doctor.scheduler import scheduler_checks
from gtp5g_operator.commands.doctor.service import (
    UnitState,
    counters_check,
    probe_unit,
    push_check,
    readback_check,
    service_checks,
    unit_check,
)
from gtp5g_operator.commands.doctor.targets import Target
from gtp5g_operator.commands.status import NOT_RUNNING, format_status, show_status
from gtp5g_operator.config import Config, TraceConfig
from gtp5g_operator.core.procfs import ProcessInfo
from gtp5g_operator.core.tracker import TaskRef
from gtp5g_operator.service.daemon import Daemon
from gtp5g_operator.service.runtime_files import daemon_alive, read_state
from tests.doubles import RecordingWriter

NOW = 1_800_000_000.0


def sysfs(tmp_path: Path, state: Optional[str], ops: str = "") -> str:
    root = tmp_path / "sys"
    base = root / "kernel" / "sched_ext"
    if state is None:
        (root / "kernel").mkdir(parents=True)
        return str(root)
    (base / "root").mkdir(parents=True)
    (base / "state").write_text(state + "\n")
    (base / "root" / "ops").write_text(ops + "\n")
    return str(root)


def by_name(checks: Sequence[Check]) -> Dict[str, Check]:
    return {c.name: c for c in checks}


# --- 6. the scheduler ---------------------------------------------------------------------


def test_a_kernel_without_sched_ext_fails(tmp_path: Path) -> None:
    root = sysfs(tmp_path, None)
    checks = scheduler_checks(root)
    assert [(c.name, c.level) for c in checks] == [("sched_ext", FAIL)]
    assert checks[0].saw == f"this kernel has no sched_ext (no {root}/kernel/sched_ext)"
    assert checks[0].advice.startswith("strategies are stored but have no effect until a "
                                       "sched_ext scheduler such as Gthulhu's is running")


def test_no_bpf_scheduler_enabled_fails(tmp_path: Path) -> None:
    checks = by_name(scheduler_checks(sysfs(tmp_path, "disabled")))
    assert checks["sched_ext"].level == OK
    assert checks["scheduler"].level == FAIL
    assert checks["scheduler"].saw == "no BPF scheduler is enabled (state disabled)"
    assert "have no effect until" in checks["scheduler"].advice


def test_another_bpf_scheduler_warns(tmp_path: Path) -> None:
    check = by_name(scheduler_checks(sysfs(tmp_path, "enabled", "simple")))["scheduler"]
    assert check.level == WARN and "'simple'" in check.saw
    assert "does not look like Gthulhu's" in check.saw


def test_gthulhu_enabled_is_ok(tmp_path: Path) -> None:
    check = by_name(scheduler_checks(sysfs(tmp_path, "enabled", "gthulhu")))["scheduler"]
    assert (check.level, check.saw) == (OK, "the enabled BPF scheduler is 'gthulhu'")


# --- 7. the service: the unit -------------------------------------------------------------


def program(tmp_path: Path, name: str, script: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("script,level,saw", [
    ('echo active', OK, "gtp5g-operator.service is active"),
    ('echo failed; exit 3', FAIL, "gtp5g-operator.service is failed"),
    ('echo inactive; exit 3', FAIL, "gtp5g-operator.service is inactive"),
    ('echo activating; exit 3', WARN, "gtp5g-operator.service is activating"),
    ('echo "System has not been booted with systemd as init system (PID 1)." >&2; exit 1',
     WARN, "systemd not available (System has not been booted with systemd as init system "
           "(PID 1).)"),
])
def test_the_unit(tmp_path: Path, script: str, level: str, saw: str) -> None:
    systemctl = program(tmp_path, "systemctl", f'[ "$*" = "is-active gtp5g-operator" ] || '
                                               f"exit 9\n{script}")
    check = unit_check(probe_unit(systemctl))
    assert (check.level, check.saw) == (level, saw)


def test_no_systemctl_at_all() -> None:
    check = unit_check(probe_unit(None))
    assert (check.level, check.saw) == (WARN, "systemd not available (no systemctl)")


# --- 7. the service: state.json -----------------------------------------------------------


def target(tgid: int, boosted: bool = True) -> Target:
    return Target(ProcessInfo(tgid, 1, "nr-gnb", "/usr/bin/nr-gnb", 0),
                  (TaskRef(tgid, tgid, 1, "nr-gnb", "nr-gnb"),),
                  "" if boosted else "its uid 0 is not in match.uid")


def state(**kw: Any) -> Dict[str, Any]:
    base: Dict[str, Any] = {
        "pid": 777, "started_at": NOW - 600, "updated_at": NOW - 2,
        "processes": [{"tgid": 4242, "comm": "nr-gnb"}],
        "last_push": {"ok": True, "at": NOW - 4, "count": 3, "error": ""},
        "trace": {"path": "/sys/kernel/tracing", "format": "raw", "open": True, "lines": 99,
                  "lost_events": 0, "dropped_lines": 0, "reopens": 0},
        "boost": {"verified": True, "diagnosis": "all covered: the scheduler boosts all 2 gNB "
                  "tasks", "covered": [4242, 4243], "missing": [], "foreign": []}}
    return {**base, **kw}


def run(tmp_path: Path, doc: Optional[Dict[str, Any]], alive: bool = True,
        targets: Sequence[Target] = (), unit: str = "active",
        units_directory: bool = True) -> Dict[str, Check]:
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    if doc is not None:
        (run_dir / "state.json").write_text(json.dumps(doc))
    proc = tmp_path / "proc"
    (proc / "777").mkdir(parents=True, exist_ok=True)
    (proc / "777" / "cmdline").write_bytes(b"/usr/bin/python3\0/usr/bin/gtp5g-operator\0"
                                           if alive else b"vim\0")
    systemctl = program(tmp_path, "systemctl", f"echo {unit}")
    loaded, problem = read_state(str(run_dir))
    alive = daemon_alive(loaded.get("pid") if loaded else None, str(proc))
    return by_name(service_checks(alive, 10.0, targets, NOW, loaded, problem, systemctl,
                                  units_directory=units_directory))


def test_a_running_service(tmp_path: Path) -> None:
    checks = run(tmp_path, state(), targets=[target(4242)])
    assert checks["unit"].level == OK
    assert checks["service"].level == OK
    assert "PID 777, running since" in checks["service"].saw
    assert checks["service"].saw.endswith("tracking 1 process (4242)")
    assert (checks["last push"].level, checks["last push"].saw) == (OK, "ok, 3 entries, 4 s ago")
    assert checks["service boost"].level == OK
    assert checks["service boost"].saw == ("the service's read-back: all covered: the "
                                           "scheduler boosts all 2 gNB tasks")
    assert checks["service counters"].level == OK
    assert checks["service counters"].saw == (
        "trace /sys/kernel/tracing (raw, open): 99 lines, 0 events lost, 0 over-long lines "
        "dropped, 0 reopens")


def test_not_running(tmp_path: Path) -> None:
    checks = run(tmp_path, None, unit="inactive")
    assert checks["service"].level == FAIL
    assert checks["service"].saw == f"not running: no {tmp_path}/run/state.json"
    assert "systemctl start gtp5g-operator" in checks["service"].advice
    assert "last push" not in checks  # nothing to say about a service that is not there


def test_a_running_unit_that_cannot_write_its_state_is_not_called_stopped(
        tmp_path: Path) -> None:
    """/run full or read-only: the daemon runs but has no state.json.  doctor said "not
    running -> systemctl start" (and status exit 3, not running) of a running service."""
    checks = run(tmp_path, None)
    assert checks["service"].level == FAIL
    assert checks["service"].saw == (
        f"gtp5g-operator.service is active, but no {tmp_path}/run/state.json: the daemon "
        "cannot write its runtime directory (journalctl -u gtp5g-operator -p warning names "
        "the file and why)")
    assert "systemctl start" not in checks["service"].advice
    # The unit's state says nothing of a directory given with --runtime-dir
    other = run(tmp_path, None, units_directory=False)
    assert other["service"].saw == f"not running: no {tmp_path}/run/state.json"
    code, text = show_status(str(tmp_path / "run"), False, lambda: UnitState("active"))
    assert (code, text) == (1, checks["service"].saw)
    for unit in (None, lambda: UnitState("inactive"), lambda: UnitState("")):
        code, text = show_status(str(tmp_path / "run"), False, unit)
        assert (code, text) == (NOT_RUNNING, "gtp5g-operator is not running (no "
                                             f"{tmp_path}/run/state.json)")


def test_a_stale_state_file(tmp_path: Path) -> None:
    checks = run(tmp_path, state(), alive=False)
    assert checks["service"].level == FAIL
    assert checks["service"].saw.startswith("not running: stale state.json of PID 777")


def test_a_live_target_the_service_does_not_track(tmp_path: Path) -> None:
    checks = run(tmp_path, state(processes=[]), targets=[target(4242), target(5000, False)])
    assert checks["service"].level == WARN
    assert checks["service"].saw.endswith("tracking 0 processes; not the live target(s) 4242")
    assert "GTP-U traffic" in checks["service"].advice


def test_a_failed_push(tmp_path: Path) -> None:
    doc = state(last_push={"ok": False, "at": NOW - 30, "count": 3,
                           "error": "unauthorized: the server refused our public key"})
    check = run(tmp_path, doc)["last push"]
    assert check.level == FAIL
    assert check.saw == "FAILED 30 s ago: unauthorized: the server refused our public key"


@pytest.mark.parametrize("last,level", [(None, WARN), ({"ok": True, "at": NOW - 31}, WARN),
                                        ({"ok": True, "at": NOW - 29}, OK)])
def test_the_last_push_age(last: Optional[Dict[str, Any]], level: str) -> None:
    assert push_check(last, NOW, 10.0).level == level  # 3 x resync_interval


@pytest.mark.parametrize("wall_step,age,level", [
    (3600.0, 0.0, OK),  # NTP stepped the clock an hour forward right after a push
    (-3600.0, 100.0, WARN),  # ... an hour back after a push 100 s ago, none since
])
def test_the_last_push_age_is_not_fooled_by_a_step_of_the_wall_clock(
        tmp_path: Path, wall_step: float, age: float, level: str) -> None:
    """doctor and status judge the age of the daemon's last push as /health does, on
    the monotonic clock: a step of the wall clock since the push (NTP, a resumed VM)
    neither makes a fresh push look stuck nor a stale one fresh."""
    fifo = tmp_path / "trace_pipe"
    os.mkfifo(fifo)
    d = Daemon(Config(trace=TraceConfig(pipe=str(fifo))), str(tmp_path / "config.toml"),
               env={"RUNTIME_DIRECTORY": str(tmp_path / "run")},
               clock=lambda: time.monotonic() - age,  # the push was `age` s ago ...
               wall_clock=lambda: time.time() - age - wall_step,  # ... before the step
               make_writer=lambda c: RecordingWriter())
    d.notifier.send = lambda *fields: None  # type: ignore[method-assign]
    d.setup()
    try:
        d.pusher.push()
        doc, _ = read_state(str(tmp_path / "run"))
    finally:
        d.close()
    assert doc is not None
    systemctl = program(tmp_path, "systemctl", "echo active")
    check = by_name(service_checks(True, 10.0, [], time.time(), doc, "", systemctl))["last push"]
    assert check.level == level and f"{age:.0f} s ago" in check.saw, check
    pushed = next(ln for ln in format_status(doc, time.time(), time.monotonic()).splitlines()
                  if ln.startswith("last push:"))
    assert f"({age:.0f}s ago)" in pushed, pushed


@pytest.mark.parametrize("changes,level,advice", [
    ({"lost_events": 12}, WARN, "raise buffer_size_kb"),
    ({"dropped_lines": 1}, WARN, "raise buffer_size_kb"),
    ({"reopens": 2}, WARN, "the trace source failed or ended"),
    ({"open": False}, FAIL, "cannot be opened"),
])
def test_the_service_counters(changes: Dict[str, Any], level: str, advice: str) -> None:
    trace: Dict[str, Any] = {**state()["trace"], **changes}
    check = counters_check(trace)
    assert check.level == level and advice in check.advice


@pytest.mark.parametrize("boost", [
    {"verified": False, "diagnosis": "not verified: the Manager does not resolve PIDs"},
    {"verified": True, "diagnosis": "this Decision Maker matches thread-group leaders only",
     "covered": [4242], "missing": [4243], "foreign": []},
    {"verified": True, "diagnosis": "1 task(s) this host does not track are boosted",
     "covered": [4242], "missing": [], "foreign": [{"pid": 9}]},
    "garbage"])
def test_the_services_read_back_passes_only_when_nothing_is_missing_or_foreign(
        boost: Any) -> None:
    check = readback_check(boost)
    assert check.level == WARN and check.advice.startswith("see the api and boost checks above")
    assert check.saw.startswith("the service's read-back: ")


def test_the_services_read_back_warns_while_no_gthulhu_scheduler_reads_it() -> None:
    """"all covered" is what the server lists; with the scheduler check FAILing (no
    sched_ext) an OK here said the gNB was boosted."""
    boost = {"verified": True, "diagnosis": "all covered: the scheduler boosts all 2 gNB "
             "tasks", "covered": [4242, 4243], "missing": [], "foreign": []}
    assert readback_check(boost).level == OK
    check = readback_check(boost, "this kernel has no sched_ext: the strategies have no effect")
    assert check.level == WARN
    assert check.advice == ("this kernel has no sched_ext: the strategies have no effect: see "
                            "the scheduler check")


def test_an_unreadable_state_file(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("[1, 2]")
    loaded, problem = read_state(str(tmp_path))
    assert loaded is None and "is not a JSON object" in problem
    systemctl = program(tmp_path, "systemctl", "echo active")
    checks = by_name(service_checks(False, 10.0, (), time.time(), loaded, problem,
                                    systemctl))
    assert checks["service"].level == FAIL
    assert checks["service"].saw.startswith(f"cannot tell: cannot read {tmp_path}/state.json")
