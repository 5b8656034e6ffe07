"""The pure parts of the VM proof: the scheduler's log, the verdicts, the report lines.

Unmarked: they run in every `make test` (no VM needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from bench.vm import gthulhu_log, proof, qemu, verdict
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


SCHEDULER = {"sched_ext": True, "state": "enabled", "ops": "goland", "enabled": True}
ALL_COVERED = "all covered: the scheduler boosts all 4 gNB tasks"
LEADERS_ONLY = ("this Decision Maker matches thread-group leaders only: the scheduler boosts "
                "1 of 4 gNB tasks; a Decision Maker with the thread-aware scan boosts all")


def boost(covered: List[int], missing: List[int], diagnosis: str,
          foreign: Optional[List[Dict[str, Any]]] = None, **more: Any) -> Dict[str, Any]:
    """state.json's "boost" as core/boost_verdict.py BoostVerdict.state() writes it."""
    return {"verified": True, "source": "http://127.0.0.1:8080/api/v1/scheduling/strategies",
            "diagnosis": diagnosis, "scheduler": "goland", "covered": covered,
            "missing": missing, "foreign": foreign or [], "unseen": [], "others": 0,
            "gone": 0, "unchecked": 0, **more}


def records(boost_changes: List[List[Any]], exit_changes: List[List[Any]],
            operator: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    gnb = {"tgid": 100, "tids": TIDS, "first_event_ns": int(T0 * 1e9)}
    in_map = sorted(gthulhu_log.boosted_at(verdict._changes(boost_changes)) & set(TIDS.values()))
    op = operator if operator is not None else {
        "processes": [{"tgid": 100, "tids": list(TIDS.values())}],
        "scheduler": SCHEDULER,
        "boost": boost(in_map, sorted(set(TIDS.values()) - set(in_map)),
                       ALL_COVERED if len(in_map) == 4 else LEADERS_ONLY if in_map == [100]
                       else "the scheduler does not boost some")}
    after = {**op, "processes": []}
    return [
        {"kind": "scheduler", "enabled": True, "ops": "goland"},
        {"kind": "functional-boost", "gnb": gnb, "changes": boost_changes, "operator": op,
         "ops": "goland"},
        {"kind": "functional-exit", "gnb": gnb, "exited_at": T0 + 20,
         "changes": boost_changes + exit_changes, "operator": after},
    ]


ALL_IN = [[T0 + 1.2, t, True] for t in TIDS.values()]
ALL_OUT = [[T0 + 22.0, t, False] for t in TIDS.values()]


def test_thread_aware_dm_every_task_boosted_in_time_and_dropped_at_exit() -> None:
    f = verdict.judge_functional("pr135", "threads", records(ALL_IN, ALL_OUT))
    assert f.ok, f.summary()
    assert f.boost_latency == pytest.approx(1.2, abs=1e-3)
    assert f.exit_latency == pytest.approx(2.0, abs=1e-3)
    assert f.summary().startswith("4/4 tasks boosted by goland within 1.2 s, 0 foreign")
    assert f.readback.ok and f.brief() == ("4/4 tasks boosted by goland within 1.2 s, "
                                           "0 foreign, operator agrees (4/4 covered)")


def test_leader_only_dm_must_boost_the_leader_and_nothing_else() -> None:
    leader_in, leader_out = [[T0 + 2, 100, True]], [[T0 + 21, 100, False]]
    ok = verdict.judge_functional("v1.3.0", "leader", records(leader_in, leader_out))
    assert ok.ok, (ok.summary(), ok.readback.text)
    assert ok.brief(short=True) == "1/4 (the leader), operator agrees (leaders only)"
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
    f = verdict.judge_functional("pr135", "threads", records(boost, gone))
    assert not f.ok, why
    assert f.brief(short=True) == f.brief(), "a failed run is never shortened"


def test_a_boost_gone_before_the_exit_fails() -> None:
    # in the map for a moment, out again before the functional report looked
    flicker = ALL_IN + [[T0 + 2.0, t, False] for t in TIDS.values()]
    f = verdict.judge_functional("pr135", "threads", records(flicker, []))
    assert not f.held and not f.ok and "NOT held" in f.summary()


def test_an_operator_that_does_not_see_the_scheduler_fails() -> None:
    blind = {"processes": [{"tgid": 100, "tids": list(TIDS.values())}],
             "scheduler": {"sched_ext": True, "state": "", "ops": "", "enabled": False},
             "boost": boost(list(TIDS.values()), [], ALL_COVERED)}
    f = verdict.judge_functional("pr135", "threads", records(ALL_IN, ALL_OUT, blind))
    assert not f.ok and "the operator sees no scheduler running" in f.summary()


def test_an_operator_that_tracks_other_tasks_fails() -> None:
    partial = {"processes": [{"tgid": 100, "tids": [100, 101]}], "scheduler": SCHEDULER,
               "boost": boost([100, 101], [], "all covered: the scheduler boosts all 2",
                              unseen=[102, 103])}
    f = verdict.judge_functional("pr135", "threads", records(ALL_IN, ALL_OUT, partial))
    assert not f.ok and "the operator tracked [100, 101]" in f.summary()


def test_no_functional_report_is_a_failure() -> None:
    f = verdict.judge_functional("pr135", "threads", [{"kind": "scheduler", "ops": "goland"}])
    assert not f.ok and "no functional part" in f.readback.text


# --- the operator's read-back against the map ------------------------------------------

TRACKED = {"processes": [{"tgid": 100, "tids": [100, 101, 102, 103]}]}
GNB = set(TIDS.values())


def test_read_back_of_a_leaders_only_dm_agrees_with_a_map_of_the_leader() -> None:
    view = {**TRACKED, "boost": boost([100], [101, 102, 103], LEADERS_ONLY)}
    got = verdict.compare_operator_report(view, GNB, {100}, "goland")
    assert got.ok, got.text
    assert "covered 1, missing 3, foreign 0" in got.text and "leaders only" in got.text
    assert got.brief == "operator agrees (leaders only)"


def test_read_back_of_a_thread_aware_dm_agrees_with_a_full_map() -> None:
    view = {**TRACKED, "boost": boost([100, 101, 102, 103], [], ALL_COVERED)}
    got = verdict.compare_operator_report(view, GNB, GNB, "goland")
    assert got.ok and got.brief == "operator agrees (4/4 covered)", got.text


@pytest.mark.parametrize("said, in_map, wrong", [
    # it claims more than the map holds
    (boost([100, 101, 102, 103], [], ALL_COVERED), {100},
     "covered [100, 101, 102, 103] where the scheduler shows [100]"),
    # the right lists, the wrong words: the map shows leaders only
    (boost([100], [101, 102, 103], "the scheduler does not boost 3 of 4 gNB tasks"), {100},
     "does not say 'thread-group leaders only'"),
    # a foreign task in the map it did not see
    (boost([100, 101, 102, 103], [], ALL_COVERED), GNB | {4242},
     "foreign [] where the scheduler shows [4242]"),
    # not verified: nothing to compare
    ({**boost([], [], ""), "verified": False, "diagnosis": "not verified: a Manager"}, GNB,
     "not verified (not verified: a Manager)"),
    # another scheduler named
    (boost([100, 101, 102, 103], [], ALL_COVERED, scheduler="simple"), GNB,
     "it names the scheduler 'simple', sysfs 'goland'"),
    # a comparison it could not finish
    (boost([100, 101, 102, 103], [], ALL_COVERED, gone=1), GNB,
     "could not check every listed task ({'gone': 1})"),
])
def test_read_back_that_differs_from_the_map(said: Dict[str, Any], in_map: Any,
                                             wrong: str) -> None:
    got = verdict.compare_operator_report({**TRACKED, "boost": said}, GNB, set(in_map), "goland")
    assert not got.ok and wrong in got.text, got.text
    assert got.brief in ("operator DIFFERS", "operator did not verify")


def test_read_back_foreign_tasks_come_as_objects() -> None:
    foreign = [{"pid": 4242, "tgid": 4242, "comm": "nr-gnb", "process": "nr-gnb", "uid": 1000,
                "exe": "/home/eve/nr-gnb"}]
    view = {**TRACKED, "boost": boost([100, 101, 102, 103], [], ALL_COVERED, foreign)}
    got = verdict.compare_operator_report(view, GNB, GNB | {4242}, "goland")
    assert got.ok and "foreign 1" in got.text, got.text
    assert not verdict.compare_operator_report(view, GNB, GNB, "goland").ok


def test_read_back_of_a_thread_it_does_not_track_is_unseen() -> None:
    # the DM lists a gNB thread the trace has not shown yet: ours, not foreign
    three = {"processes": [{"tgid": 100, "tids": [100, 101, 102]}]}
    said = boost([100, 101, 102], [], "all covered: the scheduler boosts all 3", unseen=[103])
    assert verdict.compare_operator_report({**three, "boost": said}, GNB, GNB, "goland").ok
    blind: Dict[str, Any] = {**three, "boost": {**said, "unseen": []}}
    got = verdict.compare_operator_report(blind, GNB, GNB, "goland")
    assert not got.ok and "unseen [] where the scheduler shows [103]" in got.text


def test_read_back_absent_or_no_state() -> None:
    got = verdict.compare_operator_report(TRACKED, GNB, {100}, "goland")
    assert not got.ok and "no boost object" in got.text
    assert not verdict.compare_operator_report(None, GNB, {100}, "goland").ok


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


# --- CPU wait over the probe runs ----------------------------------------------------------


def waited(case: str, position: str, p99_ms: float, gnb_share: float,
           operator_share: Optional[float] = None) -> Dict[str, Any]:
    """A probe record whose gNB tasks waited `gnb_share` of their runnable time
    (each task alike; 1 s runnable per task), the operator reading `operator_share`."""
    rec = probe(case, position, p99_ms, case == "gthulhu-operator")
    wait = int(gnb_share * 1e9)
    rec["schedstat"] = {"before": {str(t): [5, 7, 1] for t in TIDS.values()},
                        "after": {str(t): [5 + 10**9 - wait, 7 + wait, 9] for t in
                                  TIDS.values()}}
    rec["gnb"] = {"tgid": 100, "tids": TIDS}
    if operator_share is not None:
        w = int(operator_share * 4e9)
        rec["operator_cpu_wait"] = {
            "before": {"unavailable": "", "lifetime": {"nr-gnb": {
                "run_ns": 10, "wait_ns": 20, "slices": 3}}},
            "after": {"unavailable": "", "lifetime": {"nr-gnb": {
                "run_ns": 10 + 4 * 10**9 - w, "wait_ns": 20 + w, "slices": 40}}}}
    return rec


def test_wait_share_of_one_run() -> None:
    w = verdict.wait_shares(waited("gthulhu-operator", "leader", 1.0, 0.25, 0.3))
    assert w.gnb == pytest.approx(0.25) and w.probe == pytest.approx(0.25)
    assert w.operator == pytest.approx(0.3)
    # a task gone between the readings: the gNB's sum is not one
    rec = waited("gthulhu-stopped", "leader", 1.0, 0.5)
    del rec["schedstat"]["after"]["101"]
    w = verdict.wait_shares(rec)
    assert w.gnb is None and w.probe == pytest.approx(0.5) and w.operator is None
    # counters that went backwards are no share; nor is an operator without schedstat
    rec = waited("gthulhu-operator", "leader", 1.0, 0.5, 0.5)
    rec["schedstat"]["after"]["100"] = [0, 0, 0]
    rec["operator_cpu_wait"]["after"]["unavailable"] = "no schedstat"
    w = verdict.wait_shares(rec)
    assert w.gnb is None and w.probe is None and w.operator is None


def test_wait_rows_say_whether_the_share_moved_as_the_p99_did() -> None:
    recs = []
    for case, p99, share in (("eevdf", 2.6, 0.2), ("gthulhu-stopped", 11.0, 0.6),
                             ("gthulhu-operator", 1.4, 0.1)):
        recs += [waited(case, "leader", p99, share,
                        0.12 if case == "gthulhu-operator" else None) for _ in range(3)]
        # the worker: its lateness barely moves, its wait share rises
        recs += [waited(case, "worker", p99 if case != "gthulhu-operator" else 10.6,
                        share if case != "gthulhu-operator" else 0.7)]
    effect = verdict.effect_rows("pr135", recs)
    leader, worker = verdict.wait_rows("pr135", recs, effect)
    assert leader.gnb == pytest.approx({"eevdf": 0.2, "gthulhu-stopped": 0.6,
                                        "gthulhu-operator": 0.1})
    assert leader.operator == pytest.approx(0.12)
    assert (leader.change(), leader.direction()) == ("60 % -> 10 %", "same (both down)")
    assert worker.direction() == "not the same (share up, p99 flat)"
    table = verdict.wait_table([leader, worker])
    assert table[2] == ("| pr135 | leader | 20 % | 60 % | 10 % | 12 % | 60 % | 10 % | 0.13 "
                        "| same (both down) |")
    line = verdict.wait_share_line([leader, worker], recs)
    assert ("leader probe: gNB 60 % -> 10 % with the boost (the operator's own reading 12 %), "
            "p99 0.13: same (both down)") in line
    assert "worker probe: gNB 60 % -> 70 %" in line
    assert "differ by at most 2.0 points" in line


def test_no_schedstat_is_said() -> None:
    recs = [probe(c, pos, 1.0, False) for c in verdict.CASES for pos in verdict.POSITIONS]
    rows = verdict.wait_rows("pr135", recs, verdict.effect_rows("pr135", recs))
    assert rows[0].direction() == "-"
    assert "not measured" in verdict.wait_share_line(rows, recs)


# --- the report's last line ------------------------------------------------------------------


def dm_records(dm: str) -> List[Dict[str, Any]]:
    """A boot's records: the functional part as the DM build boosts, and the probe
    runs of every case (the leader probe boosted by either DM build, the worker
    only by the thread-aware one)."""
    leader_only = dm == "v1.3.0"
    boost_in = [[T0 + 2, 100, True]] if leader_only else ALL_IN
    boost_out = [[T0 + 21, 100, False]] if leader_only else ALL_OUT
    recs = records(boost_in, boost_out)
    for case, p99, share in (("eevdf", 2.6, 0.2), ("gthulhu-stopped", 11.0, 0.61),
                             ("gthulhu-operator", 1.3, 0.09)):
        for pos in verdict.POSITIONS:
            unboosted = case == "gthulhu-operator" and leader_only and pos == "worker"
            recs.append(waited(case, pos, 9.7 if unboosted else p99,
                               0.58 if unboosted else share,
                               (0.58 if unboosted else 0.1) if case == "gthulhu-operator"
                               else None))
    return recs


def test_the_last_line_has_the_read_back_and_the_wait_share() -> None:
    runs = [proof.DmRun(dm, expect, dm_records(dm), boots=1)
            for dm, expect in (("v1.3.0", "leader"), ("pr135", "threads"))]
    lines = proof.report_lines(runs, proof.parse_args(["--reps", "1"]))
    assert lines[-1] == (
        "vm-proof: functional ok (pr135: 4/4 tasks boosted by goland within 1.2 s, 0 foreign, "
        "operator agrees (4/4 covered); v1.3.0: 1/4 (the leader), operator agrees (leaders "
        "only)); p99 boosted/unboosted 0.12 (1 runs), leader-only DM: worker probe 0.88; gNB "
        "wait share 61 % -> 9.0 % with the boost (the operator's own reading 10 %), the same "
        "way as the p99; emulated, ratios only; oops retries 0")
    # 61 % -> 58 % is within the flat band, p99 0.88 is not
    assert ("| v1.3.0 | worker | 20 % | 61 % | 58 % | 58 % | 61 % | 58 % | 0.88 | not the same "
            "(share flat, p99 down) |") in lines
    assert any(x.startswith("DM v1.3.0: operator read-back agrees with the scheduler's map "
                            "(covered 1, missing 3,") for x in lines)
    functional = proof.report_lines(runs, proof.parse_args(["--functional-only"]))
    assert functional[-1].endswith("v1.3.0: 1/4 (the leader), operator agrees (leaders only))")
    assert not any("wait share" in x for x in functional)


def test_a_stored_run_is_judged_again_without_a_boot(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    stored = tmp_path / "vm-proof-2026-12-06.json"
    stored.write_text(json.dumps({"runs": [
        {"dm": dm, "boots": 1, "oopses": [], "failures": [], "seconds": 300.0,
         "records": dm_records(dm)} for dm in ("v1.3.0", "pr135")]}))
    # a .md from before the header was stored in the .json: its header is kept
    stored.with_suffix(".md").write_text("# vm-proof 2026-12-06\n\n- host: a test\n\nold lines\n")
    assert proof.main(["--rejudge", str(stored)]) == 0
    md = stored.with_suffix(".md").read_text().splitlines()
    assert md[:4] == ["# vm-proof 2026-12-06", "", "- host: a test", ""]
    assert "old lines" not in md and md[-1].startswith("vm-proof: functional ok (pr135: 4/4")
    assert capsys.readouterr().out.splitlines()[-1] == md[-1]
    stored.write_text("{}")
    assert proof.main(["--rejudge", str(stored)]) == 2
