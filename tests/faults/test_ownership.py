"""Never change or delete what is not provably this host's, and stored proof that
the server keeps refusing heals (robustness issue, classes 2 and 5).

The class: any path that adopts, updates or deletes a server object — a
restart before the first packet, clear_on_stop, a resync, two hosts sharing a
node name, a Decision Maker that also holds others' rules — must act only on
an object proven ours (the id stored, an exact match of what we would write);
without proof it creates and deletes nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

from gtp5g_operator.config import Config
from gtp5g_operator.config.schema import ApiConfig, StrategyConfig
from gtp5g_operator.core.tracker import ProcessView
from gtp5g_operator.gthulhu.decision_maker import MAX_NAMES, RULE_FILE, DecisionMakerWriter
from gtp5g_operator.gthulhu.errors import ApiError
from gtp5g_operator.gthulhu.http import JsonHttp
from gtp5g_operator.gthulhu.manager import POLICY_FILE, ManagerWriter
from gtp5g_operator.gthulhu.ownership import MAX_EARLIER, MAX_REFUSALS
from testbed.fake_decision_maker import FakeDecisionMaker
from testbed.fake_manager import FakeManager
from testbed.harness import DaemonProcess, GnbProcess, wait_until
from tests.conftest import Env
from tests.faults.test_own_resources import fill, full_tmpfs
from tests.integration.test_flavors import (
    NODE,
    PASSWORD,
    POLICY,
    lines,
    manager_for,
    my_policies,
    regex_is,
    rule,
    start_dm,
    start_manager,
)

pytestmark = pytest.mark.faults

OTHERS = "^(?:my-batch-job)$"  # a policy the user made by hand for the same node
PUT = ("PUT", "/api/v1/node-scheduling-policies")
REFUSED = (500, b'{"success":false,"error":"Internal Server Error"}')


@pytest.fixture
def manager(keys: Dict[str, Path]) -> Iterator[FakeManager]:
    server = manager_for(keys)
    yield server
    server.stop()


@pytest.fixture
def dm(keys: Dict[str, Path]) -> Iterator[FakeDecisionMaker]:
    server = FakeDecisionMaker(keys["private"].read_bytes()).start()
    yield server
    server.stop()


def regexes(manager: FakeManager) -> List[str]:
    return sorted(p["commandRegex"] for p in my_policies(manager))


def quiet_for(seconds: float) -> None:
    """Give the daemon several resyncs in which it could act (asserting an absence)."""
    time.sleep(seconds)


# --- the Manager -----------------------------------------------------------------------------


@pytest.mark.parametrize("clear_on_stop", [False, True])
def test_restarts_before_the_first_packet_never_delete_a_users_own_policies(
        env: Env, manager: FakeManager, gnb: Callable[..., GnbProcess],
        clear_on_stop: bool) -> None:
    """The reported defect: every restart took the first policy of the user for the
    node as "ours" and deleted it.  Restart three times (with and without
    clear_on_stop, with no gNB and after one); the hand-made policies stay."""
    handmade = [manager.add_policy("operator", [NODE], OTHERS),
                manager.add_policy("operator", [NODE, "node-b"], "^(?:nr-gnb)$")]
    strategy = {"clear_on_stop": clear_on_stop}
    for _ in range(3):
        d = start_manager(env, manager, strategy=strategy)
        d.wait_log("nothing to remove", timeout=30)  # the first push ran: no target yet
        assert d.stop() == 0
        env.writer.close()
    assert sorted(p["id"] for p in my_policies(manager)) == sorted(handmade)
    # and with a gNB: ours is created beside them, and only ours is removed
    d = start_manager(env, manager, strategy=strategy)
    g = gnb(threads=())
    env.writer.write(lines(g))
    manager.wait_for(lambda: len(my_policies(manager)) == 3, 30)
    g.stop()
    manager.wait_for(lambda: sorted(p["id"] for p in my_policies(manager)) == sorted(handmade),
                     10)
    assert d.stop() == 0
    assert manager.requests("DELETE", "/api/v1/node-scheduling-policies")  # ours, once


def test_a_policy_saying_exactly_what_we_write_is_adopted_not_duplicated(
        env: Env, manager: FakeManager, gnb: Callable[..., GnbProcess]) -> None:
    """Lost state file, same Manager: an exact match is ours (adopted); a policy for the
    same node with another regex is not (left alone, ours created beside it)."""
    same = manager.add_policy("operator", [NODE], "^(?:nr-gnb)$")
    other = manager.add_policy("operator", [NODE], OTHERS)
    d = start_manager(env, manager)
    g = gnb(threads=())
    env.writer.write(lines(g))
    d.wait_log(f"policy {same} adopted", timeout=30)
    quiet_for(2.0)
    assert manager.posts() == [] and {p["id"] for p in my_policies(manager)} == {same, other}
    g.stop()
    manager.wait_for(lambda: [p["id"] for p in my_policies(manager)] == [other], 30)


@pytest.mark.parametrize("then", ["resync", "new thread"])
def test_our_policy_that_someone_changed_is_theirs_neither_reverted_nor_deleted(
        env: Env, manager: FakeManager, gnb: Callable[..., GnbProcess], then: str) -> None:
    """Someone edits the policy this host created (another regex, another priority):
    it is theirs now.  Neither the resync (same rule) nor a change of ours (a new
    thread: a PUT) reverts it, and the gNB's exit does not delete it: this host drops
    the stored id and writes a policy of its own."""
    d = start_manager(env, manager)
    g = gnb(threads=("nr-gnb-rlc",))
    env.writer.write(lines(g))
    manager.wait_for(lambda: regex_is(manager, "^(?:nr-gnb)$"), 30)
    created = my_policies(manager)[0]["id"]
    d.wait_log(f"policy {created} created", timeout=10)  # its id stored: ours, provably
    manager.edit_policy(created, OTHERS, priority=5)
    if then == "new thread":
        env.writer.write(lines(g, "nr-gnb-rlc"))
    ours = "^(?:nr-gnb)$" if then == "resync" else "^(?:nr-gnb|nr-gnb-rlc)$"
    manager.wait_for(lambda: regexes(manager) == sorted([OTHERS, ours]), 30)
    d.wait_log(f"policy {created} for node {NODE} was changed on the Manager", timeout=10)
    theirs = {"id": created, "commandRegex": OTHERS, "priority": 5}
    kept = [{k: p[k] for k in theirs} for p in my_policies(manager) if p["id"] == created]
    assert kept == [theirs]
    g.stop()
    manager.wait_for(lambda: [{k: p[k] for k in theirs} for p in my_policies(manager)]
                     == [theirs], 30)
    assert d.stop() == 0
    assert [p["id"] for p in my_policies(manager)] == [created]


def test_a_put_done_whose_answer_was_lost_is_still_ours(
        env: Env, manager: FakeManager, gnb: Callable[..., GnbProcess]) -> None:
    """The Manager did the PUT of a new rule, and the answer was lost (here: a 500): the
    policy now says that rule, which this host recorded before the request; it is not
    taken for someone's edit (that would drop the id and, had the rule changed again,
    leave the policy behind for good)."""
    put = ("PUT", "/api/v1/node-scheduling-policies")
    d = start_manager(env, manager)
    g = gnb(threads=("nr-gnb-rlc",))
    env.writer.write(lines(g))
    manager.wait_for(lambda: regex_is(manager, "^(?:nr-gnb)$"), 30)
    created = my_policies(manager)[0]["id"]
    d.wait_log(f"policy {created} created", timeout=10)
    manager.answers[put] = (500, b'{"success":false,"error":"Internal Server Error"}')
    env.writer.write(lines(g, "nr-gnb-rlc"))
    manager.wait_for(lambda: manager.answered.get(put, 0) >= 1, 30)
    manager.edit_policy(created, "^(?:nr-gnb|nr-gnb-rlc)$", priority=1)  # it was done
    del manager.answers[put]
    d.wait_log(f"policy {created} updated", timeout=30)
    assert "was changed on the Manager" not in d.log()
    assert [p["id"] for p in my_policies(manager)] == [created]
    g.stop()
    manager.wait_for(lambda: my_policies(manager) == [], 30)


def test_two_hosts_sharing_a_node_name_touch_only_their_own(
        env: Env, manager: FakeManager, gnb: Callable[..., GnbProcess], tmp_path: Path) -> None:
    """Host A and host B: one user, one node name, gNBs with different thread names.
    Each keeps its own policy; B's gNB stopping (and B's clear_on_stop) leaves A's."""
    a = start_manager(env, manager)
    g = gnb(threads=("gnb worker",))
    env.writer.write(lines(g, "gnb worker"))
    manager.wait_for(lambda: regexes(manager) == ["^(?:gnb worker|nr-gnb)$"], 30)
    a_policy = my_policies(manager)[0]["id"]
    b_env = second_host(tmp_path / "host-b", env)
    try:
        b = start_manager(b_env, manager, strategy={"clear_on_stop": True})
        h = gnb(threads=())
        b_env.writer.write(lines(h))
        manager.wait_for(lambda: regexes(manager) == ["^(?:gnb worker|nr-gnb)$",
                                                      "^(?:nr-gnb)$"], 10)
        h.stop()
        manager.wait_for(lambda: [p["id"] for p in my_policies(manager)] == [a_policy], 30)
        assert b.stop() == 0
        assert [p["id"] for p in my_policies(manager)] == [a_policy]
    finally:
        b_env.close()
        b_env.notify.close()
    assert a.proc.poll() is None


def second_host(root: Path, first: Env) -> Env:
    """Another host's world: its own FIFO, notify socket, state and runtime directories."""
    from testbed.harness import NotifySocket

    root.mkdir()
    fifo = root / "tracing" / "trace_pipe"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    return Env(root, fifo, first.api, first.keys, NotifySocket(root / "notify.sock"))


def test_a_stored_id_the_manager_keeps_refusing_is_dropped_and_named(
        env: Env, manager: FakeManager, gnb: Callable[..., GnbProcess]) -> None:
    """A policy id in the state directory that the Manager answers 500 to for ever (as
    the real Manager answers a malformed id) is dropped after a few tries; the log
    names the file; the policy is created again and the gNB is boosted."""
    state = env.tmp / "state"
    state.mkdir(exist_ok=True)
    stored = state / "manager-policy.json"
    bogus = "0123456789abcdef01234567"
    stored.write_text(json.dumps({"api_url": manager.url, "user": "operator", "node": NODE,
                                  "policy_id": bogus}))
    manager.answers[("PUT", "/api/v1/node-scheduling-policies")] = (
        500, b'{"success":false,"error":"Internal Server Error"}')
    d = start_manager(env, manager)
    g = gnb(threads=())
    env.writer.write(lines(g))
    d.wait_log(f"{stored}: the server refused the id {bogus}", timeout=30)
    manager.wait_for(lambda: regex_is(manager, "^(?:nr-gnb)$"), 30)
    created = my_policies(manager)[0]["id"]
    wait_until(lambda: stored.exists() and json.loads(stored.read_text())["object_id"]
               == created, 10, "the new id stored")
    assert d.proc.poll() is None


def test_a_malformed_stored_id_is_named_and_replaced(
        env: Env, manager: FakeManager, gnb: Callable[..., GnbProcess]) -> None:
    state = env.tmp / "state"
    state.mkdir(exist_ok=True)
    stored = state / "manager-policy.json"
    stored.write_text(json.dumps({"api_url": manager.url, "user": "operator", "node": NODE,
                                  "policy_id": "../../etc/passwd"}))
    d = start_manager(env, manager)
    g = gnb(threads=())
    env.writer.write(lines(g))
    manager.wait_for(lambda: regex_is(manager, "^(?:nr-gnb)$"), 30)
    assert f"ignoring {stored}: its id" in d.log()
    assert not manager.requests("PUT", "/api/v1/node-scheduling-policies")


# --- the Decision Maker ---------------------------------------------------------------------


def test_rules_of_others_on_a_decision_maker_are_never_replaced(
        env: Env, dm: FakeDecisionMaker, gnb: Callable[..., GnbProcess]) -> None:
    """POST /api/v1/node-intents replaces the DM's whole list: with someone else's rule
    there (a Manager's, a user's), this host writes nothing and says why, once, at
    ERROR; once the DM holds nothing else, the rule is written."""
    theirs = {**rule(OTHERS), "policyID": "65f0c0ffee0000000000beef"}
    dm.set_rules([theirs])
    d = start_dm(env, dm)
    g = gnb(threads=())
    env.writer.write(lines(g))
    d.wait_log("holds node rules that are not this host's", timeout=30)
    quiet_for(3.0)  # two resyncs
    assert dm.posts() == [] and dm.rules() == [theirs]
    said = [ln for ln in d.log().splitlines() if "not this host's" in ln and " DEBUG " not in ln]
    assert len(said) == 1 and " ERROR " in said[0]
    dm.set_rules([])  # the other writer is gone
    dm.wait_for(lambda: dm.rules() == [rule("^(?:nr-gnb)$")], 30)
    g.stop()
    dm.wait_for(lambda: dm.rules() == [], 30)


def test_our_rule_replaced_by_someone_elses_is_said_once_not_at_every_retry(
        env: Env, dm: FakeDecisionMaker, gnb: Callable[..., GnbProcess]) -> None:
    """Someone replaced this host's rule on the DM with their own: every retry said
    'the Decision Maker no longer holds this host's rule (restarted?): writing it
    again' at INFO (and wrote nothing: the rules are not ours to replace), a line
    per retry for as long as theirs stays.  The ERROR that says why is the one line."""
    d = start_dm(env, dm, api={"timeout": 0.4}, strategy={"resync_interval": 0.5},
                 log={"level": "info"})
    g = gnb(threads=())
    env.writer.write(lines(g))
    dm.wait_for(lambda: dm.rules() == [rule("^(?:nr-gnb)$")], 30)
    theirs = {**rule(OTHERS), "policyID": "65f0c0ffee0000000000beef"}
    dm.set_rules([theirs])
    d.wait_log("holds node rules that are not this host's", timeout=30)
    merkle = len(dm.requests("GET", "/api/v1/node-intents/merkle"))
    dm.wait_for(lambda: len(dm.requests("GET", "/api/v1/node-intents/merkle")) >= merkle + 5,
                30)  # five retries
    assert dm.rules() == [theirs]
    said = [ln for ln in d.log().splitlines() if "no longer holds this host's rule" in ln]
    assert said == []  # it is not written again: theirs are in the way
    assert sum("not this host's" in ln for ln in d.log().splitlines()) == 1
    dm.set_rules([])  # theirs gone, as from a restarted DM: ours is written again, and said
    dm.wait_for(lambda: dm.rules() == [rule("^(?:nr-gnb)$")], 30)
    d.wait_log("no longer holds this host's rule (restarted?): writing it again")


def test_after_a_restart_our_own_previous_rule_is_recognised_and_replaced(
        env: Env, dm: FakeDecisionMaker, gnb: Callable[..., GnbProcess]) -> None:
    """The rule this host wrote before a restart is provably ours (its root is the
    hash of the rule kept in the state directory), even when the new one differs."""
    d = start_dm(env, dm)
    g = gnb(threads=("gnb worker",))
    env.writer.write(lines(g, "gnb worker"))
    dm.wait_for(lambda: dm.rules() == [rule("^(?:gnb worker|nr-gnb)$")], 30)
    assert d.stop() == 0
    env.writer.close()
    d = start_dm(env, dm)
    env.writer.write(lines(g))  # after the restart only the main thread is seen
    dm.wait_for(lambda: dm.rules() == [rule("^(?:nr-gnb)$")], 30)
    assert "not this host's" not in d.log()


@pytest.mark.parametrize("flavor", ["decision-maker", "manager"])
def test_a_proof_not_written_while_the_state_directory_was_full_is_written_once_it_has_room(
        env: Env, dm: FakeDecisionMaker, manager: FakeManager, gnb: Callable[..., GnbProcess],
        flavor: str) -> None:
    """The state directory fills, and the gNB gets a new thread meanwhile: the rule is
    written to the server, its proof cannot be.  Once the disk had room the proof was
    never written (nothing had changed since), and after a restart that sees only the
    main thread this host took its own rule for someone else's: a Decision Maker was
    never written again ('not this host's', ERROR), a Manager policy was left behind
    boosting the old names beside a new one.  Now: one line, the proof catches up at the
    next push, and after the restart the rule is replaced as ours."""
    def start() -> DaemonProcess:
        if flavor == "manager":
            return start_manager(env, manager)  # type: ignore[no-any-return]
        return start_dm(env, dm)  # type: ignore[no-any-return]

    def on_server() -> List[str]:
        if flavor == "manager":
            return regexes(manager)
        return [r["commandRegex"] for r in dm.rules()]

    proof = env.tmp / "state" / (POLICY_FILE if flavor == "manager" else RULE_FILE)

    def proven() -> str:
        return str(json.loads(proof.read_text())["rule"]["command_regex"])

    with full_tmpfs(env.tmp / "state", full=False) as state:
        d = start()
        g = gnb(threads=("gnb worker",))
        env.writer.write(lines(g))
        wait_until(lambda: on_server() == ["^(?:nr-gnb)$"], 30, "the first rule")
        wait_until(lambda: proven() == "^(?:nr-gnb)$", 10, "its proof")
        fill(state)
        env.writer.write(lines(g, "gnb worker"))
        wait_until(lambda: on_server() == ["^(?:gnb worker|nr-gnb)$"], 30, "the new rule")

        def said() -> List[str]:
            return [ln for ln in d.log().splitlines()
                    if f"{proof}: No space left on device" in ln]

        wait_until(said, 20, "the failed write said")
        assert proven() == "^(?:nr-gnb)$"  # the last good proof, whole
        (state / "filler").unlink()
        wait_until(lambda: proven() == "^(?:gnb worker|nr-gnb)$", 10,
                   "the proof to catch up once the disk has room")
        assert len(said()) == 1 and " WARNING " in said()[0], d.log()
        assert d.stop() == 0
        env.writer.close()
        d = start()
        env.writer.write(lines(g))  # after the restart only the main thread is seen
        wait_until(lambda: on_server() == ["^(?:nr-gnb)$"], 30, "our rule replaced")
        assert "not this host's" not in d.log() and "never wrote" not in d.log(), d.log()
        assert d.stop() == 0


@pytest.mark.parametrize("others", ["beside ours", "in its place, under our policy id"])
def test_a_rule_of_ours_among_others_is_not_deleted_but_said(
        env: Env, dm: FakeDecisionMaker, gnb: Callable[..., GnbProcess], others: str) -> None:
    """Someone's POST replaced the DM's list with theirs, under our policy id (another
    host with this node name, a person), or kept ours beside theirs.  The daemon said
    the DM "holds node rules that are not this host's" (ERROR), then, the gNB gone,
    deleted by our policy id: the very rule it had just called someone else's.  The
    merkle root cannot tell which is the case: nothing is deleted, the push fails once
    at ERROR saying how to remove ours, and it is deleted once the DM holds it alone."""
    d = start_dm(env, dm)
    g = gnb(threads=())
    env.writer.write(lines(g))
    ours = rule("^(?:nr-gnb)$")
    dm.wait_for(lambda: dm.rules() == [ours], 30)
    held = ([ours, {**rule(OTHERS), "policyID": "65f0c0ffee0000000000beef"}]
            if others == "beside ours" else [rule(OTHERS)])
    dm.set_rules(held)
    g.stop()
    d.wait_log("holds node rules that are not provably this host's (merkle root")
    quiet_for(3.0)  # two resyncs in which it could delete
    assert dm.rules() == held and not dm.deletes()
    said = [ln for ln in d.log().splitlines()
            if "not provably this host's" in ln and " DEBUG " not in ln]
    assert len(said) == 1 and " ERROR " in said[0] and f'"policyId": "{POLICY}"' in said[0]
    dm.set_rules([ours])  # the others gone: ours alone, provably
    dm.wait_for(lambda: dm.rules() == [], 30)
    assert d.proc.poll() is None


NODE_INTENTS_POST = ("POST", "/api/v1/node-intents")


@pytest.mark.parametrize("crash", [False, True])
def test_a_failed_post_leaves_our_previous_rule_ours(
        env: Env, dm: FakeDecisionMaker, gnb: Callable[..., GnbProcess], crash: bool) -> None:
    """A POST that fails (5xx, timeout, reset) leaves the DM holding the rule before it,
    which is still ours: it used to turn into "not this host's" for good (the proof
    already named the new rule), so no new thread name was ever boosted again.  Also
    after a crash during that POST (the proof keeps the earlier rule on disk)."""
    d = start_dm(env, dm)
    g = gnb(threads=("gnb worker",))
    env.writer.write(lines(g))
    dm.wait_for(lambda: dm.rules() == [rule("^(?:nr-gnb)$")], 30)
    dm.answers[NODE_INTENTS_POST] = (500, b'{"success":false,"error":"busy"}')
    env.writer.write(lines(g, "gnb worker"))  # the rule changes while the DM fails
    dm.wait_for(lambda: dm.answered.get(NODE_INTENTS_POST, 0) >= 1, 30)
    if crash:
        d.proc.kill()
        d.proc.wait()
        env.writer.close()
        d = start_dm(env, dm)
        env.writer.write(lines(g, "gnb worker"))
    del dm.answers[NODE_INTENTS_POST]  # the DM recovers
    dm.wait_for(lambda: dm.rules() == [rule("^(?:gnb worker|nr-gnb)$")], 30)
    assert "not this host's" not in d.log()
    g.stop()
    dm.wait_for(lambda: dm.rules() == [], 30)
    proof = env.tmp / "state" / "decision-maker-rule.json"
    wait_until(lambda: not proof.exists(), 30, "the proof removed with the rule")


def test_a_rule_under_our_policy_id_that_this_host_never_wrote_is_not_deleted(
        env: Env, dm: FakeDecisionMaker) -> None:
    """With no proof (another host with this node name wrote it, or a person did), the
    first push with no target used to DELETE it by our policyID."""
    theirs = rule("^(?:nr-gnb)$")
    dm.set_rules([theirs])
    d = start_dm(env, dm)
    wait_until(lambda: d.log().count("pushed 0 entries") >= 2, 30, "two pushes with no target")
    assert dm.rules() == [theirs] and not dm.deletes()


@pytest.mark.parametrize("left", ["^(?:gnb worker|nr-gnb)$", "^(?:gnb worker)$"])
def test_a_rule_of_ours_without_proof_is_recognised_by_our_gnbs_names(
        env: Env, dm: FakeDecisionMaker, gnb: Callable[..., GnbProcess], left: str) -> None:
    """0.1.x kept no proof: after the upgrade the DM holds, alone and under our policy id,
    the rule 0.1.x wrote for the threads it had seen.  It says what this host writes for
    some of its gNB's threads: ours, replaced and removed (it was an ERROR 'not this
    host's', nothing written, and the old rule outlived the gNB)."""
    dm.set_rules([rule(left)])
    d = start_dm(env, dm)
    g = gnb(threads=("gnb worker",))
    env.writer.write(lines(g))  # only the main thread seen yet: another rule than 0.1.x's
    dm.wait_for(lambda: dm.rules() == [rule("^(?:nr-gnb)$")], 30)
    assert "not this host's" not in d.log()
    d.wait_log("with no proof in the state directory", timeout=10)
    g.stop()
    dm.wait_for(lambda: dm.rules() == [], 30)


def test_a_rule_of_ours_without_proof_is_recognised_after_a_reload_to_its_values(
        dm: FakeDecisionMaker, keys: Dict[str, Path], gnb: Callable[..., GnbProcess],
        tmp_path: Path) -> None:
    """0.1.x wrote its rule with priority 1; the upgrade came with priority 5, so the rule
    is not what this host writes: not provably ours (an ERROR).  The admin reloads
    priority = 1, which keeps the writer and replaces its strategy: the rule says what
    this host writes again.  The memo of the last miss knew only the merkle root and
    the names, so nothing was tried again until a restart (ERROR at every push)."""
    dm.set_rules([rule("^(?:nr-gnb)$")])
    config = Config(api=ApiConfig(url=dm.url, flavor="decision-maker",
                                  public_key=str(keys["public"])),
                    public_key_pem=keys["public"].read_text(), node_name=NODE,
                    strategy=StrategyConfig(priority=5))
    w = DecisionMakerWriter(JsonHttp(dm.url, 5.0), config, str(tmp_path / "state"))
    g = gnb(threads=("gnb worker",))
    views = [ProcessView(g.pid, "nr-gnb", "", os.getuid(), 0.0, (g.pid, g.threads["gnb worker"]),
                         frozenset({"nr-gnb", "gnb worker"}))]
    try:
        w.authenticate(time.monotonic() + 5)
        with pytest.raises(ApiError, match="not this host's"):
            w.write(views, time.monotonic() + 5)
        w.strategy = dataclasses.replace(w.strategy, priority=1)  # as the pusher's reload
        w.write(views, time.monotonic() + 5)
        assert dm.rules() == [rule("^(?:gnb worker|nr-gnb)$")]
        w.write([], time.monotonic() + 5)
        assert dm.rules() == []
    finally:
        w.close()


def test_a_gnb_with_too_many_thread_names_to_recognise_a_rule_says_so_once(
        dm: FakeDecisionMaker, keys: Dict[str, Path], gnb: Callable[..., GnbProcess],
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Past MAX_NAMES thread names a rule without proof is not tried against our gNB's
    names (2**N rules): the write stops at 'not this host's' and nothing said why, so an
    upgraded 0.1.x host's own rule looked like someone else's.  Said once, not per push."""
    dm.set_rules([rule("^(?:nr-gnb)$")])  # 0.1.x's rule, no proof
    config = Config(api=ApiConfig(url=dm.url, flavor="decision-maker",
                                  public_key=str(keys["public"])),
                    public_key_pem=keys["public"].read_text(), node_name=NODE)
    w = DecisionMakerWriter(JsonHttp(dm.url, 5.0), config, str(tmp_path / "state"))
    names = tuple(f"gnb-w{i}" for i in range(MAX_NAMES))  # with nr-gnb: one too many
    g = gnb(threads=names)
    views = [ProcessView(g.pid, "nr-gnb", "", os.getuid(), 0.0,
                         (g.pid, *g.threads.values()), frozenset({"nr-gnb", *names}))]
    caplog.set_level(logging.INFO, logger="gtp5g_operator")
    try:
        w.authenticate(time.monotonic() + 5)
        for _ in range(3):  # three pushes
            with pytest.raises(ApiError, match="not this host's"):
                w.write(views, time.monotonic() + 5)
    finally:
        w.close()
    said = [r for r in caplog.records if "thread names" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records]
    assert f"{MAX_NAMES + 1} thread names" in said[0].getMessage()


def test_a_host_with_a_rule_on_record_does_not_take_another_rule_for_its_own(
        env: Env, dm: FakeDecisionMaker, gnb: Callable[..., GnbProcess]) -> None:
    """This host wrote ^(?:gnb worker|nr-gnb)$ here (its proof says so); the DM now holds
    ^(?:nr-gnb)$ under the same policy id: someone replaced ours (another host with this
    node name).  It names our gNB's threads, but it is theirs: not recognised."""
    state = env.tmp / "state"
    state.mkdir(exist_ok=True)
    mine = rule("^(?:gnb worker|nr-gnb)$")
    (state / "decision-maker-rule.json").write_text(json.dumps({
        "api_url": dm.url, "object_id": None, "earlier": [],
        "rule": {"policy_id": mine["policyID"], "node": NODE,
                 "command_regex": mine["commandRegex"], "priority": 1,
                 "execution_time_ns": 20_000_000}}))
    theirs = rule("^(?:nr-gnb)$")
    dm.set_rules([theirs])
    d = start_dm(env, dm)
    g = gnb(threads=("gnb worker",))
    env.writer.write(lines(g, "gnb worker"))
    d.wait_log("holds node rules that are not this host's", timeout=30)
    assert dm.rules() == [theirs] and dm.posts() == []


def test_a_rule_under_our_policy_id_naming_others_is_still_not_ours(
        env: Env, dm: FakeDecisionMaker, gnb: Callable[..., GnbProcess]) -> None:
    """Under our policy id but naming a task our gNB does not have: not provably ours."""
    theirs = rule("^(?:my-batch-job|nr-gnb)$")
    dm.set_rules([theirs])
    d = start_dm(env, dm)
    g = gnb(threads=("gnb worker",))
    env.writer.write(lines(g))
    d.wait_log("holds node rules that are not this host's", timeout=30)
    assert dm.rules() == [theirs] and dm.posts() == []


def test_a_manager_refusing_the_stored_id_a_while_leaves_no_orphan_policy(
        env: Env, manager: FakeManager, gnb: Callable[..., GnbProcess]) -> None:
    """The stored id is dropped after three refusals (about 2 s of 5xx), and the policy
    it named, still saying the rule this host wrote before, is updated rather than left
    boosting the old names for ever beside a new one."""
    put = ("PUT", "/api/v1/node-scheduling-policies")
    d = start_manager(env, manager)
    g = gnb(threads=("gnb worker",))
    env.writer.write(lines(g))
    manager.wait_for(lambda: regexes(manager) == ["^(?:nr-gnb)$"], 30)
    manager.answers[put] = (500, b'{"success":false,"error":"Internal Server Error"}')
    env.writer.write(lines(g, "gnb worker"))  # the rule changes during a 5xx episode
    d.wait_log("the server refused the id", timeout=30)
    del manager.answers[put]
    manager.wait_for(lambda: regexes(manager) == ["^(?:gnb worker|nr-gnb)$"], 30)
    g.stop()
    manager.wait_for(lambda: my_policies(manager) == [], 30)


def test_adopting_a_policy_removes_ours_that_still_says_an_earlier_rule(
        env: Env, manager: FakeManager, gnb: Callable[..., GnbProcess]) -> None:
    """Our policy refuses the PUT of a new rule until its id is dropped, and a policy
    saying exactly the new rule is there (made by hand, say): adopting it stored only the
    new rule, so ours, still saying the earlier one, was forgotten and boosted the old
    names for good (not even the gNB's exit removed it).  It is deleted on adoption."""
    put = ("PUT", "/api/v1/node-scheduling-policies")
    d = start_manager(env, manager)
    g = gnb(threads=("gnb worker",))
    env.writer.write(lines(g))
    manager.wait_for(lambda: regexes(manager) == ["^(?:nr-gnb)$"], 30)
    ours = my_policies(manager)[0]["id"]
    exact = manager.add_policy("operator", [NODE], "^(?:gnb worker|nr-gnb)$")
    manager.answers[put] = (500, b'{"success":false,"error":"Internal Server Error"}')
    env.writer.write(lines(g, "gnb worker"))  # the rule changes during a 5xx episode
    d.wait_log(f"policy {exact} adopted", timeout=30)
    del manager.answers[put]
    manager.wait_for(lambda: [p["id"] for p in my_policies(manager)] == [exact], 30)
    d.wait_log(f"policy {ours} for node {NODE} removed: it said a rule this host wrote before",
               timeout=10)
    g.stop()
    manager.wait_for(lambda: my_policies(manager) == [], 30)



def manager_writer(manager: FakeManager, state: Path) -> ManagerWriter:
    """A Manager writer (as the daemon makes one) with its credentials, state in `state`:
    a new one is the service restarted."""
    config = Config(api=ApiConfig(url=manager.url, flavor="manager", username="operator"),
                    password=PASSWORD, node_name=NODE)
    w = ManagerWriter(JsonHttp(manager.url, 5.0), config, str(state))
    w.authenticate(time.monotonic() + 5)
    return w


def test_our_policy_stays_ours_after_more_failed_puts_than_earlier_rules_kept(
        manager: FakeManager, tmp_path: Path) -> None:
    """The policy says the rule this host last confirmed; PUTs of MAX_EARLIER + 1 newer
    rules fail (500, not done), then the service restarts.  The proof kept the newest
    rules only, so the policy, still saying the confirmed one, read as someone's edit:
    its id dropped, a second policy created, and ours left boosting the old names for
    good (not even the gNB's exit removed it)."""
    def writer() -> ManagerWriter:
        return manager_writer(manager, tmp_path)

    def gnb_named(*threads: str) -> List[ProcessView]:
        return [ProcessView(100, "nr-gnb", "", 0, 0.0, (100,), frozenset(("nr-gnb", *threads)))]

    w = writer()
    w.write(gnb_named(), time.monotonic() + 5)
    ours = [p["id"] for p in my_policies(manager)]
    manager.answers[PUT] = REFUSED
    for i in range(MAX_EARLIER + 1):
        with pytest.raises(ApiError):
            w.write(gnb_named(*[f"t{j}" for j in range(i + 1)]), time.monotonic() + 5)
    del manager.answers[PUT]
    w.close()
    w = writer()  # restarted
    try:
        w.write(gnb_named("t0"), time.monotonic() + 5)
        assert [p["id"] for p in my_policies(manager)] == ours
        assert regexes(manager) == ["^(?:nr-gnb|t0)$"]
        w.write([], time.monotonic() + 5)
        assert my_policies(manager) == []
    finally:
        w.close()


def test_the_gnb_exit_after_a_restart_removes_our_policy_saying_an_earlier_rule(
        manager: FakeManager, tmp_path: Path) -> None:
    """Our policy refused the PUT of a new rule until its id was dropped; the service
    restarted, and the gNB had gone.  The proof still names the earlier rule the policy
    says, but the clear looked only for the new one: "nothing to remove", the proof
    erased, and the policy left boosting the old names for good."""
    def writer() -> ManagerWriter:
        return manager_writer(manager, tmp_path)

    gnb = [ProcessView(100, "nr-gnb", "", 0, 0.0, (100,), frozenset({"nr-gnb"}))]
    w = writer()
    w.write(gnb, time.monotonic() + 5)
    manager.answers[PUT] = REFUSED
    worker = [dataclasses.replace(gnb[0], thread_names=frozenset({"nr-gnb", "gnb worker"}))]
    for _ in range(MAX_REFUSALS):
        with pytest.raises(ApiError):
            w.write(worker, time.monotonic() + 5)
    assert w.ids.object_id is None  # dropped after the refusals
    del manager.answers[PUT]
    w.close()
    w = writer()  # restarted; no target is live
    try:
        w.write([], time.monotonic() + 5)
        assert my_policies(manager) == []
    finally:
        w.close()


# --- v0, merge mode --------------------------------------------------------------------------


def test_merge_mode_keeps_another_writers_entry_for_a_reused_pid_after_a_restart(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    """owned.json names the PIDs this host pushed; while it was down its task died, the
    PID was reused and another writer boosted the new process with its own values.
    The restart used to remove that entry (any entry for an owned PID went); only an
    entry saying what this host pushed is its own."""
    from testbed.tracelines import gtp5g_line

    env.api.strategies = []
    d = env.start(strategy={"mode": "merge"})
    g = gnb(threads=())
    env.writer.write(gtp5g_line("nr-gnb", g.pid, g.pid))
    env.api.wait_post(lambda s: any(e.get("pid") == g.pid for e in s))
    assert d.stop() == 0
    env.writer.close()
    g.stop()
    theirs = {"pid": g.pid, "priority": False, "execution_time": 7}  # the reused PID's
    env.api.strategies = [theirs]
    posts = len(env.api.posts())
    env.start(strategy={"mode": "merge"})
    wait_until(lambda: len(env.api.posts()) > posts, 30, "the first push after the restart")
    assert env.api.strategies == [theirs]
    owned = env.tmp / "state" / "owned.json"  # rewritten once the POST is answered
    wait_until(lambda: {k: v for k, v in json.loads(owned.read_text()).items()
                        if k != "machine"} == {
        "api_url": env.api.url, "pids": [], "strategies": []}, 30, "nothing owned any more")


def test_merge_mode_records_what_it_owns_once_the_full_state_directory_has_room(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    """A gNB pushed while the state directory was full is in owned.json once there is
    room, at the next push: it was left out until the IDs changed again, and entries a
    restart should remove (its tasks gone meanwhile) stayed on the server."""
    with full_tmpfs(env.tmp / "state", full=False) as state:
        env.start(strategy={"mode": "merge", "resync_interval": 1.5})
        first, second = gnb(threads=()), gnb(threads=())
        owned = state / "owned.json"

        def recorded() -> set[int]:
            return set(json.loads(owned.read_text())["pids"]) if owned.exists() else set()

        env.writer.write(lines(first))
        wait_until(lambda: recorded() == {first.pid}, 30, "the first gNB recorded")
        fill(state)
        env.writer.write(lines(second))
        env.api.wait_post(lambda s: {first.pid, second.pid} <= {e.get("pid") for e in s}, 30)
        assert recorded() == {first.pid}  # the last whole record
        (state / "filler").unlink()
        wait_until(lambda: recorded() == {first.pid, second.pid}, 10,
                   "owned.json to catch up once the disk has room")


def test_merge_mode_still_removes_what_it_left_behind_from_an_older_owned_file(
        env: Env) -> None:
    """An owned.json of an earlier version names PIDs only: an entry for one that says
    this configuration's values is taken as this host's and removed; one that says
    anything else is kept."""
    ours = {"pid": 4242, "priority": True, "execution_time": 20_000_000}
    theirs = {"pid": 4243, "priority": True, "execution_time": 7}
    state = env.tmp / "state"
    state.mkdir()
    (state / "owned.json").write_text(json.dumps({"api_url": env.api.url,
                                                  "pids": [4242, 4243]}))
    env.api.strategies = [ours, theirs]
    env.start(strategy={"mode": "merge"})
    env.api.wait_for(lambda: env.api.strategies == [theirs])


def test_merge_mode_removes_what_an_earlier_version_left_behind_for_a_url_typed_in_upper_case(
        env: Env) -> None:
    """Earlier versions kept api.url as typed, and their owned.json says
    'HTTP://127.0.0.1:P'; this version takes the same setting as 'http://127.0.0.1:P',
    and the file was ignored as
    another server's: after the upgrade the entry of a gNB that exited while the
    service was down stayed on the API for good."""
    typed = env.api.url.replace("http://", "HTTP://")
    ours = {"pid": 4242, "priority": True, "execution_time": 20_000_000}
    theirs = {"pid": 4243, "priority": True, "execution_time": 7}
    state = env.tmp / "state"
    state.mkdir()
    (state / "owned.json").write_text(json.dumps({
        "api_url": typed, "pids": [4242],
        "strategies": [{"pid": 4242, "priority": True, "execution_time": 20_000_000}]}))
    env.api.strategies = [ours, theirs]
    env.start(api={"url": typed}, strategy={"mode": "merge"})
    env.api.wait_for(lambda: env.api.strategies == [theirs], 30)



def test_merge_mode_leaves_the_entries_an_owned_file_from_another_machine_names(
        env: Env) -> None:
    """Hosts cloned from one image with its state directory: owned.json names the PIDs
    the image's host pushed, and a clone removed those entries from the list (another
    host's, on a v0 API they share).  A file written on another machine proves
    nothing here, and the log says which file and what to do."""
    theirs = {"pid": 4242, "priority": True, "execution_time": 20_000_000}
    state = env.tmp / "state"
    state.mkdir()
    (state / "owned.json").write_text(json.dumps({
        "api_url": env.api.url, "machine": "0123456789abcdef0123456789abcdef",
        "pids": [4242], "strategies": [theirs]}))
    env.api.strategies = [theirs]
    posts = len(env.api.posts())
    d = env.start(strategy={"mode": "merge"})
    wait_until(lambda: len(env.api.posts()) > posts, 30, "the first push")
    assert env.api.strategies == [theirs]
    assert f"ignoring {state / 'owned.json'}: it was written on another machine" in d.log()

# --- a delete answered with success that was not done ----------------------------------------

DONE = (200, b'{"success":true,"data":{},"timestamp":"2026-08-17T00:00:00Z"}')
MANAGER_DELETE = ("DELETE", "/api/v1/node-scheduling-policies")
DM_DELETE = ("DELETE", "/api/v1/node-intents")
NOT_CLEARED = "could not clear this host's strategies on stop (within the stop's 1.5 s): "


def test_a_manager_delete_answered_200_but_not_done_is_retried_not_orphaned(
        env: Env, manager: FakeManager, gnb: Callable[..., GnbProcess]) -> None:
    """The Manager answers the DELETE of our policy with success but still lists it: the
    proof used to be dropped at once, and the policy was never removed (nor found again:
    "nothing to remove").  The list is read after the DELETE; until it no longer holds
    the policy the proof stays and the DELETE is tried again."""
    d = start_manager(env, manager)
    g = gnb(threads=())
    env.writer.write(lines(g))
    manager.wait_for(lambda: regex_is(manager, "^(?:nr-gnb)$"), 30)
    created = my_policies(manager)[0]["id"]
    manager.answers[MANAGER_DELETE] = DONE
    g.stop()
    manager.wait_for(lambda: manager.answered.get(MANAGER_DELETE, 0) >= 1, 30)
    del manager.answers[MANAGER_DELETE]  # the Manager deletes again
    manager.wait_for(lambda: my_policies(manager) == [], 30)
    assert f"still lists policy {created}" in d.log() and d.proc.poll() is None


def test_a_manager_delete_not_done_at_stop_is_said_not_called_done(
        env: Env, manager: FakeManager, gnb: Callable[..., GnbProcess]) -> None:
    """clear_on_stop: the log said "clear_on_stop done" while the policy stayed."""
    d = start_manager(env, manager, strategy={"clear_on_stop": True})
    g = gnb(threads=())
    env.writer.write(lines(g))
    manager.wait_for(lambda: regex_is(manager, "^(?:nr-gnb)$"), 30)
    created = my_policies(manager)[0]["id"]
    d.wait_log(f"policy {created} created", timeout=10)
    manager.answers[MANAGER_DELETE] = DONE
    assert d.stop() == 0
    assert [p["id"] for p in my_policies(manager)] == [created]
    said = [ln for ln in d.log().splitlines() if NOT_CLEARED in ln]
    assert len(said) == 1 and f"{manager.url} " in said[0] and created in said[0], d.log()
    assert "clear_on_stop done" not in d.log()
    proof = json.loads((env.tmp / "state" / "manager-policy.json").read_text())
    assert proof["object_id"] == created  # the next start still knows it as ours


@pytest.mark.parametrize("flavor", ["manager", "decision-maker"])
def test_a_failed_clear_on_stop_says_what_is_left_and_where(
        env: Env, keys: Dict[str, Path], gnb: Callable[..., GnbProcess], flavor: str) -> None:
    """A DELETE refused at stop (clear_on_stop) was logged with the request only: which
    policy (or rule) of this host stayed, on which server, was not said."""
    refused = (500, b'{"success":false,"error":"Internal Server Error"}')
    g = gnb(threads=())
    server: Any
    if flavor == "manager":
        server = manager_for(keys)
        d = start_manager(env, server, strategy={"clear_on_stop": True})
        env.writer.write(lines(g))
        server.wait_for(lambda: regex_is(server, "^(?:nr-gnb)$"), 30)
        created = my_policies(server)[0]["id"]
        d.wait_log(f"policy {created} created", timeout=10)
        server.answers[MANAGER_DELETE] = refused
        left = (f"left behind: policy {created} for node {NODE} saying ^(?:nr-gnb)$, of user "
                f"'operator' on the Manager at {server.url}")
    else:
        server = FakeDecisionMaker(keys["private"].read_bytes()).start()
        d = start_dm(env, server, strategy={"clear_on_stop": True})
        env.writer.write(lines(g))
        server.wait_for(lambda: server.rules() == [rule("^(?:nr-gnb)$")], 30)
        server.answers[DM_DELETE] = refused
        left = (f"left behind: rule {POLICY} saying ^(?:nr-gnb)$ on the Decision Maker at "
                f"{server.url}")
    try:
        assert d.stop() == 0
        said = [ln for ln in d.log().splitlines() if NOT_CLEARED in ln]
        assert len(said) == 1 and said[0].endswith(left), d.log()
    finally:
        server.stop()


def test_a_decision_maker_delete_answered_200_but_not_done_keeps_the_rule_ours(
        env: Env, dm: FakeDecisionMaker, gnb: Callable[..., GnbProcess]) -> None:
    """The DM answers the DELETE of our rule with success but still holds it: the proof
    used to be dropped, after which our own rule looked foreign (an ERROR, and nothing
    written again).  The merkle root is read after the DELETE: while it is still our
    rule's, the proof stays and the DELETE is tried again."""
    d = start_dm(env, dm)
    g = gnb(threads=())
    env.writer.write(lines(g))
    dm.wait_for(lambda: dm.rules() == [rule("^(?:nr-gnb)$")], 30)
    dm.answers[DM_DELETE] = DONE
    g.stop()
    dm.wait_for(lambda: dm.answered.get(DM_DELETE, 0) >= 1, 30)
    del dm.answers[DM_DELETE]
    dm.wait_for(lambda: dm.rules() == [], 30)
    assert f"still holds rule {POLICY}" in d.log()
    h = gnb(threads=())
    env.writer.write(lines(h))
    dm.wait_for(lambda: dm.rules() == [rule("^(?:nr-gnb)$")], 30)
    assert "not this host's" not in d.log()


def test_a_decision_maker_delete_not_done_at_stop_keeps_the_proof(
        env: Env, dm: FakeDecisionMaker, gnb: Callable[..., GnbProcess]) -> None:
    """clear_on_stop: the proof was removed and "clear_on_stop done" said while the rule
    stayed; the next start then took its own rule for someone else's."""
    d = start_dm(env, dm, strategy={"clear_on_stop": True})
    g = gnb(threads=())
    env.writer.write(lines(g))
    dm.wait_for(lambda: dm.rules() == [rule("^(?:nr-gnb)$")], 30)
    dm.answers[DM_DELETE] = DONE
    assert d.stop() == 0
    assert dm.rules() == [rule("^(?:nr-gnb)$")]
    said = [ln for ln in d.log().splitlines() if NOT_CLEARED in ln]
    assert len(said) == 1 and f"{dm.url} " in said[0] and POLICY in said[0], d.log()
    del dm.answers[DM_DELETE]
    env.writer.close()
    d = start_dm(env, dm)
    dm.wait_for(lambda: dm.rules() == [], 30)  # no target: ours, removed
    assert "not this host's" not in d.log()


# --- a state directory cloned with a golden image --------------------------------------------


@pytest.mark.parametrize("then", ["no gNB", "another gNB"])
def test_a_proof_copied_from_another_machine_leaves_that_hosts_policy_alone(
        manager: FakeManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, then: str) -> None:
    """Host B cloned from host A's image: same host name (so the same node name) and A's
    state directory.  B took A's proof for its own: with no gNB yet it deleted A's
    policy, with a gNB of other threads it rewrote it (and A, finding its policy
    changed, created another).  B's machine-id differs: A's proof is ignored, said."""
    from gtp5g_operator.gthulhu import ownership

    machine = tmp_path / "machine-id"
    monkeypatch.setattr(ownership, "MACHINE_ID", str(machine), raising=False)
    machine.write_text("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n")
    a = manager_writer(manager, tmp_path / "a")
    a.write([ProcessView(100, "nr-gnb", "", 0, 0.0, (100,),
                         frozenset(("nr-gnb", "gnb worker")))], time.monotonic() + 5)
    before = my_policies(manager)
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # the image
    machine.write_text("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n")  # host B
    b = manager_writer(manager, tmp_path / "b")
    gnb = [] if then == "no gNB" else [
        ProcessView(200, "nr-gnb", "", 0, 0.0, (200,), frozenset(("nr-gnb",)))]
    b.write(gnb, time.monotonic() + 5)
    assert [p for p in my_policies(manager) if p["id"] == before[0]["id"]] == before
    assert not manager.requests("DELETE", "/api/v1/node-scheduling-policies")
    assert not manager.requests(*PUT)
    assert (f"ignoring {tmp_path / 'b' / 'manager-policy.json'}: it was written on another "
            "machine") in caplog.text
    a.close()
    b.close()


def test_two_hosts_taking_turns_on_one_policy_are_told_to_set_api_node_name(
        manager: FakeManager, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Two hosts with one node name (clones of one image: one host name) and gNBs of the
    same threads write the same policy: B adopts A's, deletes it when its gNB goes, and
    A creates it again, for as long as both run.  A policy saying exactly what a host
    writes is that host's to adopt (its proof lost), so nothing can refuse this; but
    A said only "is gone from the Manager" at INFO, never why, nor what to change."""
    gnb = [ProcessView(100, "nr-gnb", "", 0, 0.0, (100,), frozenset(("nr-gnb",)))]
    a, b = manager_writer(manager, tmp_path / "a"), manager_writer(manager, tmp_path / "b")
    a.write(gnb, time.monotonic() + 5)
    ours = my_policies(manager)[0]["id"]
    b.write(gnb, time.monotonic() + 5)
    b.write([], time.monotonic() + 5)  # B's gNB gone: "its" policy deleted
    caplog.clear()
    a.write(gnb, time.monotonic() + 5)
    said = [r for r in caplog.records if r.levelno == logging.WARNING and ours in r.getMessage()]
    assert len(said) == 1 and "give each its own api.node_name" in said[0].getMessage()
    a.close()
    b.close()


# --- a proof about another place ---------------------------------------------------------------


def test_a_proof_about_another_node_says_what_it_leaves_behind(
        env: Env, keys: Dict[str, Path], gnb: Callable[..., GnbProcess]) -> None:
    """api.node_name corrected (or the host renamed) between two runs: the proof names
    node-a's policy, the service now writes for node-b.  It is not node-b's to touch
    and is left alone; but the proof was ignored without a word, so the policy stayed
    on the Manager boosting node-a's gNB names for good and no one was told.  The
    journal names it and the file, as a reload that moves says what it leaves."""
    m = FakeManager({"operator": {"password": PASSWORD}}, {NODE, "node-b"},
                    keys["private"].read_bytes()).start()
    try:
        d = start_manager(env, m)
        g = gnb(threads=())
        env.writer.write(lines(g))
        m.wait_for(lambda: len(m.policies()) == 1, 10)
        left = m.policies()[0]
        d.wait_log(f"policy {left['id']} created")  # its id is in the proof
        assert d.stop() == 0
        env.writer.close()
        g.stop()
        d = start_manager(env, m, api={"node_name": "node-b"})
        d.wait_log("nothing to remove", timeout=30)  # the first push ran: no target
        assert m.policies() == [left]  # not node-b's: left alone
        d.wait_log("left behind")
        said = [line for line in d.log().splitlines() if "left behind" in line]
        assert len(said) == 1 and "WARNING" in said[0], said
        assert all(w in said[0] for w in ("manager-policy.json", left["id"], NODE,
                                          "^(?:nr-gnb)$")), said
        assert d.stop() == 0
    finally:
        m.stop()


def rule_written_then_gnb_gone(env: Env, dm: FakeDecisionMaker,
                               gnb: Callable[..., GnbProcess]) -> None:
    """A run writes the gNB's rule and stops; the gNB exits while the service is down."""
    d = start_dm(env, dm)
    g = gnb(threads=())
    env.writer.write(lines(g))
    dm.wait_for(lambda: dm.rules() == [rule("^(?:nr-gnb)$")], 30)
    assert d.stop() == 0
    env.writer.close()
    g.stop()


def test_a_decision_makers_rule_written_for_the_node_name_before_is_removed(
        env: Env, dm: FakeDecisionMaker, gnb: Callable[..., GnbProcess]) -> None:
    """api.node_name changed between two runs, the gNB gone: the DM (this node's) holds
    the rule this host wrote under its old policy id, alone — provably this host's
    (the proof names it, the merkle root is its hash).  The clear looked only for the
    new node's policy id: it said "no rule of this host is known" and left the old
    rule boosting the gNB's names on this node for good."""
    rule_written_then_gnb_gone(env, dm, gnb)
    d = start_dm(env, dm, api={"node_name": "node-b"})
    dm.wait_for(lambda: dm.rules() == [], 30)
    assert [r.body for r in dm.deletes()] == [{"policyId": POLICY}]
    assert "no rule of this host is known" not in d.log()
    assert d.stop() == 0


def test_a_decision_maker_rule_a_run_before_left_is_removed_saying_so(
        env: Env, dm: FakeDecisionMaker, gnb: Callable[..., GnbProcess]) -> None:
    """The gNB exits while the service is down: at the next start the rule the run
    before wrote is deleted, as it should be, but the journal said nothing of it (a
    Manager's policy is said removed).  A server object deleted is said."""
    rule_written_then_gnb_gone(env, dm, gnb)
    d = start_dm(env, dm)
    dm.wait_for(lambda: dm.rules() == [], 30)
    d.wait_log(f"rule {POLICY} removed")
    assert d.stop() == 0


def test_a_stop_before_the_server_is_reached_names_what_a_run_before_left(
        env: Env, keys: Dict[str, Path], gnb: Callable[..., GnbProcess]) -> None:
    """api.flavor = auto (the default), clear_on_stop: the service is killed with its
    policy on the Manager, the gNB exits, the Manager is down through the next run,
    which is stopped.  The clear cannot reach it, and the journal said "left behind:
    nothing written yet at <url>" — while the state directory named the policy."""
    m = manager_for(keys)
    try:
        d = start_manager(env, m, strategy={"clear_on_stop": True})
        g = gnb(threads=())
        env.writer.write(lines(g))
        m.wait_for(lambda: len(m.policies()) == 1, 10)
        left = m.policies()[0]
        d.wait_log(f"policy {left['id']} created")
        d.proc.kill()
        d.proc.wait()
        env.writer.close()
        g.stop()
    finally:
        m.stop()
    d = start_manager(env, m, strategy={"clear_on_stop": True})
    d.wait_log("push failed", timeout=30)
    assert d.stop() == 0
    said = [ln for ln in d.log().splitlines() if "left behind" in ln]
    assert len(said) == 1 and all(w in said[0] for w in (
        m.url, str(env.tmp / "state" / POLICY_FILE), left["id"], "^(?:nr-gnb)$")), said
