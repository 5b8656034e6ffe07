"""The pure parts of the VM proof: the scheduler's log, the verdicts, the report lines.

Unmarked: they run in every `make test` (no VM needed)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import pytest

from bench.vm import gthulhu_log, qemu, verdict
from bench.vm.guest.run import Plan

T0 = 1_800_000_000.0  # the gNB's first event, seconds since the epoch
TIDS = {"nr-gnb": 100, "nr-gnb-rlc": 101, "nr-gnb-gtpu": 102, "nr-gnb-slot": 103}


def slog(at: float, msg: str, pid: int) -> str:
    from datetime import datetime, timezone
    stamp = datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="milliseconds")
    stamp = stamp.replace("+00:00", "Z")
    extra = " executionTime=20000000 priority=1" if msg == "Updated" else ""
    return f'time={stamp} level=INFO msg="{msg} priority task" pid={pid}{extra}'


# --- gthulhu_log ------------------------------------------------------------------


def test_the_log_replays_into_the_maps_content_over_time() -> None:
    lines = [
        'time=2026-12-06T13:00:00.000Z level=INFO msg="scheduler started"',
        slog(T0 + 1.5, "Updated", 100),
        slog(T0 + 1.5, "Updated", 101),
        "garbage line",
        'time=nonsense level=INFO msg="Updated priority task" pid=5',
        slog(T0 + 9.0, "Removed", 101),
        slog(T0 + 9.2, "Removed", 100),
    ]
    changes = gthulhu_log.map_changes(lines)
    assert [(c.pid, c.added) for c in changes] == [(100, True), (101, True), (101, False),
                                                  (100, False)]
    assert changes[0].at == pytest.approx(T0 + 1.5, abs=1e-3)
    assert gthulhu_log.boosted_at(changes, T0 + 2) == {100, 101}
    assert gthulhu_log.boosted_at(changes, T0 + 9.1) == {100}
    assert gthulhu_log.boosted_at(changes) == set()
    assert gthulhu_log.first_added(changes, after=T0) == pytest.approx(
        {100: T0 + 1.5, 101: T0 + 1.5}, abs=1e-3)
    assert set(gthulhu_log.last_removed(changes, after=T0 + 5)) == {100, 101}
    assert gthulhu_log.started(lines)


@pytest.mark.parametrize("text, expected", [
    ("2026-12-06T13:21:42.123Z", 1796563302.123),
    ("2026-12-06T14:21:42.123+01:00", 1796563302.123),
    ("2026-12-06T13:21:42Z", 1796563302.0),
    ("yesterday", None),
])
def test_slog_times(text: str, expected: Optional[float]) -> None:
    got = gthulhu_log.parse_time(text)
    assert got == (None if expected is None else pytest.approx(expected, abs=1e-3))


# --- the guest's plan and report lines ---------------------------------------------


def test_the_plan_comes_from_the_kernel_command_line() -> None:
    plan = Plan.from_cmdline("console=ttyS0 quiet proof.dm=v1.3.0 proof.expect=leader "
                             "proof.reps=5 proof.secs=2.5 proof.parts=functional\n")
    assert (plan.dm, plan.expect, plan.reps, plan.secs, plan.hogs) == (
        "v1.3.0", "leader", 5, 2.5, 4)
    assert plan.parts == {"functional"}


def test_report_lines_are_read_and_anything_else_ignored() -> None:
    text = ('noise\r\nPROOF {"kind": "plan", "dm": "pr135"}\r\nPROOF {broken\n'
            'PROOF {"kind": "done"}\n')
    assert qemu.parse_report(text) == [{"kind": "plan", "dm": "pr135"}, {"kind": "done"}]


# --- functional verdict ------------------------------------------------------------


def records(boost: List[List[Any]], exit_changes: List[List[Any]],
            operator: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    gnb = {"tgid": 100, "tids": TIDS, "first_event_ns": int(T0 * 1e9)}
    op = operator if operator is not None else {
        "processes": [{"tgid": 100, "tids": list(TIDS.values())}],
        "scheduler": {"sched_ext": True, "state": "enabled", "ops": "goland", "enabled": True}}
    after = {**op, "processes": []}
    return [
        {"kind": "scheduler", "enabled": True, "ops": "goland"},
        {"kind": "functional-boost", "gnb": gnb, "changes": boost, "operator": op,
         "ops": "goland"},
        {"kind": "functional-exit", "gnb": gnb, "exited_at": T0 + 20,
         "changes": boost + exit_changes, "operator": after},
    ]


ALL_IN = [[T0 + 1.2, t, True] for t in TIDS.values()]
ALL_OUT = [[T0 + 22.0, t, False] for t in TIDS.values()]


def test_thread_aware_dm_every_task_boosted_in_time_and_dropped_at_exit() -> None:
    f = verdict.judge_functional("pr135", "threads", records(ALL_IN, ALL_OUT))
    assert f.ok, f.summary()
    assert f.boost_latency == pytest.approx(1.2, abs=1e-3)
    assert f.exit_latency == pytest.approx(2.0, abs=1e-3)
    assert f.summary().startswith("4/4 tasks boosted by goland within 1.2 s, 0 foreign")
    assert f.operator_ok is None and "not available in this tree" in f.operator_text


def test_leader_only_dm_must_boost_the_leader_and_nothing_else() -> None:
    leader_in, leader_out = [[T0 + 2, 100, True]], [[T0 + 21, 100, False]]
    assert verdict.judge_functional("v1.3.0", "leader", records(leader_in, leader_out)).ok
    # had it boosted every thread, v1.3.0 would not be what we think it is
    f = verdict.judge_functional("v1.3.0", "leader", records(ALL_IN, ALL_OUT))
    assert not f.ok and f.boosted == set(TIDS.values())


@pytest.mark.parametrize("boost, gone, why", [
    ([[T0 + 1, 100, True], [T0 + 1, 101, True]], ALL_OUT, "threads missing"),
    ([[T0 + 15, t, True] for t in TIDS.values()], ALL_OUT, "too late"),
    ([*ALL_IN, [T0 + 1, 4242, True]], ALL_OUT, "a foreign task"),
    (ALL_IN, ALL_OUT[:2], "two still boosted after exit"),
    (ALL_IN, [[T0 + 50, t, False] for t in TIDS.values()], "dropped too late"),
])
def test_functional_failures(boost: List[List[Any]], gone: List[List[Any]], why: str) -> None:
    assert not verdict.judge_functional("pr135", "threads", records(boost, gone)).ok, why


def test_a_boost_gone_before_the_exit_fails() -> None:
    # in the map for a moment, out again before the functional report looked
    flicker = ALL_IN + [[T0 + 2.0, t, False] for t in TIDS.values()]
    f = verdict.judge_functional("pr135", "threads", records(flicker, []))
    assert not f.held and not f.ok and "NOT held" in f.summary()


def test_an_operator_that_does_not_see_the_scheduler_fails() -> None:
    blind = {"processes": [{"tgid": 100, "tids": list(TIDS.values())}],
             "scheduler": {"sched_ext": True, "state": "", "ops": "", "enabled": False}}
    f = verdict.judge_functional("pr135", "threads", records(ALL_IN, ALL_OUT, blind))
    assert not f.ok and "the operator sees no scheduler running" in f.summary()


def test_an_operator_that_tracks_other_tasks_fails() -> None:
    partial = {"processes": [{"tgid": 100, "tids": [100, 101]}],
               "scheduler": {"sched_ext": True, "state": "enabled", "ops": "goland",
                             "enabled": True}}
    f = verdict.judge_functional("pr135", "threads", records(ALL_IN, ALL_OUT, partial))
    assert not f.ok and "the operator tracked [100, 101]" in f.summary()


def test_no_functional_report_is_a_failure() -> None:
    f = verdict.judge_functional("pr135", "threads", [{"kind": "scheduler", "ops": "goland"}])
    assert not f.ok and "no functional part" in f.operator_text


# --- the operator's read-back against the map ------------------------------------------

TRACKED = {"processes": [{"tgid": 100, "tids": [100, 101, 102, 103]}]}


def test_read_back_that_says_what_the_map_shows_matches() -> None:
    view = {**TRACKED, "boost": {"verified": False, "covered": [100], "missing": [101, 102, 103],
                                 "foreign": [], "diagnosis": "the DM lists leaders only"}}
    ok, text = verdict.compare_operator_report(view, set(TIDS.values()), {100})
    assert ok is True and "covered 1, missing 3, foreign 0" in text and "leaders only" in text


def test_read_back_that_claims_more_than_the_map_differs() -> None:
    view = {**TRACKED, "boost": {"verified": True, "covered": [100, 101, 102, 103],
                                 "missing": [], "foreign": []}}
    ok, text = verdict.compare_operator_report(view, set(TIDS.values()), {100})
    assert ok is False and "covered [100, 101, 102, 103] where the scheduler shows [100]" in text


def test_read_back_foreign_tasks_come_as_objects() -> None:
    # the closed-loop issue's shape: foreign entries describe the task
    view = {**TRACKED, "boost": {"verified": True, "covered": [100, 101, 102, 103],
                                 "missing": [], "foreign": [{"pid": 4242, "comm": "nr-gnb-rlc"}]}}
    ok, text = verdict.compare_operator_report(view, set(TIDS.values()), {100, 101, 102, 103,
                                                                          4242})
    assert ok is True and "foreign 1" in text
    ok, _ = verdict.compare_operator_report(view, set(TIDS.values()), set(TIDS.values()))
    assert ok is False


def test_read_back_absent_or_no_state() -> None:
    assert verdict.compare_operator_report(TRACKED, {100}, {100})[0] is None
    assert verdict.compare_operator_report(None, {100}, {100})[0] is False


# --- effect -------------------------------------------------------------------------


def probe(case: str, position: str, p99_ms: float, boosted: bool) -> Dict[str, Any]:
    tid = 100 if position == "leader" else 103
    return {"kind": "probe", "case": case, "position": position, "rep": 1,
            "boosted": [tid] if boosted else [],
            "result": {"tid": tid, "p99_us": p99_ms * 1000, "p50_us": 300.0}}


def test_medians_ratios_and_the_table() -> None:
    recs = []
    for p99s, case, boosted in (([5.0, 6.0, 5.5], "eevdf", False),
                                ([12.0, 11.0, 13.0], "gthulhu-stopped", False),
                                ([4.0, 4.4, 3.9], "gthulhu-operator", True)):
        recs += [probe(case, "leader", v, boosted) for v in p99s]
        recs += [probe(case, "worker", v * (1 if case != "gthulhu-operator" else 3), False)
                 for v in p99s]
    leader, worker = verdict.effect_rows("v1.3.0", recs)
    assert leader.cells["eevdf"].median() == 5500.0
    assert leader.cells["eevdf"].median("p50") == 300.0
    assert leader.boost_ratio() == pytest.approx(4.0 / 12.0)
    assert leader.vs_eevdf() == pytest.approx(4.0 / 5.5)
    assert (leader.probe_boosted(), worker.probe_boosted()) == ("yes", "no")
    assert leader.runs() == 3
    table = verdict.effect_table([leader, worker])
    assert table[2].startswith("| v1.3.0 | leader | 5.5 [5.0-6.0] (n=3) | 12.0 [11.0-13.0] (n=3)")
    assert table[2].endswith("| 0.33 | 0.73 | yes |")
    assert "0.30 [0.30-0.30] (n=3)" in verdict.effect_table([leader], "p50")[2]


def test_wait_share_hook() -> None:
    assert "not available" in verdict.wait_share_line([probe("gthulhu-operator", "leader", 4,
                                                              True)])
    rec = {**probe("gthulhu-operator", "leader", 4, True),
           "operator": {"waits": {"100": 0.1, "101": {"share": 0.5}, "x": "bad"}}}
    line = verdict.wait_share_line([rec])
    assert "boosted tasks 0.10" in line and "unboosted gNB tasks 0.50" in line
