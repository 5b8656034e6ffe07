"""The read-back (issue 19) against real parts: the fake Decision Maker in both of its
scan modes resolves our rule against this machine's real /proc, where a gNB-like
process (threads named differently) and impostors under another uid run; the rule
is written with the real writer and the strategies are read with the real HTTP
client, as the scheduler reads them; the tracked set comes from the real tracker.

This machine is shared: another engineer's test may run its own `nr-gnb` at any
moment, and our rule rightly lists it as foreign.  Exact expectations therefore
look only at the entries of processes this test started; one check per mode
looks at the whole list.
"""

from __future__ import annotations

import logging
import os
import pwd
import socket
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

from gtp5g_operator.config import ApiConfig, Config, MatchConfig
from gtp5g_operator.core.boost_verdict import BoostReporter, not_verified, verdict
from gtp5g_operator.core.procfs import ProcFS
from gtp5g_operator.core.readback import (
    Comparison,
    ListedEntry,
    compare_rule,
)
from gtp5g_operator.core.sched_ext import read_scheduler
from gtp5g_operator.core.tracker import ProcessView, TaskTracker
from gtp5g_operator.gthulhu.decision_maker import DecisionMakerWriter
from gtp5g_operator.gthulhu.errors import ApiError
from gtp5g_operator.gthulhu.http import JsonHttp
from gtp5g_operator.gthulhu.manager import ManagerWriter
from gtp5g_operator.service.pusher import Pusher
from testbed.fake_decision_maker import FakeDecisionMaker
from testbed.fake_manager import FakeManager
from testbed.harness import SYSTEM_PYTHON, GnbProcess
from tests.doubles import Clock

NODE = "node-a"
RULE = "^(?:gnb worker|nr-gnb|nr-gnb-rlc)$"
STRATEGIES = "/api/v1/scheduling/strategies"
NOBODY = pwd.getpwnam("nobody").pw_uid
PASSWORD = "s3cret-Passw0rd"
LOGGER = "test.readback.dm"
SCANS = {"leaders only (v1.3.0)": False, "thread-aware (after PR #135)": True}


@pytest.fixture(params=list(SCANS.values()), ids=list(SCANS))
def dm(request: pytest.FixtureRequest, keys: Dict[str, Path]) -> Iterator[FakeDecisionMaker]:
    server = FakeDecisionMaker(keys["private"].read_bytes(), match_threads=request.param).start()
    yield server
    server.stop()


@pytest.fixture
def aware_dm(keys: Dict[str, Path]) -> Iterator[FakeDecisionMaker]:
    server = FakeDecisionMaker(keys["private"].read_bytes(), match_threads=True).start()
    yield server
    server.stop()


def deadline() -> float:
    return time.monotonic() + 5.0


class Operator:
    """Our side: the real Decision Maker writer, and a GET of what the scheduler reads
    with the same client and token."""

    def __init__(self, dm: FakeDecisionMaker, keys: Dict[str, Path], state: Path) -> None:
        config = Config(api=ApiConfig(url=dm.url, flavor="decision-maker",
                                      public_key=str(keys["public"])),
                        public_key_pem=keys["public"].read_text(), node_name=NODE)
        self.writer = DecisionMakerWriter(JsonHttp(dm.url, 5.0), config, str(state))
        self.source = dm.url + STRATEGIES

    def write(self, views: Sequence[ProcessView]) -> None:
        self.writer.authenticate(deadline())
        self.writer.write(views, deadline())

    def listed(self) -> List[ListedEntry]:
        self.writer.authenticate(deadline())
        return self.writer.listed(deadline())  # what the daemon's read-back GETs

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
def operator(dm: FakeDecisionMaker, keys: Dict[str, Path],
             tmp_path: Path) -> Iterator[Operator]:
    op = Operator(dm, keys, tmp_path / "state")
    yield op
    op.close()


def track(*tids: int) -> List[ProcessView]:
    """What the real tracker verifies from these trace IDs (process nr-gnb of our uid)."""
    tracker = TaskTracker(ProcFS(), MatchConfig(comm=("nr-gnb",), uid=(os.getuid(),)))
    tracker.observe(set(tids))
    return tracker.snapshot()


def written_and_compared(dm: FakeDecisionMaker, keys: Dict[str, Path], tmp_path: Path,
                         g: GnbProcess, *others: GnbProcess) -> Tuple[Comparison, str]:
    """This host writes the rule for gNB `g`'s tasks; what the DM then lists for `g` and
    `others` compared with them: (the comparison, the read-back's source)."""
    operator = Operator(dm, keys, tmp_path / "state")
    try:
        views = track(*g.tids)
        operator.write(views)
        return (compare_rule(of(operator.listed(), g, *others), RULE, views, ProcFS()),
                operator.source)
    finally:
        operator.close()


def of(entries: List[ListedEntry], *procs: GnbProcess) -> List[ListedEntry]:
    """The entries for tasks of the processes this test started (see the module doc)."""
    procfs, tgids = ProcFS(), {p.pid for p in procs}
    out = []
    for e in entries:
        task = procfs.task(e.pid)
        if task is not None and task.tgid in tgids:
            out.append(e)
    return out


def foreign_pids(cmp: Comparison) -> List[int]:
    return [f.pid for f in cmp.foreign]


class Said:
    """What the reporter logged since the last look: (level, message)."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog, self.seen = caplog, 0

    def new(self) -> List[Tuple[str, str]]:
        records = [r for r in self.caplog.records if r.name == LOGGER]
        fresh, self.seen = records[self.seen:], len(records)
        return [(r.levelname, r.getMessage()) for r in fresh]


@pytest.fixture
def said(caplog: pytest.LogCaptureFixture) -> Said:
    caplog.set_level(logging.INFO, logger=LOGGER)
    return Said(caplog)


def impostor_warning(pid: int) -> str:
    return (f"boosted by our rule but not verified: PID {pid} ('nr-gnb'), uid {NOBODY}, exe "
            f"{os.path.realpath(SYSTEM_PYTHON)!r} -- the server matches names; this task is "
            "none of those this host tracks (another user's, excluded by match.uid or "
            "match.exe, or not yet seen in the trace)")


def leaders_only_error(n: int, m: int) -> str:
    return (f"this Decision Maker matches thread-group leaders only: the scheduler boosts {n} "
            f"of {m} gNB tasks; a Decision Maker with the thread-aware scan boosts all")


def test_covered_missing_and_foreign_in_each_scan_mode(
        dm: FakeDecisionMaker, operator: Operator, gnb: Callable[..., GnbProcess],
        said: Said) -> None:
    g = gnb(threads=("nr-gnb-rlc", "gnb worker"))
    rlc, worker = g.threads["nr-gnb-rlc"], g.threads["gnb worker"]
    impostor = gnb(threads=(), user=NOBODY)  # a process named nr-gnb under another uid
    helper = gnb(name="helper", threads=("gnb worker",), user=NOBODY)  # a thread named so
    views = track(*g.tids, impostor.pid, *helper.tids)  # all seen in the trace
    assert [(v.tgid, v.tids) for v in views] == [(g.pid, tuple(sorted(g.tids)))]
    operator.write(views)
    assert [r["commandRegex"] for r in dm.rules()] == [RULE]

    listed = operator.listed()
    whole = compare_rule(listed, RULE, views, ProcFS())
    assert impostor.pid in foreign_pids(whole)
    assert not set(g.tids) & set(foreign_pids(whole))

    cmp = compare_rule(of(listed, g, impostor, helper), RULE, views, ProcFS())
    got = (cmp.covered, cmp.missing, foreign_pids(cmp), cmp.leaders_only)
    if dm.match_threads:  # every task listed by TID, and the helper's thread named so too
        assert got == (tuple(sorted(g.tids)), (),
                       sorted([impostor.pid, helper.threads["gnb worker"]]), False)
    else:  # the leaders: our main thread, and the impostor
        assert got == ((g.pid,), tuple(sorted((rlc, worker))), [impostor.pid], True)
    facts = {f.pid: f for f in cmp.foreign}
    assert facts[impostor.pid].as_dict() == {
        "pid": impostor.pid, "tgid": impostor.pid, "comm": "nr-gnb", "process": "nr-gnb",
        "uid": NOBODY, "exe": os.path.realpath(SYSTEM_PYTHON)}

    reporter = BoostReporter(logging.getLogger(LOGGER), grace=10.0, clock=Clock())
    reporter.update(cmp, None, operator.source)
    first = said.new()
    assert ("WARNING", impostor_warning(impostor.pid)) in first
    if dm.match_threads:
        assert [lvl for lvl, _ in first] == ["WARNING", "WARNING"]  # impostor, helper thread
    else:
        assert first == [("ERROR", leaders_only_error(1, 3)),
                         ("WARNING", impostor_warning(impostor.pid))]
    reporter.update(compare_rule(of(operator.listed(), g, impostor, helper), RULE, views,
                                 ProcFS()), None, operator.source)
    assert said.new() == []  # the same episode: nothing again


def test_the_main_thread_never_seen_in_the_trace_is_ours(
        dm: FakeDecisionMaker, operator: Operator, gnb: Callable[..., GnbProcess]) -> None:
    g = gnb(threads=("nr-gnb-rlc", "gnb worker"))
    workers = tuple(sorted(g.threads.values()))
    views = track(*workers)  # only the workers carried traffic
    operator.write(views)
    cmp = compare_rule(of(operator.listed(), g), RULE, views, ProcFS())
    assert (cmp.unseen, cmp.foreign) == ((g.pid,), ())
    if dm.match_threads:
        assert (cmp.covered, cmp.missing, cmp.clean) == (workers, (), True)
    else:
        assert (cmp.covered, cmp.missing, cmp.leaders_only) == ((), workers, True)
        assert verdict(cmp, None, operator.source).diagnosis == leaders_only_error(0, 2)


def test_episodes_follow_the_processes_and_the_scan(
        keys: Dict[str, Path], gnb: Callable[..., GnbProcess], said: Said,
        tmp_path: Path) -> None:
    dm = FakeDecisionMaker(keys["private"].read_bytes(), match_threads=False).start()
    operator = Operator(dm, keys, tmp_path / "state")
    try:
        g = gnb(threads=("nr-gnb-rlc", "gnb worker"))
        views = track(*g.tids)
        operator.write(views)
        reporter = BoostReporter(logging.getLogger(LOGGER), grace=10.0, clock=Clock())
        started: List[GnbProcess] = [g]

        def read_back() -> List[Tuple[str, str]]:
            cmp = compare_rule(of(operator.listed(), *started), RULE, views, ProcFS())
            reporter.update(cmp, None, operator.source)
            return said.new()

        assert read_back() == [("ERROR", leaders_only_error(1, 3))]
        assert read_back() == []
        dm.match_threads = True  # the Decision Maker is upgraded to the thread-aware scan
        all_covered = ("INFO", f"all covered: the scheduler boosts all 3 gNB tasks (read back "
                               f"from {operator.source})")
        assert read_back() == [all_covered]
        assert read_back() == []
        impostor = gnb(threads=(), user=NOBODY)
        started.append(impostor)
        assert read_back() == [("WARNING", impostor_warning(impostor.pid))]
        assert read_back() == []
        impostor.stop()
        assert read_back() == [all_covered]
        second = gnb(threads=(), user=NOBODY)
        started.append(second)
        assert read_back() == [("WARNING", impostor_warning(second.pid))]
    finally:
        operator.close()
        dm.stop()


def test_a_foreign_process_is_one_warning_however_many_of_its_threads_are_listed(
        aware_dm: FakeDecisionMaker, keys: Dict[str, Path], gnb: Callable[..., GnbProcess],
        said: Said, tmp_path: Path) -> None:
    """A thread-aware Decision Maker lists every thread of another user's process named
    like the gNB: one WARNING for that process, naming its tasks; one per thread put
    up to MAX_LOOKUPS lines a read-back into the journal, and one per new thread."""
    g = gnb(threads=("nr-gnb-rlc", "gnb worker"))
    impostor = gnb(threads=("nr-gnb",) * 20, user=NOBODY)  # its threads keep its name
    cmp, source = written_and_compared(aware_dm, keys, tmp_path, g, impostor)
    assert len(cmp.foreign) == 21 and {f.tgid for f in cmp.foreign} == {impostor.pid}
    BoostReporter(logging.getLogger(LOGGER), grace=10.0, clock=Clock()).update(
        cmp, None, source)
    (level, text), *more = said.new()
    assert (level, more) == ("WARNING", [])
    assert text.startswith(f"boosted by our rule but not verified: 21 tasks (PIDs "
                           f"{impostor.pid}, ")
    assert text.endswith(f"(21 in all)) of process {impostor.pid} ('nr-gnb'), uid {NOBODY}, "
                         f"exe {os.path.realpath(SYSTEM_PYTHON)!r} -- the server matches "
                         "names; these tasks are none of those this host tracks (another "
                         "user's, excluded by match.uid or match.exe, or not yet seen in "
                         "the trace)")


def sysfs_root(tmp: Path, state: Optional[str], ops: str = "") -> str:
    """A sysfs tree with kernel/sched_ext (state None: a kernel without sched_ext)."""
    if state is not None:
        base = tmp / "kernel" / "sched_ext"
        (base / "root").mkdir(parents=True)
        (base / "state").write_text(state + "\n")
        if ops:
            (base / "root" / "ops").write_text(ops + "\n")
    return str(tmp)


@pytest.mark.parametrize("state,ops,fragment,diagnosis", [
    ("enabled", "gthulhu", "3/3 gNB tasks boosted by the scheduler",
     "all covered: the scheduler boosts all 3 gNB tasks"),
    ("enabled", "rusty_1.0.4_x86_64", "no gNB task boosted: scheduler rusty_1.0.4_x86_64 is "
     "not Gthulhu's", "sched_ext scheduler 'rusty_1.0.4_x86_64' is running, not Gthulhu's: "
     "the strategies have no effect"),
    ("disabled", "", "no gNB task boosted: no sched_ext scheduler",
     "no sched_ext scheduler is running (state disabled): the strategies have no effect"),
    (None, "", "no gNB task boosted: no sched_ext scheduler",
     "this kernel has no sched_ext (no /sys/kernel/sched_ext): the strategies have no effect"),
])
def test_what_runs_in_sched_ext_decides_whether_anything_is_boosted(
        aware_dm: FakeDecisionMaker, keys: Dict[str, Path], gnb: Callable[..., GnbProcess],
        tmp_path: Path, state: Optional[str], ops: str, fragment: str, diagnosis: str) -> None:
    g = gnb(threads=("nr-gnb-rlc", "gnb worker"))
    cmp, source = written_and_compared(aware_dm, keys, tmp_path, g)
    v = verdict(cmp, read_scheduler(sysfs_root(tmp_path, state, ops)), source)
    assert (v.status_fragment(), v.diagnosis) == (fragment, diagnosis)
    assert v.scheduler == (ops if state == "enabled" else "")


@pytest.mark.parametrize("state,ops,diagnosis", [
    (None, "", "this kernel has no sched_ext (no /sys/kernel/sched_ext): the strategies have "
               "no effect"),
    ("disabled", "", "no sched_ext scheduler is running (state disabled): the strategies "
                     "have no effect"),
    ("enabled", "lavd", "sched_ext scheduler 'lavd' is running, not Gthulhu's: the "
                        "strategies have no effect"),
])
def test_without_gthulhus_scheduler_no_diagnosis_says_a_task_is_boosted(
        aware_dm: FakeDecisionMaker, keys: Dict[str, Path], gnb: Callable[..., GnbProcess],
        tmp_path: Path, state: Optional[str], ops: str, diagnosis: str) -> None:
    """A foreign task (or a missing one) made the diagnosis — state.json, `status`,
    /health — say "1 task(s) this host does not track are boosted by its rule" on a
    host where nothing reads the strategies, while STATUS= said "no gNB task boosted":
    the scheduler's finding is not logged by the reporter, and the headline skipped it."""
    g = gnb(threads=("nr-gnb-rlc", "gnb worker"))
    impostor = gnb(threads=(), user=NOBODY)
    cmp, source = written_and_compared(aware_dm, keys, tmp_path, g, impostor)
    assert foreign_pids(cmp) == [impostor.pid]
    v = verdict(cmp, read_scheduler(sysfs_root(tmp_path, state, ops)), source)
    assert v.diagnosis == diagnosis
    assert v.status_fragment().startswith("no gNB task boosted: ")


def test_a_manager_is_verified_through_the_nodes_decision_maker(
        aware_dm: FakeDecisionMaker, keys: Dict[str, Path], gnb: Callable[..., GnbProcess],
        tmp_path: Path) -> None:
    """The Manager resolves no PIDs: the rule it pushed is read back from the node's DM
    (with api.decision_maker_url and its public key); without one, not verified."""
    manager = FakeManager({"operator": {"password": PASSWORD}}, {NODE},
                          decision_makers={NODE: aware_dm}).start()
    config = Config(api=ApiConfig(url=manager.url, flavor="manager", username="operator"),
                    password=PASSWORD, node_name=NODE)
    writer = ManagerWriter(JsonHttp(manager.url, 5.0), config, str(tmp_path))
    # the node's DM, read with our public key
    operator = Operator(aware_dm, keys, tmp_path / "dm-state")
    try:
        g = gnb(threads=("nr-gnb-rlc", "gnb worker"))
        views = track(*g.tids)
        writer.authenticate(deadline())
        writer.write(views, deadline())
        assert [r["commandRegex"] for r in aware_dm.rules()] == [RULE]  # pushed by the Manager
        v = verdict(compare_rule(of(operator.listed(), g), RULE, views, ProcFS()), None,
                    operator.source)
        assert (v.verified, v.status_fragment()) == (True, "3/3 gNB tasks boosted by the "
                                                           "scheduler")
    finally:
        writer.close()
        operator.close()
        manager.stop()
    unverified = not_verified("api.decision_maker_url is not set (a Manager resolves no PIDs)")
    assert (unverified.status_fragment(), unverified.verified) == ("boost not verified", False)


def test_the_decision_maker_client_quotes_the_timeout_a_reload_set(
        keys: Dict[str, Path], tmp_path: Path) -> None:
    """The Manager's client of the node's DM was made with api.timeout at start; a
    reload sets the writer's (Pusher.reconfigure), and the DM's timeout errors went on
    quoting the old value."""
    with socket.socket() as silent:  # accepts into its backlog, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        config = Config(api=ApiConfig(url=url, flavor="manager", username="operator",
                                      decision_maker_url=url, public_key=str(keys["public"])),
                        public_key_pem=keys["public"].read_text(), password=PASSWORD,
                        node_name=NODE)
        writer = ManagerWriter.create(JsonHttp(url, config.api.timeout), config,
                                      str(tmp_path), time.monotonic, time.time)
        writer.timeout = 0.5  # as a reload to api.timeout = 0.5 does
        try:
            with pytest.raises(ApiError) as err:
                writer.read_back([], time.monotonic() + 0.3)
        finally:
            writer.close()
    assert err.value.kind == "timeout" and "(api.timeout 0.5 s)" in str(err.value), err.value


def test_a_token_the_decision_maker_refuses_is_renewed_by_the_read_back(
        aware_dm: FakeDecisionMaker, keys: Dict[str, Path], tmp_path: Path) -> None:
    """The node's wall clock steps two days forward (NTP after a boot without a working
    RTC; a resumed VM): the DM, beside us, takes our token for expired, while we renew
    it on our monotonic clock 23 h 55 min after we got it.  A push with no gNB tracked
    writes nothing (the rule is gone already), so only the read-back met the 401, and
    it had no retry with fresh credentials: 'cannot read back what the scheduler boosts:
    unauthorized' at every push for up to a day (reproduced with the real daemon under
    libfaketime).  It now takes one fresh token after a 401, as the Manager's read-back
    of the node's DM (DecisionMakerView) did."""
    operator = Operator(aware_dm, keys, tmp_path / "state")
    pusher = Pusher(operator.writer, 10.0, lambda: [])
    try:
        first = pusher.push()
        assert first.ok and first.comparison is not None, first
        aware_dm.clock_skew = 2 * 86400.0
        again = pusher.push()
        assert again.ok and again.comparison is not None, again.readback_problem
        assert aware_dm.tokens_issued == 2
    finally:
        operator.close()


def test_thread_names_the_kernel_cut_short_are_matched_as_the_decision_maker_reads_them(
        aware_dm: FakeDecisionMaker, keys: Dict[str, Path], tmp_path: Path,
        gnb: Callable[..., GnbProcess]) -> None:
    """comm holds 15 bytes: a longer name is cut there, maybe inside a UTF-8 character
    ("\\xe2\\x80") or right after a space.  The Decision Maker (Go) reads each byte that
    is not UTF-8 as one U+FFFD and trims the space; the rule said one U+FFFD and kept
    the space, matched neither thread, and the daemon took a thread-aware Decision Maker
    for one that "matches thread-group leaders only" (ERROR), against Gthulhu's own too."""
    cut_char, cut_space = "rlc-w\udce2\udc80", "gnb-rlc-worker "
    g = gnb(threads=(cut_char, cut_space, "gnb\udcffw"))
    views = track(*g.tids)
    op = Operator(aware_dm, keys, tmp_path / "state")
    try:
        op.write(views)
        rule = aware_dm.rules()[0]["commandRegex"]
        cmp = compare_rule(of(op.listed(), g), rule, views, ProcFS())
    finally:
        op.close()
    assert (cmp.covered, cmp.missing, cmp.leaders_only) == (tuple(sorted(g.tids)), (), False)
