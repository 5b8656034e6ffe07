"""The 2026 Gthulhu flavors, with the real daemon: a Decision Maker and a Manager.

The fakes (testbed/fake_decision_maker.py, fake_manager.py) are strict like the
real servers and the Decision Maker resolves rules against this machine's real
/proc, so these tests check what the scheduler would read.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

from testbed.fake_decision_maker import FakeDecisionMaker
from testbed.fake_manager import DEFAULT_PERMISSIONS, PERM_NODE_POLICY_CREATE, FakeManager
from testbed.harness import SYSTEM_PYTHON, GnbProcess, wait_until
from testbed.tracelines import gtp5g_line
from tests.conftest import Env

NODE = "node-a"
POLICY = f"gtp5g-operator@{NODE}"
PASSWORD = "s3cret-Passw0rd"


@pytest.fixture
def dm(keys: Dict[str, Path]) -> Iterator[FakeDecisionMaker]:
    server = FakeDecisionMaker(keys["private"].read_bytes()).start()
    yield server
    server.stop()


def start_dm(env: Env, dm: FakeDecisionMaker, **overrides: Any) -> Any:
    api = {"url": dm.url, "node_name": NODE, **overrides.pop("api", {})}
    strategy = {"resync_interval": 1.5, **overrides.pop("strategy", {})}
    return env.start(api=api, strategy=strategy, **overrides)


def lines(g: GnbProcess, *names: str) -> str:
    """Trace lines of the main thread and of the named threads."""
    tids = [g.pid] + [g.threads[n] for n in names]
    return "".join(gtp5g_line("nr-gnb", t, g.pid) for t in tids)


def rule(regex: str, node: str = NODE) -> Dict[str, Any]:
    return {"policyID": f"gtp5g-operator@{node}", "nodeID": node, "commandRegex": regex,
            "priority": 1, "executionTime": 20_000_000}


# --- the Decision Maker ------------------------------------------------------------------


def test_a_decision_maker_whose_merkle_route_fails_is_not_taken_for_v0(
        env: Env, dm: FakeDecisionMaker, gnb: Callable[..., GnbProcess]) -> None:
    """A 5xx from the merkle route says nothing of the flavor (a DM's database down): the
    detection fails and is tried again, instead of speaking v0 to a Decision Maker."""
    dm.fault, dm.fault_paths = "500", ("/api/v1/node-intents/merkle",)
    d = start_dm(env, dm)
    d.wait_log("push failed: http-5xx: ")
    dm.fault = None
    d.wait_log("is a Gthulhu Decision Maker (api.flavor = auto)")
    g = gnb(threads=())
    env.writer.write(lines(g))
    dm.wait_for(lambda: dm.rules() == [rule("^(?:nr-gnb)$")], 5)
    assert "is a Gthulhu 2025 API (v0)" not in d.log()
    assert not dm.requests("POST", "/api/v1/scheduling/strategies")



def test_a_throttled_merkle_route_is_not_taken_for_v0_and_its_retry_after_is_honoured(
        env: Env, dm: FakeDecisionMaker) -> None:
    """A 429 (a rate-limiting proxy) or 503 during detection says nothing of the flavor
    either: the Decision Maker was taken for v0 on a 429, and the Retry-After of either
    was dropped (detection asked for the status only): tried again after our backoff."""
    merkle = "/api/v1/node-intents/merkle"
    dm.status_headers[429] = [("Retry-After", "1")]
    dm.fault, dm.fault_paths = "429", (merkle,)
    d = start_dm(env, dm, strategy={"resync_interval": 4.0})
    wait_until(lambda: len(dm.requests("GET", merkle)) >= 4, 30, "four detections")
    assert "is a Gthulhu 2025 API (v0)" not in d.log()
    tries = [r.at for r in dm.requests("GET", merkle)]
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    assert min(gaps) >= 1.0, f"detections {gaps} s apart: Retry-After: 1 not honoured"
    dm.fault = None
    d.wait_log("is a Gthulhu Decision Maker (api.flavor = auto)")


@pytest.mark.parametrize("since", ["start", "a push"])
def test_a_decision_maker_timing_out_logs_no_token_line_per_retry(
        env: Env, dm: FakeDecisionMaker, gnb: Callable[..., GnbProcess], since: str) -> None:
    """After a timeout the flavor is detected again, and detecting gets a new token
    from the token route, which still answers: one per retry, each of which said
    'got an API token' at INFO.  Only the failure is said; the tokens at DEBUG.
    Also when the very first detection times out after its token (a DM hung at the
    operator's start, or a loaded host where the 0.4 s went by): each retry's token
    was INFO again, the failed detection's login forgotten."""
    if since == "start":
        dm.fault, dm.fault_paths = "hang", ("/api/v1/node-intents",)
    d = start_dm(env, dm, api={"timeout": 0.4}, strategy={"resync_interval": 0.5},
                 log={"level": "info"})
    g = gnb(threads=())
    env.writer.write(lines(g))
    mark = 0
    if since == "a push":
        dm.wait_for(lambda: dm.rules() == [rule("^(?:nr-gnb)$")], 10)
        env.wait_pushed(1)
        mark = len(d.log())  # from here on one failure line (a loaded host may have
        # timed out a push before)
        dm.fault, dm.fault_paths = "hang", ("/api/v1/node-intents",)
    wait_until(lambda: len(dm.requests("POST", "/api/v1/auth/token")) >= 6, 30,
               "five retries, each detecting the flavor again with a new token")
    dm.fault = None
    wait_until(lambda: "API reachable again" in d.log()[mark:], 20, "a push that succeeds")
    env.wait_pushed(1)
    # every token the server issued is counted, those of the detections that failed too
    state = json.loads((env.tmp / "run" / "state.json").read_text())
    assert state["api"]["credentials_obtained"] == len(
        dm.requests("POST", "/api/v1/auth/token")), state["api"]
    log = d.stop() is not None and d.log()
    assert log and log.count("got an API token") == 1, log
    assert log[mark:].count("push failed: timeout") == 1, log


def test_a_flavor_the_configuration_does_not_suit_is_one_error_not_two_lines_a_retry(
        env: Env, dm: FakeDecisionMaker) -> None:
    """Merge mode passes the load with api.flavor = "auto"; a Decision Maker found then
    cannot take it.  The ERROR is said once, but each retry also said its new token and
    "the server ... is a Gthulhu Decision Maker" at INFO: two lines every resync_interval
    for as long as the configuration stays."""
    d = start_dm(env, dm, strategy={"mode": "merge"}, log={"level": "info"})
    wait_until(lambda: len(dm.requests("POST", "/api/v1/auth/token")) >= 4, 30,
               "three retries after the first detection")
    log = d.log()
    assert log.count('push failed: wrong-flavor: the server is a Gthulhu Decision Maker, '
                     'which this configuration does not suit: strategy.mode: "merge"') == 1, log
    assert log.count("got an API token") == 1, log
    assert "is a Gthulhu Decision Maker (api.flavor = auto)" not in log, log
    assert not dm.posts()


def test_auto_detects_a_decision_maker_and_the_rule_follows_the_tracked_names(
        env: Env, dm: FakeDecisionMaker, gnb: Callable[..., GnbProcess]) -> None:
    d = start_dm(env, dm)
    d.wait_log("is a Gthulhu Decision Maker (api.flavor = auto)")
    d.wait_log("pushed 0 entries")  # the first push: no rule of ours is proven, none deleted
    assert not dm.deletes()
    g = gnb(threads=("nr-gnb-rlc", "gnb worker"))
    env.writer.write(lines(g))
    dm.wait_for(lambda: dm.rules() == [rule("^(?:nr-gnb)$")], 5)
    # the scheduler's view: the live nr-gnb process, resolved by the DM from /proc
    assert g.pid in [s["pid"] for s in dm.strategies()]
    posts = len(dm.posts())
    env.writer.write(lines(g, "gnb worker"))  # a thread with another name is seen
    dm.wait_for(lambda: dm.rules() == [rule("^(?:gnb worker|nr-gnb)$")], 5)
    env.writer.write(lines(g, "gnb worker"))  # only known tasks: the rule stays as it is
    time.sleep(0.5)
    assert len(dm.posts()) == posts + 1
    g.stop()
    dm.wait_for(lambda: dm.rules() == [], 5)  # no target left: the rule is removed
    state = json.loads((env.tmp / "run" / "state.json").read_text())
    assert state["api"]["flavor"] == "decision-maker" and state["api"]["policy_id"] == POLICY


def test_thread_names_reach_a_decision_maker_that_matches_threads(
        env: Env, keys: Dict[str, Path], gnb: Callable[..., GnbProcess]) -> None:
    dm = FakeDecisionMaker(keys["private"].read_bytes(), match_threads=True).start()
    try:
        start_dm(env, dm, api={"flavor": "decision-maker"})
        g = gnb(threads=("nr-gnb-rlc", "gnb worker"))
        env.writer.write(lines(g, "nr-gnb-rlc"))
        dm.wait_for(lambda: dm.rules() == [rule("^(?:nr-gnb|nr-gnb-rlc)$")], 5)
        seen = {s["pid"] for s in dm.strategies()}
        assert {g.pid, g.threads["nr-gnb-rlc"]} <= seen
        assert g.threads["gnb worker"] not in seen  # never seen in the trace: not named
    finally:
        dm.stop()


def test_a_restarted_decision_maker_gets_the_rule_back_and_an_intact_one_is_not_rewritten(
        env: Env, dm: FakeDecisionMaker, gnb: Callable[..., GnbProcess]) -> None:
    start_dm(env, dm)
    g = gnb(threads=())
    env.writer.write(lines(g))
    dm.wait_for(lambda: dm.rules() == [rule("^(?:nr-gnb)$")], 5)
    posts = len(dm.posts())
    merkle_before = len(dm.requests("GET", "/api/v1/node-intents/merkle"))
    # two resyncs (resync_interval 1.5 s, counted from the end of a push): checked, not
    # rewritten.  Waited for: a fixed 3.2 s left 0.2 s for two pushes on a loaded host
    dm.wait_for(lambda: len(dm.requests("GET", "/api/v1/node-intents/merkle"))
                >= merkle_before + 2, 20)
    assert len(dm.posts()) == posts
    dm.restart()  # rules are in memory only
    assert dm.rules() == []
    dm.wait_for(lambda: dm.rules() == [rule("^(?:nr-gnb)$")], 3)


def judged_leaders_only(env: Env, pid: int) -> bool:
    """Has state.json's read-back covered `pid` and found the leaders-only scan (the
    leader covered, its thread missing)?  Not read from the diagnosis: on a kernel
    without sched_ext that says so first."""
    try:
        boost = json.loads((env.tmp / "run" / "state.json").read_text())["boost"]
        return boost["covered"] == [pid] and len(boost["missing"]) == 1
    except (OSError, ValueError, KeyError, TypeError):
        return False


def test_a_gnb_restarting_under_a_leaders_only_decision_maker_is_one_error_not_one_a_restart(
        env: Env, keys: Dict[str, Path], gnb: Callable[..., GnbProcess]) -> None:
    """Between two runs of the gNB nothing is tracked and the rule is removed: the
    read-back then showed no difference, which ended the episode, so the leaders-only
    ERROR (and a foreign task's WARNING) was logged again at every restart: a gNB
    restarting every few seconds put a line a restart into `journalctl -p err`."""
    leaders_only = FakeDecisionMaker(keys["private"].read_bytes(), match_threads=False).start()
    try:
        d = start_dm(env, leaders_only, log={"level": "info"})
        for _ in range(3):
            g = gnb(threads=("nr-gnb-rlc",))
            env.writer.write(lines(g, "nr-gnb-rlc"))
            wait_until(functools.partial(judged_leaders_only, env, g.pid), 20,
                       "a read-back of this run")
            g.stop()
            leaders_only.wait_for(lambda: leaders_only.rules() == [], 10)
        errors = [ln for ln in d.log().splitlines() if "matches thread-group leaders only" in ln]
        assert len(errors) == 1, errors
    finally:
        leaders_only.stop()


@pytest.mark.parametrize("running", ["auto", "decision-maker"])
def test_a_reload_to_merge_mode_on_a_decision_maker_found_by_auto_is_rejected(
        env: Env, dm: FakeDecisionMaker, gnb: Callable[..., GnbProcess], running: str) -> None:
    """With api.flavor = "auto" merge mode passes the load (a v0 server takes it): a
    reload to it once a Decision Maker was found (by "auto", or named by the running
    configuration) was accepted, the new writer refused to write, and the rule stayed on
    the DM for good: the gNB exited, its names were still boosted.  Rejected as with
    api.flavor = "decision-maker"; the rule goes on following the gNB."""
    d = start_dm(env, dm, api={"flavor": running})
    g = gnb(threads=())
    env.writer.write(lines(g))
    dm.wait_for(lambda: dm.rules() == [rule("^(?:nr-gnb)$")], 5)
    n = len(env.notify.all())
    env.write_config(api={"url": dm.url, "node_name": NODE, "flavor": "auto"},
                     strategy={"resync_interval": 1.5, "mode": "merge"})
    d.signal(signal.SIGHUP)
    env.notify.wait("READY", "1", after=n)
    d.wait_log('reload rejected, keeping the running configuration: the server at '
               f'{dm.url} is a Gthulhu Decision Maker (api.flavor = "auto"): strategy.mode: '
               '"merge" is for the v0 API only')
    g.stop()
    dm.wait_for(lambda: dm.rules() == [], 5)


def test_clear_on_stop_removes_the_rule(env: Env, dm: FakeDecisionMaker,
                                        gnb: Callable[..., GnbProcess]) -> None:
    d = start_dm(env, dm, strategy={"clear_on_stop": True})
    g = gnb(threads=())
    env.writer.write(lines(g))
    dm.wait_for(lambda: bool(dm.rules()), 5)
    assert d.stop() == 0
    assert dm.rules() == []


def test_the_node_name_defaults_to_the_host_name(env: Env, dm: FakeDecisionMaker,
                                                 gnb: Callable[..., GnbProcess]) -> None:
    env.start(api={"url": dm.url})
    g = gnb(threads=())
    env.writer.write(lines(g))
    host = socket.gethostname().split(".")[0].lower()
    dm.wait_for(lambda: dm.rules() == [rule("^(?:nr-gnb)$", host)], 5)


def test_a_flavor_that_does_not_match_the_server_is_said_and_retried(
        env: Env, dm: FakeDecisionMaker) -> None:
    d = env.start(api={"flavor": "v0", "url": dm.url})  # a DM is not the 2025 API
    d.wait_log("the server is not Gthulhu's 2025 API (v0)")
    env.config_path.unlink()
    # the v0 fake is not a DM; a second daemon beside the first needs its own directories
    d2 = env.start(env={"STATE_DIRECTORY": str(env.tmp / "state2"),
                        "RUNTIME_DIRECTORY": str(env.tmp / "run2")},
                   api={"flavor": "decision-maker"})
    d2.wait_log("the server is not a Gthulhu Decision Maker")
    time.sleep(1.5)
    for daemon in (d, d2):
        assert daemon.proc.poll() is None
        assert daemon.log().count("push failed:") == 1  # once, then backoff


@pytest.mark.parametrize("strategy,message", [
    ({"priority": False}, "strategy.priority: false would not boost anything"),
    ({"priority": 0}, "strategy.priority: 0 would not boost anything"),
    ({"priority": 21}, "strategy.priority: 21 is above 20, which the scheduler's kernel mode "
                       "(Gthulhu's Helm default) rejects: use 1 to 20"),
    ({"mode": "merge"}, 'strategy.mode: "merge" is for the v0 API only'),
])
def test_settings_the_new_flavors_cannot_honour_are_config_errors(
        env: Env, dm: FakeDecisionMaker, strategy: Dict[str, Any], message: str) -> None:
    d = start_dm(env, dm, api={"flavor": "decision-maker"}, strategy=strategy, ready=False)
    assert d.proc.wait(10) == 78
    assert message in d.log()


# --- the Manager ---------------------------------------------------------------------------


def manager_for(keys: Dict[str, Path], **user: Any) -> FakeManager:
    users = {"operator": {"password": PASSWORD, **user}}
    return FakeManager(users, {NODE}, keys["private"].read_bytes()).start()


@pytest.fixture
def manager(keys: Dict[str, Path]) -> Iterator[FakeManager]:
    server = manager_for(keys)
    yield server
    server.stop()


def password_file(env: Env, mode: int = 0o600) -> Path:
    path = env.tmp / "gthulhu-password"
    path.write_text(PASSWORD + "\n")
    path.chmod(mode)
    return path


def start_manager(env: Env, manager: FakeManager, **overrides: Any) -> Any:
    api = {"url": manager.url, "node_name": NODE, "username": "operator",
           "password_file": str(password_file(env)), **overrides.pop("api", {})}
    strategy = {"resync_interval": 1.5, **overrides.pop("strategy", {})}
    return env.start(api=api, strategy=strategy, **overrides)


def my_policies(manager: FakeManager) -> List[Dict[str, Any]]:
    return manager.policies("operator")


def regex_is(manager: FakeManager, regex: str) -> bool:
    mine = my_policies(manager)
    return len(mine) == 1 and mine[0]["commandRegex"] == regex


def test_auto_detects_a_manager_and_keeps_one_policy_per_host(
        env: Env, manager: FakeManager, gnb: Callable[..., GnbProcess]) -> None:
    d = start_manager(env, manager)
    d.wait_log("is a Gthulhu Manager (api.flavor = auto)")
    g = gnb(threads=("nr-gnb-rlc",))
    env.writer.write(lines(g))
    manager.wait_for(lambda: regex_is(manager, "^(?:nr-gnb)$"), 5)
    policy = my_policies(manager)[0]
    assert (policy["nodeNames"], policy["priority"], policy["executionTime"]) == (
        [NODE], 1, 20_000_000)
    env.writer.write(lines(g, "nr-gnb-rlc"))
    manager.wait_for(lambda: regex_is(manager, "^(?:nr-gnb|nr-gnb-rlc)$"), 5)
    assert my_policies(manager)[0]["id"] == policy["id"]  # updated in place (PUT)
    g.stop()
    manager.wait_for(lambda: my_policies(manager) == [], 5)


def test_a_restarted_operator_adopts_its_policy_instead_of_duplicating_it(
        env: Env, manager: FakeManager, gnb: Callable[..., GnbProcess]) -> None:
    d = start_manager(env, manager)
    g = gnb(threads=())
    env.writer.write(lines(g))
    manager.wait_for(lambda: regex_is(manager, "^(?:nr-gnb)$"), 5)
    first = my_policies(manager)[0]["id"]
    assert d.stop() == 0
    env.writer.close()
    start_manager(env, manager)
    env.writer.write(lines(g))
    time.sleep(2.5)  # a few resyncs
    assert [p["id"] for p in my_policies(manager)] == [first]
    assert len(manager.posts()) == 1


def test_short_lived_tokens_are_refreshed_and_a_failed_refresh_logs_in_again(
        env: Env, keys: Dict[str, Path], gnb: Callable[..., GnbProcess]) -> None:
    manager = FakeManager({"operator": {"password": PASSWORD}}, {NODE},
                          keys["private"].read_bytes(), access_token_lifetime=2.0).start()
    try:
        d = start_manager(env, manager)
        g = gnb(threads=())
        env.writer.write(lines(g))
        manager.wait_for(lambda: regex_is(manager, "^(?:nr-gnb)$"), 5)
        manager.wait_for(lambda: manager.requests("POST", "/api/v1/auth/refresh"), 5)
        logins = len(manager.requests("POST", "/api/v1/auth/login"))
        manager.revoke_sessions("operator")  # refresh tokens gone: log in again
        manager.wait_for(lambda: len(manager.requests("POST", "/api/v1/auth/login")) > logins,
                         5)
        d.wait_log("the Manager refused our refresh token: logging in again")
        g.stop()
        manager.wait_for(lambda: my_policies(manager) == [], 5)  # still writing
    finally:
        manager.stop()


def test_an_access_token_that_says_only_exp_is_renewed_before_it_expires(
        env: Env, keys: Dict[str, Path], gnb: Callable[..., GnbProcess]) -> None:
    """Without iat or nbf the lifetime is exp minus our clock (as for a token of our
    key), not a guess of ten minutes: every push would otherwise meet a 401."""
    manager = FakeManager({"operator": {"password": PASSWORD}}, {NODE},
                          keys["private"].read_bytes(), access_token_lifetime=2.0).start()
    manager.access_claims_omitted = {"iat", "nbf"}
    try:
        d = start_manager(env, manager, api={"timeout": 0.4}, strategy={"resync_interval": 0.5})
        g = gnb(threads=())
        env.writer.write(lines(g))
        manager.wait_for(lambda: regex_is(manager, "^(?:nr-gnb)$"), 5)
        manager.wait_for(lambda: len(manager.requests("POST", "/api/v1/auth/refresh")) >= 3, 10)
        assert "HTTP 401" not in d.log()
    finally:
        manager.stop()


def test_a_login_the_manager_refuses_shows_no_token(
        env: Env, manager: FakeManager, gnb: Callable[..., GnbProcess]) -> None:
    """Credentials the server refused are dropped, and `status` must say "token none"
    as it does for the other flavors: it said "token valid until" the dropped access
    token's expiry, a time already past, for as long as the login was refused."""
    start_manager(env, manager)
    g = gnb(threads=())
    env.writer.write(lines(g))
    manager.wait_for(lambda: regex_is(manager, "^(?:nr-gnb)$"), 5)
    wait_until(lambda: read_state(env).get("api", {}).get("token_expires_at"), 10,
               "state.json to show the access token's expiry")
    manager.reset_password("operator", "an admin's new one")
    manager.revoke_sessions("operator")  # the access and refresh tokens refused too
    wait_until(lambda: (read_state(env).get("last_push") or {}).get("error_kind")
               == "unauthorized", 10, "a push failing with the login refused")
    assert read_state(env)["api"]["token_expires_at"] is None


@pytest.mark.parametrize("user,message", [
    ({"must_change_password": True}, "requires user 'operator' to change its password"),
    ({"permissions": DEFAULT_PERMISSIONS - {PERM_NODE_POLICY_CREATE}},
     f"its role lacks the permission {PERM_NODE_POLICY_CREATE}"),
])
def test_forbidden_says_what_to_change(env: Env, keys: Dict[str, Path],
                                       gnb: Callable[..., GnbProcess], user: Dict[str, Any],
                                       message: str) -> None:
    manager = manager_for(keys, **user)
    try:
        d = start_manager(env, manager)
        g = gnb(threads=())
        env.writer.write(lines(g))
        d.wait_log(message)
        time.sleep(1.5)
        said = [ln for ln in d.log().splitlines() if "ERROR" in ln and message in ln]
        assert len(said) == 1 and d.proc.poll() is None  # once, then quiet retries
    finally:
        manager.stop()


def test_an_unknown_node_name_is_explained(env: Env, manager: FakeManager,
                                           gnb: Callable[..., GnbProcess]) -> None:
    d = start_manager(env, manager, api={"node_name": "not-a-node"})
    g = gnb(threads=())
    env.writer.write(lines(g))
    d.wait_log("api.node_name must be the node's Kubernetes name")


def test_the_password_comes_from_the_systemd_credential(
        env: Env, manager: FakeManager, gnb: Callable[..., GnbProcess]) -> None:
    creds = env.tmp / "credentials"
    creds.mkdir()
    password_file(env).rename(creds / "gthulhu-password")
    d = env.start(env={"CREDENTIALS_DIRECTORY": str(creds)},
                  api={"url": manager.url, "node_name": NODE, "username": "operator",
                       "flavor": "manager"})
    g = gnb(threads=())
    env.writer.write(lines(g))
    manager.wait_for(lambda: regex_is(manager, "^(?:nr-gnb)$"), 5)
    assert d.proc.poll() is None


def test_a_password_file_others_can_read_is_refused(env: Env,
                                                    manager: FakeManager) -> None:
    path = password_file(env, 0o644)
    d = env.start(api={"url": manager.url, "username": "operator", "flavor": "manager",
                       "password_file": str(path)}, ready=False)
    assert d.proc.wait(10) == 78
    assert "readable by other users" in d.log()


def test_no_password_or_token_in_logs_state_or_errors(
        env: Env, manager: FakeManager, gnb: Callable[..., GnbProcess]) -> None:
    d = start_manager(env, manager, log={"level": "debug"})
    g = gnb(threads=())
    env.writer.write(lines(g))
    manager.wait_for(lambda: regex_is(manager, "^(?:nr-gnb)$"), 5)
    d.signal(signal.SIGUSR1)  # the state, logged
    d.wait_log("state: api")
    manager.expire_access_tokens()  # a 401 and its retry
    g.stop()
    manager.wait_for(lambda: my_policies(manager) == [], 5)
    d.stop()
    tokens = [r.authorization.split(" ", 1)[-1] for r in manager.received if r.authorization]
    assert tokens
    texts = [d.log(), *(p.read_text() for p in (env.tmp / "run").glob("*") if p.is_file()),
             *(p.read_text() for p in (env.tmp / "state").glob("*") if p.is_file())]
    for text in texts:
        assert PASSWORD not in text
        for token in tokens:
            assert token not in text and token.split(".")[1] not in text


@pytest.mark.parametrize("status,pad", [(400, 0), (401, 0), (422, 138), (500, 138)])
def test_a_login_error_that_echoes_the_request_does_not_show_the_password(
        env: Env, manager: FakeManager, status: int, pad: int) -> None:
    """A Manager (or a proxy or firewall in front of it) that quotes the request in its
    error: its words are the error's, and the password reached the journal, the
    world-readable state.json and `status` (whole, or cut at the 200 characters shown:
    `pad` puts the first 8 there)."""
    echo = {"success": False, "error": "invalid request " + "x" * pad + json.dumps(
        {"username": "operator", "password": PASSWORD})}
    manager.answers[("POST", "/api/v1/auth/login")] = (status, json.dumps(echo).encode())
    d = start_manager(env, manager, api={"flavor": "manager"})  # (no probe, which sends {})
    wait_until(lambda: manager.answered.get(("POST", "/api/v1/auth/login"), 0) >= 2, 20,
               "two refused logins")
    d.wait_log("push failed: ")
    state = (env.tmp / "run" / "state.json").read_text()
    assert "invalid request" in state
    for text in (d.log(), state):
        assert PASSWORD not in text and PASSWORD[:6] not in text


def test_check_config_needs_a_password_for_the_manager(env: Env,
                                                       manager: FakeManager) -> None:
    env.write_config(api={"url": manager.url, "username": "operator", "flavor": "manager"})
    from tests.integration.test_cli_and_source import run_cli

    out = run_cli("check-config", "--config", str(env.config_path))
    assert out.returncode == 78
    assert "api.password_file: not set, and no systemd credential gthulhu-password" in out.stderr
    assert not os.environ.get("CREDENTIALS_DIRECTORY")


def read_state(env: Env) -> Dict[str, Any]:
    state = env.tmp / "run" / "state.json"
    return json.loads(state.read_text()) if state.exists() else {}  # type: ignore[no-any-return]


def test_the_manager_flavor_reads_back_from_the_nodes_decision_maker(
        env: Env, keys: Dict[str, Path], dm: FakeDecisionMaker,
        gnb: Callable[..., GnbProcess]) -> None:
    """The Manager resolves no PIDs: without api.decision_maker_url the boost is "not
    verified" (said once at start); with it, the node's Decision Maker — fed by the
    Manager — is read back and the gNB is covered."""
    manager = FakeManager({"operator": {"password": PASSWORD}}, {NODE},
                          keys["private"].read_bytes(), decision_makers={NODE: dm}).start()
    try:
        d = start_manager(env, manager)
        g = gnb(threads=())
        env.writer.write(lines(g))
        manager.wait_for(lambda: regex_is(manager, "^(?:nr-gnb)$"), 10)
        wait_until(lambda: "not verified" in read_state(env).get("boost", {}).get(
            "diagnosis", ""), 10, "the boost not verified")
        assert d.log().count("set api.decision_maker_url") == 1
        assert d.stop() == 0
        env.writer.close()
        d = start_manager(env, manager, api={"decision_maker_url": dm.url})
        env.writer.write(lines(g))
        wait_until(lambda: read_state(env).get("boost", {}).get("covered") == [g.pid], 10,
                   "the gNB covered, read back from the Decision Maker")
        boost = read_state(env)["boost"]
        assert boost["verified"] and boost["missing"] == [] and boost["source"] == (
            f"{dm.url}/api/v1/scheduling/strategies")
        assert "set api.decision_maker_url" not in d.log()
    finally:
        manager.stop()


def test_the_credentials_counter_never_goes_back_when_the_server_changes_flavor(
        env: Env, keys: Dict[str, Path], gnb: Callable[..., GnbProcess]) -> None:
    """gtp5g_operator_token_refreshes_total is a counter: with api.flavor = auto and a
    server replaced in place by another flavor (a v0 API by a Manager, the address
    kept), the credentials the old flavor obtained still count (rate() reads any
    decrease as a restart of the process)."""
    port = env.api.port
    state = env.tmp / "run" / "state.json"

    def obtained() -> int:
        try:
            return int(json.loads(state.read_text())["api"]["credentials_obtained"])
        except (OSError, ValueError, KeyError):
            return -1

    d = env.start(api={"node_name": NODE, "username": "operator",
                       "password_file": str(password_file(env))},
                  strategy={"resync_interval": 2.0})
    g = gnb(threads=())
    env.writer.write(lines(g))
    env.api.wait_post(lambda s: g.pid in {e.get("pid") for e in s})
    env.api.revoke_tokens()  # a second token from the v0 API
    wait_until(lambda: obtained() >= 2, 20, "two v0 tokens counted")
    env.api.stop()
    manager = FakeManager({"operator": {"password": PASSWORD}}, {NODE},
                          keys["private"].read_bytes(), port=port).start()
    try:
        seen = [obtained()]

        def counted() -> bool:  # the Manager's login, on top of the v0 tokens
            seen.append(obtained())
            return regex_is(manager, "^(?:nr-gnb)$") and seen[-1] >= 3

        try:
            wait_until(counted, 30, "the Manager's policy, its login counted")
        finally:
            print("credentials_obtained seen:", sorted(set(seen), key=seen.index))
        d.wait_log("is a Gthulhu Manager (api.flavor = auto)")
        assert seen == sorted(seen), sorted(set(seen), key=seen.index)  # never went back
    finally:
        manager.stop()


JOURNALD_LINE_MAX = 48 * 1024  # journald.conf's LineMax default


def test_no_journal_line_is_long_enough_for_journald_to_split_it(
        env: Env, dm: FakeDecisionMaker, gnb: Callable[..., GnbProcess]) -> None:
    """journald splits a line longer than its LineMax into entries of their own and reads
    a `<N>` priority at the start of each: what comes past 48 KiB of a line is an entry
    of whoever chose that text.  Any local user can run processes named like the gNB
    from paths of 4 KiB: the Decision Maker boosts them by name (foreign tasks), and
    SIGUSR1's `state: boost` line listed them all, paths and all, on one line."""
    name = "jgnb-" + os.urandom(4).hex()
    gnb_exe = os.path.realpath(sys.executable)
    real = gnb(name=name, threads=())
    copy = env.tmp / "python3"
    shutil.copy2(os.path.realpath(SYSTEM_PYTHON), copy)
    impostors = []
    for i in range(6):  # each path ~3,800 bytes of "é": ~11,500 characters of JSON
        where = env.tmp.joinpath(str(i), *["é" * 120] * 15)
        where.mkdir(parents=True)
        os.link(copy, where / "python3")
        impostors.append(gnb(name=name, threads=(), executable=str(where / "python3")))
    log = env.tmp / f"daemon{len(env.daemons)}.log"
    log.touch()  # the daemon's stderr: the harness opens it for writing, same inode
    st = log.stat()
    d = env.start(env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"},
                  api={"url": dm.url, "node_name": NODE, "flavor": "decision-maker"},
                  strategy={"resync_interval": 1.5}, match={"comm": [name], "exe": [gnb_exe]})
    env.writer.write(gtp5g_line(name, real.pid, real.pid))
    wait_until(lambda: {p.pid for p in impostors} <= {
        f["pid"] for f in json.loads((env.tmp / "run" / "state.json").read_text())
        .get("boost", {}).get("foreign", [])}, 20, "the impostors read back as foreign")
    d.signal(signal.SIGUSR1)
    d.wait_log("state: boost")
    d.wait_log("state: cpu_wait")
    lines = log.read_bytes().split(b"\n")
    assert all(line.startswith(b"<") for line in lines if line), lines[:3]
    longest = max(lines, key=len)
    assert len(longest) < JOURNALD_LINE_MAX, longest[:200]
