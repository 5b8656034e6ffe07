"""The read-back (issue 19), pure: validating the scheduler's list, comparing it with the
tracked set, what each difference means, and saying it once per episode.

/proc is a table here (the comparison only asks who a listed ID is); the integration
test tests/integration/test_readback_dm.py runs the same code against the real /proc.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest

from gtp5g_operator.core.boost_verdict import (
    BoostReporter,
    Finding,
    diagnose,
    not_verified,
    verdict,
)
from gtp5g_operator.core.procfs import ProcessInfo, ProcFS, TaskInfo
from gtp5g_operator.core.readback import (
    MAX_LOOKUPS,
    Comparison,
    ListedEntry,
    TaskFacts,
    compare_ids,
    compare_rule,
)
from gtp5g_operator.core.sched_ext import SchedulerState
from gtp5g_operator.core.tracker import ProcessView
from gtp5g_operator.gthulhu.answers import MAX_LISTED, listed_strategies
from gtp5g_operator.gthulhu.errors import ApiError
from tests.doubles import Clock

RULE = "^(?:gnb worker|nr-gnb|nr-gnb-rlc)$"
GTHULHU = SchedulerState(True, "enabled", "gthulhu")
NOBODY = 65534


class ProcTable(ProcFS):
    """Who each task ID is: tid -> (tgid, start time, its own name); process facts by tgid."""

    def __init__(self) -> None:
        super().__init__("/nonexistent")  # every read the comparison makes is overridden
        self.tasks: Dict[int, Tuple[int, int, str]] = {}
        self.processes: Dict[int, ProcessInfo] = {}
        self.lookups = 0  # who-is-it look-ups (the budgeted ones)
        self.listings = 0  # listings of /proc/TGID/task

    def add(self, tgid: int, comm: str, uid: int = 0, exe: str = "/usr/bin/nr-gnb",
            threads: Sequence[Tuple[int, str]] = (), start: int = 1) -> ProcTable:
        self.processes[tgid] = ProcessInfo(tgid, start, comm, exe, uid)
        self.tasks[tgid] = (tgid, start, comm)
        for tid, name in threads:
            self.tasks[tid] = (tgid, start + 1, name)
        return self

    def task_ids(self, tgid: int) -> List[int]:
        self.listings += 1
        return sorted(tid for tid, (owner, _, _) in self.tasks.items() if owner == tgid)

    def task(self, tid: int) -> Optional[TaskInfo]:
        self.lookups += 1
        known = self.tasks.get(tid)
        return TaskInfo(tid, known[0], known[1]) if known else None

    def process(self, tgid: int) -> Optional[ProcessInfo]:
        return self.processes.get(tgid)

    def thread_name(self, tgid: int, tid: int) -> Optional[str]:
        known = self.tasks.get(tid)
        return known[2] if known and known[0] == tgid else None


GNB_THREADS = ((101, "nr-gnb-rlc"), (102, "gnb worker"), (103, "gnb worker"))


def world() -> ProcTable:
    """The gNB (100 + three threads, 104 a worker the trace never showed), an impostor
    process named nr-gnb under another uid (200), a thread named `gnb worker` in another
    user's process (301), and an unrelated process (400)."""
    return (ProcTable()
            .add(100, "nr-gnb", threads=(*GNB_THREADS, (104, "gnb worker")))
            .add(200, "nr-gnb", uid=NOBODY, exe="/usr/bin/python3.11", start=50)
            .add(300, "helper", uid=1000, exe="/opt/x/helper", threads=((301, "gnb worker"),))
            .add(400, "sshd"))


def gnb(tids: Sequence[int] = (100, 101, 102, 103), tgid: int = 100) -> ProcessView:
    return ProcessView(tgid, "nr-gnb", "/usr/bin/nr-gnb", 0, 0.0, tuple(tids),
                       frozenset({"nr-gnb", "nr-gnb-rlc", "gnb worker"}))


def under(regex: Optional[str], *pids: int) -> List[ListedEntry]:
    return [ListedEntry(p, regex) for p in pids]


def foreign_pids(cmp: Comparison) -> List[int]:
    return [f.pid for f in cmp.foreign]


# --- validating what the server lists ------------------------------------------------------


@pytest.mark.parametrize("items,expected", [
    (None, []),  # v0 answers null when nothing resolves
    ([], []),
    ([{"priority": 1, "execution_time": 20000000, "pid": 4242, "command_regex": RULE}],
     [ListedEntry(4242, RULE)]),
    ([{"pid": 7, "priority": True}], [ListedEntry(7, None)]),  # v0: explicit PIDs
    ([{"pid": 7, "command_regex": ""}], [ListedEntry(7, None)]),  # not from a rule
    ([{"pid": 0, "selectors": [{"key": "a"}]}, {"selectors": []}, {"pid": 9}],
     [ListedEntry(9, None)]),  # another writer's selector entries carry no PID
])
def test_a_listing_is_read(items: Any, expected: List[ListedEntry]) -> None:
    assert listed_strategies({"scheduling": items}) == expected


@pytest.mark.parametrize("items,error", [
    ({"pid": 1}, "scheduling is not a list"),
    ("[]", "scheduling is not a list"),
    ([1], r"scheduling\[0\] is not an object"),
    ([{"pid": 1}, {"pid": True}], r"scheduling\[1\]\.pid is not a PID: True"),
    ([{"pid": "42"}], r"pid is not a PID: '42'"),
    ([{"pid": 4.2}], "pid is not a PID: 4.2"),
    ([{"pid": -3}], "pid is not a PID: -3"),
    ([{"pid": 1 << 40}], "pid is not a PID: 1099511627776"),
    ([{"pid": 5, "command_regex": ["x"]}], r"command_regex is not a string: list"),
    ([{"pid": "y" * 100}], r"'yyy+\.\.\.$"),  # a long value is cut short
    ([{"pid": 1}] * (MAX_LISTED + 1), f"lists {MAX_LISTED + 1} entries, more than"),
])
def test_a_malformed_listing_is_refused_in_one_line(items: Any, error: str) -> None:
    with pytest.raises(ApiError, match=error) as exc:
        listed_strategies({"scheduling": items})
    assert exc.value.kind == "bad-answer"
    assert "\n" not in str(exc.value) and len(str(exc.value)) < 120


def test_the_answer_of_a_strategies_get_is_unwrapped() -> None:
    body = {"success": True, "message": "Scheduling intents retrieved successfully",
            "timestamp": "2026-08-20T10:00:00Z", "scheduling": [{"pid": 3, "command_regex": RULE}]}
    assert listed_strategies(body) == [ListedEntry(3, RULE)]
    assert listed_strategies({"success": True}) == []
    with pytest.raises(ApiError, match="not a JSON object"):
        listed_strategies(["scheduling"])


# --- the comparison: rule flavors ------------------------------------------------------------


RULE_CASES = [
    # (what, tracked views, listed, covered, missing, unseen, foreign, leaders_only)
    ("a thread-aware DM lists every tracked task",
     [gnb()], under(RULE, 100, 101, 102, 103), (100, 101, 102, 103), (), (), [], False),
    ("a leaders-only DM lists the process only",
     [gnb()], under(RULE, 100), (100,), (101, 102, 103), (), [], True),
    ("leaders only; the main thread never appeared in the trace: ours, not foreign",
     [gnb((101, 102))], under(RULE, 100), (), (101, 102), (100,), [], True),
    ("thread-aware; the main thread never appeared in the trace",
     [gnb((101, 102))], under(RULE, 100, 101, 102), (101, 102), (), (100,), [], False),
    ("thread-aware lists a gNB thread the trace has not shown yet (by TID): ours",
     [gnb((100, 101))], under(RULE, 100, 101, 102, 104), (100, 101), (), (102, 104), [],
     False),
    ("an impostor process named nr-gnb under another uid is foreign",
     [gnb()], under(RULE, 100, 101, 102, 103, 200), (100, 101, 102, 103), (), (), [200],
     False),
    ("leaders only, with an impostor",
     [gnb()], under(RULE, 100, 200), (100,), (101, 102, 103), (), [200], True),
    ("another user's thread named like a gNB thread is foreign (by TID)",
     [gnb()], under(RULE, 100, 101, 102, 103, 301), (100, 101, 102, 103), (), (), [301],
     False),
    ("one thread not listed (renamed since the rule was written): not the leaders-only sign",
     [gnb()], under(RULE, 100, 101, 103), (100, 101, 103), (102,), (), [], False),
    ("one thread not listed, but a listed thread proves a thread-aware scan",
     [gnb((100, 101))], under(RULE, 100, 301), (100,), (101,), (), [301], False),
    ("the same with a gNB thread the trace has not shown",
     [gnb((100, 101))], under(RULE, 100, 104), (100,), (101,), (104,), [], False),
    ("a gNB of a single task is covered by either scan",
     [gnb((100,))], under(RULE, 100), (100,), (), (), [], False),
    ("nothing listed",
     [gnb()], [], (), (100, 101, 102, 103), (), [], False),
    ("only other rules' entries: nothing is ours",
     [gnb()], under("^sshd$", 400) + under(None, 100), (), (100, 101, 102, 103), (), [],
     False),
    ("this host holds no rule: nothing is ours, nothing is foreign",
     [], under(None, 200) + under(RULE, 200), (), (), (), [], False),
    ("two gNB processes, one leader not listed: not the leaders-only sign",
     [gnb(), gnb((200,), tgid=200)], under(RULE, 100), (100,), (101, 102, 103, 200), (), [],
     False),
]


@pytest.mark.parametrize("what,views,listed,covered,missing,unseen,foreign,leaders_only",
                         RULE_CASES, ids=[c[0] for c in RULE_CASES])
def test_compare_rule(what: str, views: List[ProcessView], listed: List[ListedEntry],
                      covered: Tuple[int, ...], missing: Tuple[int, ...],
                      unseen: Tuple[int, ...], foreign: List[int], leaders_only: bool) -> None:
    cmp = compare_rule(listed, RULE if views else None, views, world())
    assert (cmp.covered, cmp.missing, cmp.unseen, foreign_pids(cmp), cmp.leaders_only) == (
        covered, missing, unseen, foreign, leaders_only)
    assert cmp.tracked == sum(len(v.tids) for v in views)
    assert cmp.clean == (not missing and not foreign)


def test_a_foreign_task_is_described_by_its_facts() -> None:
    cmp = compare_rule(under(RULE, 100, 200, 301), RULE, [gnb((100,))], world())
    assert [f.as_dict() for f in cmp.foreign] == [
        {"pid": 200, "tgid": 200, "comm": "nr-gnb", "process": "nr-gnb", "uid": NOBODY,
         "exe": "/usr/bin/python3.11"},
        {"pid": 301, "tgid": 300, "comm": "gnb worker", "process": "helper", "uid": 1000,
         "exe": "/opt/x/helper"}]
    assert cmp.foreign[0].describe() == (
        "PID 200 ('nr-gnb'), uid 65534, exe '/usr/bin/python3.11'")
    assert cmp.foreign[1].describe() == (
        "thread 301 ('gnb worker') of process 300 ('helper'), uid 1000, exe '/opt/x/helper'")


def test_hostile_names_are_quoted_in_messages() -> None:
    f = TaskFacts(5, 5, 1, "nr-gnb\nFAKE", "nr-gnb\nFAKE", 0, "/tmp/a\nb")
    assert "\n" not in f.describe()


def test_listed_ids_that_exited_are_counted_not_reported() -> None:
    cmp = compare_rule(under(RULE, 100, 101, 102, 103, 999), RULE, [gnb()], world())
    assert (cmp.gone, cmp.foreign, cmp.clean) == (1, (), True)


def test_lookups_of_untracked_ids_are_bounded() -> None:
    table = world()
    cmp = compare_rule(under(RULE, 100, 200, 301, 400, 999), RULE, [gnb((100,))], table,
                       max_lookups=2)
    assert (foreign_pids(cmp), cmp.unchecked, table.lookups) == ([200, 301], 2, 2)


def test_threads_of_tracked_processes_cost_one_listing_and_no_budget() -> None:
    table = world()
    cmp = compare_rule(under(RULE, 100, 101, 102, 103, 104, 200), RULE, [gnb((100,))], table,
                       max_lookups=1)
    assert (cmp.unseen, foreign_pids(cmp), cmp.unchecked) == ((101, 102, 103, 104), [200], 0)
    assert (table.listings, table.lookups) == (1, 1)


def test_many_listed_threads_cost_one_listing_per_tracked_process() -> None:
    """12,000 listed threads of a user's process named like the gNB's, five tracked
    processes: one listing each, not a read per listed ID and process (0.37 s a read-back
    in the loop, measured), and the look-ups stay within their budget (the gNB's own
    unseen thread 104 takes none of it, however many processes are tracked)."""
    table = world()
    views = [gnb(), *(gnb((t,), tgid=t) for t in (500, 501, 502, 503))]
    for t in (500, 501, 502, 503):
        table.add(t, "nr-gnb")
    table.add(20000, "nr-gnb", uid=NOBODY, threads=[(20001 + i, "gnb worker")
                                                   for i in range(12000)])
    listed = under(RULE, 100, 101, 102, 103, 104, *range(500, 504), *range(20000, 32001))
    cmp = compare_rule(listed, RULE, views, table)
    assert (cmp.unseen, table.listings, table.lookups) == ((104,), 5, MAX_LOOKUPS)
    assert (len(cmp.foreign), cmp.unchecked) == (MAX_LOOKUPS, 12001 - MAX_LOOKUPS)


def test_tracked_and_listed_ids_cost_no_lookup() -> None:
    table = world()
    compare_rule(under(RULE, 100, 101, 102, 103), RULE, [gnb()], table)
    compare_rule(under(RULE, 100, 101), RULE, [gnb((101,))], table)  # a leader, unseen
    assert table.lookups == table.listings == 0


# --- the comparison: v0 (explicit IDs) ---------------------------------------------------------


@pytest.mark.parametrize("listed,written,covered,missing,others", [
    ([1, 2, 3], [1, 2, 3], (1, 2, 3), (), 0),
    ([1, 3, 50, 51], [1, 2, 3], (1, 3), (2,), 2),  # 50, 51: another writer's entries
    ([], [1, 2], (), (1, 2), 0),
    ([9], [], (), (), 1),
])
def test_compare_ids(listed: List[int], written: List[int], covered: Tuple[int, ...],
                     missing: Tuple[int, ...], others: int) -> None:
    cmp = compare_ids(under(None, *listed), written)
    assert (cmp.covered, cmp.missing, cmp.others, cmp.foreign) == (covered, missing, others, ())


# --- what it means ---------------------------------------------------------------------------


def rule_cmp(*listed: int, tids: Sequence[int] = (100, 101, 102, 103)) -> Comparison:
    return compare_rule(under(RULE, *listed), RULE, [gnb(tids)], world())


def levels(findings: List[Finding]) -> List[Tuple[str, Optional[int]]]:
    return [(f.key.split(":")[0], f.level) for f in findings]


@pytest.mark.parametrize("what,cmp,scheduler,waited,expected", [
    ("all covered", rule_cmp(100, 101, 102, 103), GTHULHU, 0.0, []),
    ("leaders only needs a person", rule_cmp(100), GTHULHU, 0.0,
     [("leaders-only", logging.ERROR)]),
    ("an empty list within the grace is not reported yet", rule_cmp(), GTHULHU, 9.9,
     [("nothing-listed-yet", None)]),
    ("an empty list after one resync is", rule_cmp(), GTHULHU, 10.0,
     [("nothing-listed", logging.WARNING)]),
    ("other missing", rule_cmp(100, 101, 103), GTHULHU, 0.0, [("missing", logging.WARNING)]),
    ("foreign, one finding per process", rule_cmp(100, 101, 102, 103, 200, 301), GTHULHU, 0.0,
     [("foreign", logging.WARNING), ("foreign", logging.WARNING)]),
    ("another sched_ext scheduler", rule_cmp(100, 101, 102, 103),
     SchedulerState(True, "enabled", "rusty_1.0.4_x86_64"), 0.0,
     [("scheduler", None)]),
    ("no sched_ext scheduler and leaders only", rule_cmp(100),
     SchedulerState(True, "disabled", ""), 0.0,
     [("scheduler", None), ("leaders-only", logging.ERROR)]),
    ("a kernel without sched_ext", rule_cmp(100, 101, 102, 103),
     SchedulerState(False, "", ""), 0.0, [("scheduler", None)]),
    ("the scheduler not read: nothing said about it", rule_cmp(100, 101, 102, 103), None, 0.0,
     []),
])
def test_diagnose(what: str, cmp: Comparison, scheduler: Optional[SchedulerState],
                  waited: float, expected: List[Tuple[str, Optional[int]]]) -> None:
    assert levels(diagnose(cmp, scheduler, waited, 10.0)) == expected


def test_the_leaders_only_message_says_what_is_boosted_and_what_to_do() -> None:
    v = verdict(rule_cmp(100), GTHULHU, "http://dm")
    assert v.diagnosis == ("this Decision Maker matches thread-group leaders only: the "
                           "scheduler boosts 1 of 4 gNB tasks; a Decision Maker with the "
                           "thread-aware scan boosts all")


@pytest.mark.parametrize("scheduler,text", [
    (SchedulerState(True, "enabled", "rusty"),
     "sched_ext scheduler 'rusty' is running, not Gthulhu's: the strategies have no effect"),
    (SchedulerState(True, "disabled", ""),
     "no sched_ext scheduler is running (state disabled): the strategies have no effect"),
    (SchedulerState(False, "", ""), "this kernel has no sched_ext (no /sys/kernel/sched_ext): "
                                    "the strategies have no effect"),
])
def test_the_scheduler_finding_says_which_runs(scheduler: SchedulerState, text: str) -> None:
    assert diagnose(rule_cmp(100, 101, 102, 103), scheduler, 0, 10)[0].message == text


@pytest.mark.parametrize("what,v,fragment,counts", [
    ("all covered", verdict(rule_cmp(100, 101, 102, 103), GTHULHU, "u"),
     "4/4 gNB tasks boosted by the scheduler", {"covered": 4, "missing": 0, "foreign": 0}),
    ("leaders only", verdict(rule_cmp(100), GTHULHU, "u"),
     "1/4 gNB tasks boosted by the scheduler", {"covered": 1, "missing": 3, "foreign": 0}),
    ("foreign", verdict(rule_cmp(100, 101, 102, 103, 200), GTHULHU, "u"),
     "4/4 gNB tasks boosted by the scheduler, 1 foreign",
     {"covered": 4, "missing": 0, "foreign": 1}),
    ("another scheduler", verdict(rule_cmp(100, 101, 102, 103),
                                  SchedulerState(True, "enabled", "rusty"), "u"),
     "no gNB task boosted: scheduler rusty is not Gthulhu's",
     {"covered": 4, "missing": 0, "foreign": 0}),
    ("no scheduler", verdict(rule_cmp(100, 101, 102, 103),
                             SchedulerState(True, "disabled", ""), "u"),
     "no gNB task boosted: no sched_ext scheduler", {"covered": 4, "missing": 0, "foreign": 0}),
    ("a Manager without a Decision Maker to read", not_verified(
        "a Manager does not resolve PIDs; set api.decision_maker_url"),
     "boost not verified", {}),
])
def test_status_fragment_and_counts(what: str, v: Any, fragment: str,
                                    counts: Dict[str, int]) -> None:
    # The gauges count the lists of the state object (service.metrics), none unverified.
    state = v.state()
    shown = {k: len(state[k]) for k in ("covered", "missing", "foreign")} if v.verified else {}
    assert (v.status_fragment(), shown) == (fragment, counts)


def test_the_state_object() -> None:
    v = verdict(rule_cmp(100, 200, tids=(101, 102)), GTHULHU, "http://127.0.0.1:8080/x")
    assert v.state() == {
        "verified": True, "source": "http://127.0.0.1:8080/x", "scheduler": "gthulhu",
        "covered": [], "missing": [101, 102], "unseen": [100], "others": 0, "gone": 0,
        "unchecked": 0,
        "foreign": [{"pid": 200, "tgid": 200, "comm": "nr-gnb", "process": "nr-gnb",
                     "uid": NOBODY, "exe": "/usr/bin/python3.11"}],
        "diagnosis": ("this Decision Maker matches thread-group leaders only: the scheduler "
                      "boosts 0 of 2 gNB tasks; a Decision Maker with the thread-aware scan "
                      "boosts all")}
    assert not_verified("no decision_maker_url").state() == {
        "verified": False, "source": "no decision_maker_url",
        "diagnosis": "not verified: no decision_maker_url", "scheduler": ""}


@pytest.mark.parametrize("cmp,diagnosis", [
    (rule_cmp(100, 101, 102, 103), "all covered: the scheduler boosts all 4 gNB tasks"),
    (rule_cmp(100, 101, 102, 103, 200, 301),
     "2 task(s) this host does not track are boosted by its rule (PIDs 200, 301)"),
    (compare_rule([], None, [], world()), "no gNB task is tracked"),
    (rule_cmp(), "waiting (0 s): the server lists no task under this host's rule while 4 gNB "
                 "tasks are tracked: the rule has not reached it yet (a Manager propagates it), "
                 "or it ignores the rule (a Decision Maker from before 2026-08, or a regular "
                 "expression it cannot compile)"),
    (compare_ids([], [1, 2]), "waiting (0 s): the server holds none of the 2 IDs this host "
                              "wrote: it lost them (restarted?) or another writer replaced the "
                              "list"),
    (compare_ids(under(None, 1), [1, 2]), "the scheduler does not boost 1 of 2 gNB tasks "
     "(PIDs 2): the server no longer holds them (another writer replaced them, or it "
     "restarted); the next resync writes them again"),
])
def test_the_diagnosis_line(cmp: Comparison, diagnosis: str) -> None:
    assert verdict(cmp, GTHULHU, "u", 0.0, 10.0).diagnosis == diagnosis


# --- once per episode --------------------------------------------------------------------------


class Said:
    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        self.seen = 0

    def new(self) -> List[Tuple[str, str]]:
        """(level, message) logged since the last call."""
        records = [r for r in self.caplog.records if r.name == "test.readback"]
        fresh, self.seen = records[self.seen:], len(records)
        return [(r.levelname, r.getMessage()) for r in fresh]


@pytest.fixture
def said(caplog: pytest.LogCaptureFixture) -> Said:
    caplog.set_level(logging.DEBUG, logger="test.readback")
    return Said(caplog)


def test_each_difference_is_said_once_per_episode(said: Said) -> None:
    clock = Clock(0.0)
    reporter = BoostReporter(logging.getLogger("test.readback"), grace=10.0, clock=clock)

    def step(cmp: Comparison, scheduler: Optional[SchedulerState] = GTHULHU,
             dt: float = 1.0) -> List[Tuple[str, str]]:
        clock.now += dt
        reporter.update(cmp, scheduler, "http://dm/api/v1/scheduling/strategies")
        return said.new()

    # propagation: nothing listed is said only when it lasts a resync
    assert step(rule_cmp()) == []
    assert step(rule_cmp(), dt=9.0) == []
    assert [lvl for lvl, _ in step(rule_cmp(), dt=1.0)] == ["WARNING"]
    assert step(rule_cmp()) == []
    # a leaders-only DM: one ERROR for the episode, however the counts move
    assert [lvl for lvl, _ in step(rule_cmp(100))] == ["ERROR"]
    assert step(rule_cmp(100)) == []
    assert step(rule_cmp(100, tids=(100, 101, 102))) == []
    # the DM upgraded: all covered, said once
    assert step(rule_cmp(100, 101, 102, 103)) == [
        ("INFO", "all covered: the scheduler boosts all 4 gNB tasks (read back from "
                 "http://dm/api/v1/scheduling/strategies)")]
    assert step(rule_cmp(100, 101, 102, 103)) == []
    # an impostor: one warning per new foreign task, none while it stays
    new = step(rule_cmp(100, 101, 102, 103, 200))
    assert new == [("WARNING", "boosted by our rule but not verified: PID 200 ('nr-gnb'), uid "
                    "65534, exe '/usr/bin/python3.11' -- the server matches names; this task is "
                    "none of those this host tracks (another user's, excluded by match.uid or "
                    "match.exe, or not yet seen in the trace)")]
    assert step(rule_cmp(100, 101, 102, 103, 200)) == []
    new = step(rule_cmp(100, 101, 102, 103, 200, 301))
    assert len(new) == 1 and "thread 301 ('gnb worker') of process 300" in new[0][1]
    # both leave: all covered again, said once
    assert [lvl for lvl, _ in step(rule_cmp(100, 101, 102, 103))] == ["INFO"]
    # the scheduler goes away, then another one runs: shown, but logged by the daemon's
    # scheduler watch (once per change, with or without pushes), not here a second time
    disabled = SchedulerState(True, "disabled", "")
    assert step(rule_cmp(100, 101, 102, 103), disabled) == []
    v = reporter.update(rule_cmp(100, 101, 102, 103), disabled, "http://dm")
    assert v.status_fragment() == "no gNB task boosted: no sched_ext scheduler"
    other = SchedulerState(True, "enabled", "rusty")
    assert step(rule_cmp(100, 101, 102, 103), other) == []


def test_a_reused_pid_is_a_new_foreign_task(said: Said) -> None:
    reporter = BoostReporter(logging.getLogger("test.readback"), grace=10.0, clock=Clock())
    table = world()
    listed = under(RULE, 100, 200)
    reporter.update(compare_rule(listed, RULE, [gnb((100,))], table), GTHULHU, "u")
    assert [lvl for lvl, _ in said.new()] == ["WARNING"]
    reporter.update(compare_rule(listed, RULE, [gnb((100,))], table), GTHULHU, "u")
    assert said.new() == []
    table.add(200, "nr-gnb", uid=1001, exe="/home/u/nr-gnb", start=77)  # exited, PID reused
    reporter.update(compare_rule(listed, RULE, [gnb((100,))], table), GTHULHU, "u")
    new = said.new()
    assert len(new) == 1 and "PID 200 ('nr-gnb'), uid 1001, exe '/home/u/nr-gnb'" in new[0][1]


def test_nothing_is_confirmed_while_nothing_is_tracked(said: Said) -> None:
    reporter = BoostReporter(logging.getLogger("test.readback"), grace=10.0, clock=Clock())
    reporter.update(compare_rule([], None, [], world()), GTHULHU, "u")
    assert said.new() == []


def test_a_restarting_foreign_process_is_one_line_a_restart(said: Said) -> None:
    """Another user's gNB (excluded by match.uid) whose 40 threads a thread-aware DM lists
    under our rule: said per task, each of its starts put 40 WARNING lines (up to 256, the
    look-up budget) into the journal — a line per task ID it ever had.  Now one line per
    process (its ID and start time): a run of it is one line."""
    reporter = BoostReporter(logging.getLogger("test.readback"), grace=10.0, clock=Clock())
    for start in range(3):  # three runs of the other gNB, each with new task IDs
        tgid = 1000 + 100 * start
        threads = [(tgid + 1 + i, "gnb worker") for i in range(40)]
        table = world().add(tgid, "nr-gnb", uid=NOBODY, exe="/opt/other/nr-gnb",
                            threads=threads, start=500 + start)
        listed = under(RULE, 100, 101, 102, 103, tgid, *(t for t, _ in threads))
        for turn in range(2):  # a resync while it runs says nothing more
            reporter.update(compare_rule(listed, RULE, [gnb()], table), GTHULHU, "u")
            new = said.new()
            if turn == 0:
                assert [lvl for lvl, _ in new] == ["WARNING"]
                assert new[0][1].startswith(
                    f"boosted by our rule but not verified: 41 tasks (PIDs {tgid}, ")
                assert (f"(41 in all)) of process {tgid} ('nr-gnb'), uid {NOBODY}, exe "
                        "'/opt/other/nr-gnb' -- " in new[0][1])
            else:
                assert new == []
