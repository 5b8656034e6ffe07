"""/health's answer (pure) and the sched_ext watch over an injected sysfs root."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import pytest

from gtp5g_operator.core.sched_ext import SchedulerState, read_scheduler
from gtp5g_operator.service.health import STALL_GRACE, health_answer
from gtp5g_operator.service.runtime_files import Heartbeat
from gtp5g_operator.service.runtime_names import HEARTBEAT_FILE, decode_heartbeat
from gtp5g_operator.service.scheduler_watch import SchedulerWatch

NOW = 1000.0


def doc(**kw: Any) -> Dict[str, Any]:
    base: Dict[str, Any] = {"tracked_processes": 1, "tracked_tasks": 3, "started_mono": 900.0,
                            "resync_interval": 10.0, "last_success_mono": 995.0,
                            "last_push": {"ok": True, "at_mono": 995.0, "error_kind": ""},
                            "api": {"flavor": "v0"}, "trace": {"format": "text"},
                            "scheduler": {"enabled": False}}
    return {**base, **kw}


@pytest.mark.parametrize("document,beat,code,status", [
    (doc(), (999.0, 1001.0), 200, "ok"),
    (doc(), (990.0, 999.0), 200, "ok"),  # within the grace after its promised turn
    (doc(), (990.0, 1000.0 - STALL_GRACE - 0.1), 503, "stalled"),
    (doc(), None, 503, "stalled"),  # no heartbeat at all
    (doc(last_success_mono=960.0), (999.0, 1001.0), 503, "api-unreachable"),  # > 3 x 10 s
    (doc(last_success_mono=None, started_mono=990.0), (999.0, 1001.0), 200, "ok"),  # young
    (doc(last_success_mono=None, started_mono=900.0), (999.0, 1001.0), 503,
     "api-unreachable"),
    (None, (999.0, 1001.0), 503, "starting"),
])
def test_health_answer(document: Optional[Dict[str, Any]],
                       beat: Optional[Tuple[float, float]], code: int, status: str) -> None:
    got_code, body = health_answer(document, beat, NOW)
    assert (got_code, body["status"]) == (code, status)


def test_health_body_says_what_a_monitor_needs() -> None:
    _, body = health_answer(doc(), (999.0, 1001.0), NOW)
    assert body["tracked_processes"] == 1 and body["tracked_tasks"] == 3
    assert body["last_push"] == {"ok": True, "age_s": 5.0, "error_kind": None}
    assert body["loop_turned_s_ago"] == 1.0
    assert body["scheduler"] == {"enabled": False}  # reported, not a 503


def sysfs(tmp: Path, state: Optional[str], ops: str = "") -> str:
    base = tmp / "kernel" / "sched_ext"
    if state is None:
        return str(tmp)
    (base / "root").mkdir(parents=True, exist_ok=True)
    (base / "state").write_text(state + "\n")
    ops_file = base / "root" / "ops"
    if ops:
        ops_file.write_text(ops + "\n")
    elif ops_file.exists():
        ops_file.unlink()
    return str(tmp)


@pytest.mark.parametrize("state,ops,supported,enabled", [
    (None, "", False, False),
    ("disabled", "", True, False),
    ("enabled", "gthulhu", True, True),
    ("enabled", "rustland", True, True),
])
def test_read_scheduler(tmp_path: Path, state: Optional[str], ops: str, supported: bool,
                        enabled: bool) -> None:
    s = read_scheduler(sysfs(tmp_path, state, ops))
    assert (s.supported, s.enabled) == (supported, enabled)


@pytest.mark.parametrize("ops,gthulhu", [("gthulhu", True), ("goland", True),
                                          ("rustland", False), ("simple", False)])
def test_gthulhus_scheduler_is_known_by_its_ops_name(ops: str, gthulhu: bool) -> None:
    # Gthulhu's scheduler registers as "goland" (its BPF part, Gthulhu/qumun)
    assert SchedulerState(True, "enabled", ops).looks_like_gthulhu is gthulhu


def test_the_watch_says_when_the_scheduler_goes_and_comes_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    root = sysfs(tmp_path, "enabled", "gthulhu")
    watch = SchedulerWatch(root)
    watch.check()
    assert watch.status_note() == ""
    sysfs(tmp_path, "disabled")
    watch.check()
    watch.check()  # once per change, not per pass
    assert watch.status_note() == ("no sched_ext scheduler is running (state disabled): the "
                                   "strategies have no effect")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "have no effect until one" in warnings[0]
    sysfs(tmp_path, "enabled", "scx_other")
    watch.check()
    assert any("'scx_other' is running, not Gthulhu's: the strategies this service writes "
               "have no effect" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)
    # and STATUS= says it as it says no scheduler, whether or not a gNB is tracked
    assert watch.status_note() == ("sched_ext scheduler 'scx_other' is running, not "
                                   "Gthulhu's: the strategies have no effect")


def test_sysfs_attributes_are_read_whatever_size_they_claim() -> None:
    """sysfs says every attribute is 4096 bytes long (one page) whatever it holds; a
    read limited below that refused them all and the daemon never saw a running
    scheduler (found by the VM proof on Linux 7.2).  Read a real sysfs attribute."""
    from gtp5g_operator.core import sched_ext

    found = [p for p in ("/sys/kernel/mm/transparent_hugepage/enabled",
                         "/sys/devices/system/cpu/online", "/sys/kernel/profiling")
             if os.path.exists(p)]
    if not found:
        pytest.skip("no sysfs attribute to read here")
    path = found[0]
    if os.stat(path).st_size < 4096:
        pytest.skip(f"{path} does not claim a page-sized length here")
    assert sched_ext._read(path) != ""


def test_the_heartbeat_is_readable_by_the_endpoint_whatever_the_umask(tmp_path: Path) -> None:
    # the endpoint child reads it as another user; a daemon started by hand under
    # umask 077 (or a stale file of another mode) must not make /health say "stalled"
    (tmp_path / HEARTBEAT_FILE).touch(mode=0o600)
    old = os.umask(0o077)
    try:
        beat = Heartbeat(str(tmp_path))
    finally:
        os.umask(old)
    try:
        assert (tmp_path / HEARTBEAT_FILE).stat().st_mode & 0o777 == 0o644
    finally:
        beat.close()


def test_a_heartbeat_made_again_holds_the_turns_promise(tmp_path: Path) -> None:
    # The liveness pass makes the file again when it was removed; the turn goes on (a
    # push may follow, whose extend() writes only a later promise): a zeroed file read
    # as "stalled" until the next turn's beat.
    beat = Heartbeat(str(tmp_path))
    try:
        beat.beat(100.0, 130.0)
        (tmp_path / HEARTBEAT_FILE).unlink()
        beat.check()
        beat.extend(120.0)  # an exchange whose end the turn's promise already covers
        data = (tmp_path / HEARTBEAT_FILE).read_bytes()
        assert decode_heartbeat(data) == (100.0, 130.0)
    finally:
        beat.close()
