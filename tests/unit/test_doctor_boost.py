"""doctor's judgement of what the scheduler will boost and of how long the gNB's tasks
wait for a CPU (pure: comparisons and window reports in, checks out)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import pytest

from gtp5g_operator.commands.doctor.boost import boost_checks, not_verified_check, worst_note
from gtp5g_operator.commands.doctor.cpu_wait import CpuWait, Waits, cpu_wait_checks, from_state
from gtp5g_operator.commands.doctor.model import FAIL, OK, WARN, Check
from gtp5g_operator.core.readback import Comparison, TaskFacts
from gtp5g_operator.core.sched_ext import SchedulerState
from gtp5g_operator.core.schedstat import Counters, TaskWait, WindowReport
from gtp5g_operator.core.schedstat_text import report_json
from gtp5g_operator.core.tracker import TaskRef

SOURCE = "http://127.0.0.1:8080/api/v1/scheduling/strategies"


def facts(pid: int) -> TaskFacts:
    return TaskFacts(pid, pid, 7, "nr-gnb", "nr-gnb", 1001, "/home/eve/nr-gnb")


def rule(covered: List[int], missing: List[int], **kw: Any) -> Comparison:
    return Comparison("rule", len(covered) + len(missing), kw.pop("listed", len(covered)),
                      tuple(covered), tuple(missing), **kw)


def levels(checks: List[Check]) -> List[tuple[str, str, str]]:
    return [(c.name, c.subject, c.level) for c in checks]


def test_all_covered_passes() -> None:
    [check] = boost_checks(rule([10, 11, 12], []), SOURCE)
    assert (check.level, check.saw) == (OK, "all covered: the scheduler boosts all 3 gNB tasks "
                                            f"(read back from {SOURCE})")


def test_a_leaders_only_decision_maker_fails_with_n_of_m() -> None:
    [check] = boost_checks(rule([10], [11, 12], leaders_only=True), SOURCE)
    assert check.level == FAIL
    assert check.saw.startswith("this Decision Maker matches thread-group leaders only: the "
                                "scheduler boosts 1 of 3 gNB tasks")
    assert "thread-aware scan" in check.advice


@pytest.mark.parametrize("cmp,said", [
    (rule([], [10, 11]), f"{SOURCE} lists no task under this host's rule"),
    (Comparison("ids", 2, 0, (), (10, 11), others=5), f"{SOURCE} lists none of this host's IDs"),
])
def test_nothing_listed_warns_that_nothing_is_boosted(cmp: Comparison, said: str) -> None:
    [check] = boost_checks(cmp, SOURCE)
    assert (check.level, check.saw) == (
        WARN, f"the scheduler boosts none of the 2 tasks of the live gNB: {said}")
    assert "GTP-U traffic" in check.advice


def test_some_missing_warns_naming_them() -> None:
    [check] = boost_checks(rule([10, 11], [12]), SOURCE)
    assert check.level == WARN
    assert check.saw.startswith("the scheduler does not boost 1 of 3 gNB tasks (PIDs 12)")


def test_foreign_tasks_warn_one_line_each_with_the_pid_as_subject() -> None:
    checks = boost_checks(rule([10], [], foreign=tuple(facts(p) for p in range(100, 111))),
                          SOURCE)
    assert levels(checks)[:2] == [("boost", "", WARN), ("foreign task", "100", WARN)]
    assert checks[0].saw.startswith("11 task(s) this host does not track are boosted")
    assert checks[1].saw.startswith("boosted by our rule but not verified: PID 100 ('nr-gnb'), "
                                    "uid 1001, exe '/home/eve/nr-gnb'")
    assert len(checks) == 1 + 8 + 1 and checks[-1].saw == "and 3 more"


def test_not_verified_splits_what_was_seen_from_what_to_do() -> None:
    check = not_verified_check("what the scheduler boosts is not verified: the Manager does "
                               "not resolve PIDs; set api.decision_maker_url to this node's DM")
    assert (check.level, check.saw, check.advice) == (
        WARN, "what the scheduler boosts is not verified: the Manager does not resolve PIDs",
        "set api.decision_maker_url to this node's DM")


def test_the_worst_tasks_boost_in_words() -> None:
    cmp = rule([10], [11])
    assert worst_note(cmp, 11) == "; the scheduler does NOT boost its worst task 11"
    assert worst_note(cmp, 10) == "; the scheduler boosts its worst task 10"
    assert worst_note(cmp, 99) == worst_note(None, 11) == ""


# --- CPU wait ---------------------------------------------------------------------------------


def report(run_ms: int, wait_ms: int, worst_tid: int = 11) -> WindowReport:
    c = Counters(run_ms * 1_000_000, wait_ms * 1_000_000, 100)
    return WindowReport("nr-gnb", 60.0, c, 3, TaskWait(worst_tid, "nr-gnb-rlc", c))


def state(*reports: WindowReport, unavailable: str = "") -> Dict[str, Any]:
    return {"cpu_wait": {"unavailable": unavailable, "lifetime": {},
                         "last_window": [report_json(r) for r in reports]}}


def test_the_services_window_is_read_back_from_state_json() -> None:
    r = report(400, 600)
    assert from_state(state(r)) == Waits([r], "the service's last window")
    assert from_state(state()) is None  # no window closed yet: doctor samples
    assert from_state(None) is None and from_state({"cpu_wait": "x"}) is None
    assert from_state(state(unavailable="no schedstat")) == Waits(
        [], "the service's last window", "no schedstat")
    bad = state(r)
    bad["cpu_wait"]["last_window"][0]["worst"]["tid"] = -1
    with pytest.raises(ValueError, match=r"^cpu_wait.last_window\[0\].worst.tid: "):
        from_state(bad)


def test_waiting_more_than_the_limit_warns_naming_the_worst_task() -> None:
    waits = Waits([report(400, 600)], "the service's last window")
    [check] = cpu_wait_checks(waits, 0.4, rule([10], [11]))
    assert (check.name, check.subject, check.level) == ("cpu wait", "nr-gnb", WARN)
    assert check.saw == (
        "nr-gnb: waited 60.0 % of its runnable time for a CPU over the last 60 s (worst task "
        "nr-gnb-rlc 60.0 %, 6.0 ms per scheduling), more than --max-wait 40.0 % (the service's "
        "last window); the scheduler does NOT boost its worst task 11")
    assert "boost check" in check.advice
    [below] = cpu_wait_checks(Waits([report(700, 300)], "sampled by doctor"), 0.4, None)
    assert below.level == OK and below.saw.endswith("(sampled by doctor)")


def test_nothing_measured() -> None:
    [check] = cpu_wait_checks(Waits([], "sampled by doctor", "no schedstat here"), 0.4, None)
    assert (check.level, check.saw) == (WARN, "not measured: no schedstat here")
    [check] = cpu_wait_checks(Waits([], "sampled by doctor"), 0.4, None)
    assert check.level == OK


def test_where_the_cpu_wait_comes_from(tmp_path: Path) -> None:
    task = TaskRef(4242, 4242, 1, "nr-gnb", "nr-gnb")
    service = CpuWait(state(report(400, 600)), str(tmp_path), [task], 1.0)
    assert service.live is None and service.waits is not None  # the service's window
    assert CpuWait(state(), str(tmp_path), [task], 1.0).live is not None  # none yet: sample
    nothing = CpuWait(None, str(tmp_path), [], 1.0)
    assert nothing.live is None and nothing.checks(0.4, None)[0].level == OK
    [zero] = CpuWait(None, str(tmp_path), [task], 0.0).checks(0.4, None)
    assert (zero.level, zero.saw) == (WARN, "not measured: the service has no window yet and "
                                            "--window is 0")
    [bad] = CpuWait({"cpu_wait": {"last_window": [{"process": 7}]}}, str(tmp_path), [task],
                    1.0).checks(0.4, None)
    assert (bad.level, bad.saw) == (WARN, "state.json: cpu_wait.last_window[0].process: "
                                          "expected a string, got 7")


@pytest.mark.parametrize("scheduler,said", [
    (SchedulerState(False, "", ""), "this kernel has no sched_ext"),
    (SchedulerState(True, "disabled", ""), "no sched_ext scheduler is running"),
    (SchedulerState(True, "enabled", "simple"), "'simple' is running, not Gthulhu's"),
])
def test_all_listed_without_gthulhus_scheduler_warns(scheduler: SchedulerState,
                                                     said: str) -> None:
    """An OK "the scheduler boosts all" above the scheduler check's FAIL contradicted it."""
    for cmp in (rule([10, 11, 12], []),
                rule([10, 11, 12], [], foreign=(facts(99),), listed=4)):
        check = boost_checks(cmp, SOURCE, scheduler)[0]
        assert check.level == WARN
        assert check.saw.startswith(f"{SOURCE} lists all 3 tasks of the live gNB, but ")
        assert said in check.saw and "the strategies have no effect" in check.saw
        assert "boosts all" not in check.saw


def test_gthulhus_scheduler_running_keeps_the_ok() -> None:
    [check] = boost_checks(rule([10, 11], []), SOURCE, SchedulerState(True, "enabled", "goland"))
    assert check.level == OK and "boosts all 2" in check.saw
