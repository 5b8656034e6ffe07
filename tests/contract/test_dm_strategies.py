"""The strategies GET, fake against real, resolving rules against this machine's /proc:
real child processes named with prctl (testbed/gnb_sim.py), listed by PID (v1.3.0,
leaders only) or by TID (pr135, every thread's own name).

Names are unique per test where the whole listing is compared; where the test needs
the gNB's own names (nr-gnb, nr-gnb-rlc, gnb worker), only our children's entries
are compared, since other tests' processes come and go between the two answers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set

import pytest

from gtp5g_operator.core.procfs import parse_comm
from gtp5g_operator.core.strategy import names_regex
from testbed.harness import ZOMBIE_LEADER_C, GnbProcess, ZombieLeaderGnb, build_c_program
from tests.contract.conftest import NODE_INTENTS, STRATEGIES, DMPair, assert_same
from tests.contract.transcript import Transcript

pytestmark = pytest.mark.contract


def unique_prefix() -> str:
    """A name part no other process has (comm holds 15 bytes: keep names short)."""
    return "k" + uuid.uuid4().hex[:6]


def rule(policy_id: str, regex: str, priority: int = 1, execution_time: int = 20_000_000
         ) -> Dict[str, Any]:
    return {"policyID": policy_id, "nodeID": "node-a", "commandRegex": regex,
            "priority": priority, "executionTime": execution_time}


@pytest.fixture
def children() -> Iterator[List[Any]]:
    started: List[Any] = []
    yield started
    for child in started:
        child.stop()


def task_ids(pid: int) -> Set[int]:
    return {int(t) for t in os.listdir(f"/proc/{pid}/task")}


def test_gnb_listing(dm_pair: DMPair, children: List[Any]) -> None:
    """The operator's case: the rule it writes for nr-gnb and its threads."""
    gnb = GnbProcess(name="nr-gnb", threads=("nr-gnb-rlc", "gnb worker"))
    children.append(gnb)
    ours = set(gnb.tids)
    rules = [rule("gtp5g-operator@node-a", "^(?:nr-gnb|nr-gnb-rlc)$"),
             rule("other", "^gnb worker$", priority=3)]

    def scenario(t: Transcript) -> None:
        token = t.token()
        t.call("post", "POST", NODE_INTENTS, {"policies": rules}, token=token)
        t.call("strategies", "GET", STRATEGIES, token=token, only_ids=ours)

    fake, real = dm_pair.run(scenario)
    assert_same(dm_pair, fake, real)
    listed = {(e["pid"], e["command_regex"]) for e in real.steps[-1][3]["scheduling"]}
    if dm_pair.build.match_threads:
        assert listed == {(gnb.pid, rules[0]["commandRegex"]),
                          (gnb.threads["nr-gnb-rlc"], rules[0]["commandRegex"]),
                          (gnb.threads["gnb worker"], "^gnb worker$")}
    else:  # threads are never listed, and a thread's own name matches nothing
        assert listed == {(gnb.pid, rules[0]["commandRegex"])}


def test_overlaps_pause_empty_and_invalid_rules(dm_pair: DMPair, children: List[Any]) -> None:
    p = unique_prefix()
    main = GnbProcess(name=f"{p}-a", threads=(f"{p}-t1", f"{p}-t2", "pause"))
    paused = GnbProcess(name="pause", threads=(f"{p}-in-pause",))
    children += [main, paused]
    rules = [rule("r1", f"^{p}-a$"), rule("r2", f"^{p}-t", priority=2, execution_time=-5),
             rule("zz", p, priority=9), rule("empty", ""), rule("invalid", f"({p}"),
             rule("pause", "^pause$"), rule("m1", f"^{p}-t1$", priority=4)]

    def scenario(t: Transcript) -> None:
        token = t.token()
        without_catch_all = [r for r in rules if r["policyID"] != "zz"]
        for label, policies in (("in order", rules), ("reversed", rules[::-1]),
                                ("without the catch-all", without_catch_all),
                                ("only unusable ones", rules[3:6])):
            t.call(f"post {label}", "POST", NODE_INTENTS, {"policies": policies}, token=token)
            t.call(f"strategies {label}", "GET", STRATEGIES, token=token)

    fake, real = dm_pair.run(scenario)
    assert_same(dm_pair, fake, real)
    listings = [{(e["pid"], e["command_regex"], e["execution_time"]) for e in step[3]["scheduling"]}
                for step in real.steps if step[0].startswith("strategies")]
    t1, t2, in_pause = (main.threads[f"{p}-t1"], main.threads[f"{p}-t2"],
                        paused.threads[f"{p}-in-pause"])
    if dm_pair.build.match_threads:  # one per TID: the last rule in policyID order wins
        assert listings[0] == listings[1] == {(tid, p, 20_000_000)
                                              for tid in (main.pid, t1, t2, in_pause)}
        assert listings[2] == {(main.pid, f"^{p}-a$", 20_000_000),
                               (t1, f"^{p}-t", 2**64 - 5), (t2, f"^{p}-t", 2**64 - 5)}
    else:  # leaders only, one per rule: "pause" and the threads never
        assert listings[0] == {(main.pid, f"^{p}-a$", 20_000_000), (main.pid, p, 20_000_000)}
        assert listings[2] == {(main.pid, f"^{p}-a$", 20_000_000)}
    assert listings[3] == set()  # empty, invalid and "pause" rules resolve to nothing


def test_names_the_kernel_cut_short(dm_pair: DMPair, children: List[Any]) -> None:
    """comm holds 15 bytes: a longer name is cut there, inside a UTF-8 character or after
    a space.  The rule the operator writes for such names (core.strategy.names_regex over
    core.procfs.parse_comm's reading) must match them as the Decision Maker reads them."""
    p = unique_prefix()
    cut_char, cut_space, bad_byte = f"{p}-w\udce2\udc80", f"{p}-rlc-wk ", f"{p}\udcffw"
    gnb = GnbProcess(name=f"{p}-gnb", threads=(cut_char, cut_space, bad_byte))
    children.append(gnb)
    names = [parse_comm(os.fsencode(n)) for n in (f"{p}-gnb", cut_char, cut_space, bad_byte)]
    regex = names_regex(names)

    def scenario(t: Transcript) -> None:
        token = t.token()
        t.call("post", "POST", NODE_INTENTS, {"policies": [rule("r", regex)]}, token=token)
        t.call("strategies", "GET", STRATEGIES, token=token, only_ids=set(gnb.tids))

    fake, real = dm_pair.run(scenario)
    assert_same(dm_pair, fake, real)
    listed = {e["pid"] for e in real.steps[-1][3]["scheduling"]}
    assert listed == (set(gnb.tids) if dm_pair.build.match_threads else {gnb.pid})


REGEX_CASES = [
    r"[[:alpha:]]{2}\d", r"[[:^digit:]]b", r"\pL\pL", r"\p{Lu}", r"\PL", r"(?i)ab\d",
    r"(?<n>Ab)", r"(?P<n>Ab)", r"A{,2}b", r"Ab*+", r"(?=A)", r"(?!x)A", r"\d\Z", r"\d\z",
    r"(?x) A b", r"(?U)A.+", r"(?s).", r"(?m)^", r"\sx", r"\Qb9\E", r"\x{41}", r"\x41",
    r"[^\x00-\x7f]", r"\b", r"\Bb", r"\C", r"\G", r"a{2}{3}", r"A{1001}", r"A{2,1}",
    r"\8", r"(?i)k", r"(?i)\x{212a}", r"(?i)\u00e9", "\u00e9", r"\w+$", r"[\d-z]",
    r"(?#comment)A", r"(?-i:A)", r"(?i:a)b", r"(?iU)A", r"(?:a|)", r"()", r"$^", r"\v",
    r"[[:word:]]+", r"[[.a.]]", r"x**", r"Ab9$", r"(A)\1", r"(?a)A"]


def test_regex_dialect(dm_pair: DMPair, children: List[Any]) -> None:
    """Go RE2 against the fake's stand-in: each regex alone, after a unique prefix."""
    p = unique_prefix()
    proc = GnbProcess(name=f"{p}Ab9", threads=(f"{p} x", f"{p}\u00e9", f"{p}\u212a",
                                               f"{p}K", f"{p}b"))
    children.append(proc)

    def scenario(t: Transcript) -> None:
        token = t.token()
        for i, case in enumerate(REGEX_CASES):
            regex = f"^{p}" + case
            t.call(f"post {regex!r}", "POST", NODE_INTENTS, {"policies": [rule(f"r{i}", regex)]},
                   token=token)
            t.call(f"strategies {regex!r}", "GET", STRATEGIES, token=token)

    fake, real = dm_pair.run(scenario)
    assert_same(dm_pair, fake, real)
    matched = [step[0] for step in real.steps if step[0].startswith("strategies")
               and isinstance(step[3], dict) and step[3]["scheduling"]]
    assert len(matched) >= 15, matched  # the cases do reach our process (19 leaders only)


def test_zombie_leader_whose_threads_live(dm_pair: DMPair, children: List[Any],
                                          tmp_path: Path) -> None:
    reason = build_c_program(ZOMBIE_LEADER_C, tmp_path / "zombie_leader")
    if reason is not None:
        pytest.skip(f"cannot build the zombie-leader program: {reason}")
    p = unique_prefix()
    gnb = ZombieLeaderGnb(tmp_path / "zombie_leader", workers=2, name=f"{p}z")
    children.append(gnb)
    ours = {gnb.pid, *gnb.threads.values()}
    rules = [rule("leader", f"^{p}z$"), rule("workers", "^gnb-w[0-9]+$", priority=2)]

    def scenario(t: Transcript) -> None:
        token = t.token()
        t.call("post", "POST", NODE_INTENTS, {"policies": rules}, token=token)
        t.call("strategies", "GET", STRATEGIES, token=token, only_ids=ours)

    fake, real = dm_pair.run(scenario)
    assert_same(dm_pair, fake, real)
    assert gnb.leader_state() == "Z"
    listed = {e["pid"] for e in real.steps[-1][3]["scheduling"]}
    assert listed == (ours if dm_pair.build.match_threads else {gnb.pid})


def test_an_exited_process_is_gone_at_the_next_get(dm_pair: DMPair,
                                                   children: List[Any]) -> None:
    p = unique_prefix()
    procs = [GnbProcess(name=f"{p}-{i}", threads=(f"{p}-{i}t",)) for i in range(2)]
    children.extend(procs)

    def scenario(t: Transcript) -> None:
        token = t.token()
        t.call("post", "POST", NODE_INTENTS, {"policies": [rule("r", f"^{p}-")]}, token=token)
        t.call("both alive", "GET", STRATEGIES, token=token)

    def after(t: Transcript) -> None:
        token = t.token()
        t.call("one exited", "GET", STRATEGIES, token=token)
        t.call("delete", "DELETE", NODE_INTENTS, {"all": True}, token=token)
        t.call("no rules", "GET", STRATEGIES, token=token)

    fake, real = dm_pair.run(scenario)
    procs[0].stop()
    fake_after, real_after = dm_pair.transcripts()
    after(fake_after)
    after(real_after)
    assert_same(dm_pair, fake, real)
    assert_same(dm_pair, fake_after, real_after)
    gone = {procs[0].pid, *procs[0].threads.values()}
    assert not gone & {e["pid"] for e in real_after.steps[1][3]["scheduling"]}


CHURN = r"""
import ctypes, os, sys, threading, time
libc = ctypes.CDLL(None)
name = sys.argv[1].encode()
libc.prctl(15, name, 0, 0, 0)
def short_thread():
    libc.prctl(15, name, 0, 0, 0)
deadline = time.monotonic() + 60
print("ready", flush=True)
while time.monotonic() < deadline:
    threads = [threading.Thread(target=short_thread) for _ in range(8)]
    for t in threads: t.start()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    for t in threads: t.join()
    os.waitpid(pid, 0)
"""


def test_tasks_exiting_mid_scan(dm_pair: DMPair) -> None:
    """Threads and processes named like the rule come and go during the scans: a task
    gone mid-scan is skipped (ENOENT/ESRCH), never an error, in both versions."""
    p = unique_prefix()
    churn = subprocess.Popen([sys.executable, "-c", CHURN, f"{p}c"], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert churn.stdout is not None and churn.stdout.readline().strip() == "ready"

        def scenario(t: Transcript) -> None:
            token = t.token()
            t.call("post", "POST", NODE_INTENTS, {"policies": [rule("r", f"^{p}c$")]},
                   token=token)
            for i in range(40):
                t.call(f"strategies {i}", "GET", STRATEGIES, token=token,
                       only_ids=())  # which tasks were caught varies: statuses only

        assert_same(dm_pair, *dm_pair.run(scenario))
    finally:
        churn.kill()
        churn.wait()
