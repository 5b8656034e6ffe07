"""doctor's API checks against the test bed's real HTTP servers: the 2025 API (v0),
the Decision Maker in both of its scans and the Manager — right key, wrong key, a
hanging server, the wrong flavor, TLS — and what the scheduler will boost of live
targets that are real processes (threads named with prctl, an impostor of another
user).  Doctor only logs in and reads: no test server ever receives a write."""

from __future__ import annotations

import datetime
import json
import os
import pwd
import re
import secrets
import socket
import ssl
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, get_args

import pytest

from gtp5g_operator.commands.doctor.api import ADVICE_BY_KIND, ApiProbe, not_loaded
from gtp5g_operator.commands.doctor.model import FAIL, OK, WARN, Check
from gtp5g_operator.commands.doctor.targets import Target, find_targets
from gtp5g_operator.config import Config, MatchConfig
from gtp5g_operator.gthulhu.errors import ErrorKind
from gtp5g_operator.gthulhu.http import JsonHttp
from gtp5g_operator.service.vocabulary import load as load_config
from testbed.fake_decision_maker import FakeDecisionMaker
from testbed.fake_gthulhu import FakeGthulhu
from testbed.fake_manager import FakeManager
from testbed.harness import (
    ZOMBIE_LEADER_C,
    GnbProcess,
    ZombieLeaderGnb,
    build_c_program,
    wait_until,
    write_config,
)
from testbed.tls import make_ca_and_server_cert
from tests.conftest import base_config

NODE = "node-a"
NOBODY = pwd.getpwnam("nobody").pw_uid
PASSWORD = "s3cret-Passw0rd"
WRITES = ("POST /api/v1/scheduling/strategies", "POST /api/v1/node-intents",
          "DELETE /api/v1/node-intents", "POST /api/v1/node-scheduling-policies",
          "PUT /api/v1/node-scheduling-policies", "DELETE /api/v1/node-scheduling-policies")


def configure(tmp_path: Path, trace_pipe: Path, url: str, public_key: Path,
              **api: Any) -> Config:
    sections = base_config(trace_pipe, url, public_key, api={"node_name": NODE, **api})
    return load_config(str(write_config(tmp_path / "config.toml", **sections)))


@pytest.fixture
def name() -> str:
    """A process name of this test alone: other tests may run nr-gnb processes."""
    return "dgnb-" + secrets.token_hex(4)


@pytest.fixture
def live(name: str, gnb: Callable[..., GnbProcess]) -> Iterator[List[Target]]:
    g = gnb(name=name, threads=())
    found = find_targets("/proc", MatchConfig(comm=(name,)))
    assert [t.info.tgid for t in found] == [g.pid]
    yield found


def test_targets_are_the_live_tasks_the_service_would_track(
        name: str, gnb: Callable[..., GnbProcess], tmp_path: Path) -> None:
    """doctor judges liveness as the service does: a gNB that exited and is not yet
    reaped (a zombie) is no target, and a gNB whose main thread called
    pthread_exit() is one, with its live threads only."""
    dead = gnb(name=name, threads=("nr-gnb-rlc",))
    dead.proc.kill()  # never waited for: a zombie until the fixture reaps it
    wait_until(lambda: Path(f"/proc/{dead.pid}/stat").read_text().split(") ")[1][0] == "Z",
               5, f"{dead.pid} to be a zombie")
    binary = tmp_path / "gnb-zombie-leader"
    problem = build_c_program(ZOMBIE_LEADER_C, binary)
    if problem:
        pytest.skip(f"cannot build the pthread_exit() gNB: {problem}")
    leaderless = ZombieLeaderGnb(binary, workers=2, name=name)
    try:
        found = find_targets("/proc", MatchConfig(comm=(name,)))
        assert [t.info.tgid for t in found] == [leaderless.pid]
        assert set(found[0].tids) == set(leaderless.threads.values())
    finally:
        leaderless.stop()


def checks_of(config: Config, targets: Sequence[Target] = (),
              state: Optional[Dict[str, Any]] = None) -> Dict[str, Check]:
    return {c.name: c for c in ApiProbe(config, targets, state,
                                          str(Path(config.source).parent / "state")).run()}


def levels(checks: Dict[str, Check]) -> Dict[str, str]:
    return {name: c.level for name, c in checks.items()}


def writes(server: Any) -> List[str]:
    return [f"{r.method} {r.path}" for r in server.received if f"{r.method} {r.path}" in WRITES]


# --- the 2025 API (v0) --------------------------------------------------------------------


def test_v0_with_the_right_key(tmp_path: Path, trace_pipe: Path, api: FakeGthulhu,
                               keys: Dict[str, Path], live: List[Target]) -> None:
    pid = live[0].info.tgid
    api.strategies = [{"pid": pid, "priority": True, "execution_time": 20_000_000},
                      {"pid": 99999, "priority": True, "execution_time": 20_000_000}]
    checks = checks_of(configure(tmp_path, trace_pipe, api.url, keys["public"]), live)
    assert levels(checks) == {"api connection": OK, "api flavor": OK, "api token": OK,
                              "api strategies": OK, "boost": OK}
    assert checks["api connection"].saw == f"{api.url} answers"
    assert checks["api flavor"].saw == "the server is a Gthulhu 2025 API (v0); api.flavor = auto"
    token = checks["api token"].saw
    assert token.startswith(f"obtained with our public key {keys['public']} and verified")
    assert "valid 60 min" in token  # the server's real lifetime (3600 s), not an assumption
    assert checks["api strategies"].saw == "the server holds 2 strategies"
    assert checks["boost"].saw == ("all covered: the scheduler boosts all 1 gNB tasks (read "
                                   f"back from {api.url}/api/v1/scheduling/strategies)")
    assert writes(api) == []


def test_a_token_from_a_server_whose_clock_is_off_warns(
        tmp_path: Path, trace_pipe: Path, api: FakeGthulhu, keys: Dict[str, Path]) -> None:
    api.clock_skew = 600.0
    check = checks_of(configure(tmp_path, trace_pipe, api.url, keys["public"]))["api token"]
    assert check.level == WARN
    skew = re.search(r"the API host's clock is \+(\d+) s off ours$", check.saw)
    assert skew and 598 <= int(skew.group(1)) <= 601, check.saw  # iat is whole seconds
    assert check.advice == "check NTP on both hosts"


def test_v0_without_the_live_target(tmp_path: Path, trace_pipe: Path, api: FakeGthulhu,
                                    keys: Dict[str, Path], live: List[Target]) -> None:
    checks = checks_of(configure(tmp_path, trace_pipe, api.url, keys["public"]), live)
    assert checks["api strategies"].level == OK
    check = checks["boost"]
    assert check.level == WARN
    assert check.saw == (f"the scheduler boosts none of the 1 tasks of the live gNB: {api.url}"
                         "/api/v1/scheduling/strategies lists none of this host's IDs")
    assert "GTP-U traffic" in check.advice


def test_the_wrong_key_says_exactly_why(tmp_path: Path, trace_pipe: Path, api: FakeGthulhu,
                                        keys: Dict[str, Path]) -> None:
    checks = checks_of(configure(tmp_path, trace_pipe, api.url, keys["wrong_public"]))
    assert levels(checks) == {"api connection": OK, "api token": FAIL}  # and stops there
    assert checks["api token"].saw == (f"the server refused our public key "
                                       f"{keys['wrong_public']}: it is not the pair of the "
                                       "server's JWT private key")
    assert str(keys["wrong_public"]) in checks["api token"].advice


def test_a_hanging_server_costs_at_most_the_timeout(tmp_path: Path, trace_pipe: Path,
                                                    api: FakeGthulhu,
                                                    keys: Dict[str, Path]) -> None:
    api.fault = "hang"
    config = configure(tmp_path, trace_pipe, api.url, keys["public"], timeout=0.5)
    started = time.monotonic()
    checks = checks_of(config)
    took = time.monotonic() - started
    assert took < 2 * 0.5 + 0.3, took
    assert levels(checks) == {"api flavor": FAIL}  # connected, or not: the message says
    assert "no answer in time (" in checks["api flavor"].saw
    assert "(api.timeout 0.5 s)" in checks["api flavor"].saw
    assert "hung or overloaded" in checks["api flavor"].advice


def test_the_whole_section_is_capped_when_a_later_answer_hangs(
        tmp_path: Path, trace_pipe: Path, keys: Dict[str, Path]) -> None:
    dm = FakeDecisionMaker(keys["private"].read_bytes()).start()
    try:
        dm.fault, dm.fault_paths = "hang", ("/api/v1/scheduling",)  # only the strategies GET
        config = configure(tmp_path, trace_pipe, dm.url, keys["public"], timeout=0.5)
        started = time.monotonic()
        checks = checks_of(config)
        assert time.monotonic() - started < 2 * 0.5 + 0.3
    finally:
        dm.stop()
    assert levels(checks) == {"api connection": OK, "api flavor": OK, "api token": OK,
                              "api strategies": FAIL}
    assert "no answer in time" in checks["api strategies"].saw


def test_nothing_listening(tmp_path: Path, trace_pipe: Path, keys: Dict[str, Path]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    checks = checks_of(configure(tmp_path, trace_pipe, f"http://127.0.0.1:{port}",
                                 keys["public"]))
    assert levels(checks) == {"api connection": FAIL}  # in the daemon's words
    assert checks["api connection"].saw.startswith(f"cannot reach http://127.0.0.1:{port}")
    assert checks["api connection"].saw.endswith(": Connection refused")
    assert "is the API up at api.url" in checks["api connection"].advice


def test_a_host_name_is_resolved(tmp_path: Path, trace_pipe: Path, api: FakeGthulhu,
                                 keys: Dict[str, Path]) -> None:
    url = api.url.replace("127.0.0.1", "localhost")
    check = checks_of(configure(tmp_path, trace_pipe, url, keys["public"]))["api connection"]
    assert (check.level, check.saw) == (OK, f"{url} answers")


# --- TLS ----------------------------------------------------------------------------------


def test_tls_with_the_configured_ca(tmp_path: Path, trace_pipe: Path,
                                    tls_api: tuple[FakeGthulhu, Path],
                                    keys: Dict[str, Path]) -> None:
    server, ca = tls_api
    checks = checks_of(configure(tmp_path, trace_pipe, server.url, keys["public"],
                                 ca_file=str(ca)))
    assert checks["api connection"].level == OK
    assert checks["api connection"].saw.endswith(f"TLS verified with {ca}")
    assert checks["api token"].level == OK


def test_tls_with_a_ca_that_did_not_sign_it(tmp_path: Path, trace_pipe: Path,
                                            tls_api: tuple[FakeGthulhu, Path],
                                            keys: Dict[str, Path]) -> None:
    server, _ = tls_api
    checks = checks_of(configure(tmp_path, trace_pipe, server.url, keys["public"]))
    assert levels(checks) == {"api connection": FAIL}
    assert "CERTIFICATE_VERIFY_FAILED" in checks["api connection"].saw
    assert "api.ca_file" in checks["api connection"].advice
    assert server.tokens_issued == 0


@pytest.mark.parametrize("shift,dates", [(datetime.timedelta(days=2), "is not yet valid"),
                                         (datetime.timedelta(days=-3), "has expired")],
                         ids=["clock-behind", "clock-ahead"])
def test_a_certificate_out_of_its_dates_points_at_the_clock(
        tmp_path: Path, trace_pipe: Path, keys: Dict[str, Path], shift: datetime.timedelta,
        dates: str) -> None:
    """A certificate valid from two days on is what a host whose clock is two days behind
    sees (booted without an RTC, not yet synced); one that expired, a host ahead or a
    certificate not renewed.  The CA is the right one: doctor advised setting
    api.ca_file, and the daemon's ERROR gave OpenSSL's words only; both now say which
    clock judged the dates, and the advice is the clock, then the certificate."""
    paths = make_ca_and_server_cert(tmp_path, shift)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(paths["cert"], paths["key"])
    server = FakeGthulhu(keys["private"].read_bytes(), tls=ctx).start()
    try:
        checks = checks_of(configure(tmp_path, trace_pipe, server.url, keys["public"],
                                     ca_file=str(paths["ca"])))
    finally:
        server.stop()
    assert levels(checks) == {"api connection": FAIL}
    saw, advice = checks["api connection"].saw, checks["api connection"].advice
    assert f"certificate (or its CA's) {dates} by this host's clock (" in saw, saw
    assert "api.ca_file" not in advice and "clock" in advice, advice
    assert f"openssl s_client -connect 127.0.0.1:{server.port} " in advice, advice  # not HOST:PORT
    assert server.tokens_issued == 0


# --- flavors ------------------------------------------------------------------------------


@pytest.fixture
def dm(keys: Dict[str, Path]) -> Iterator[FakeDecisionMaker]:
    server = FakeDecisionMaker(keys["private"].read_bytes()).start()
    yield server
    server.stop()


def rule(regex: str) -> Dict[str, Any]:
    return {"policyID": f"gtp5g-operator@{NODE}", "nodeID": NODE, "commandRegex": regex,
            "priority": 1, "executionTime": 20_000_000}


@pytest.mark.parametrize("flavor,server,said", [
    ("v0", "dm", "Decision Maker"), ("decision-maker", "v0", "2025 API (v0)")])
def test_the_wrong_flavor_fails(tmp_path: Path, trace_pipe: Path, api: FakeGthulhu,
                                dm: FakeDecisionMaker, keys: Dict[str, Path], flavor: str,
                                server: str, said: str) -> None:
    url = dm.url if server == "dm" else api.url
    checks = checks_of(configure(tmp_path, trace_pipe, url, keys["public"], flavor=flavor))
    assert levels(checks) == {"api connection": OK, "api flavor": FAIL}
    assert checks["api flavor"].saw == (f"api.flavor = {flavor}, but the server at {url} "
                                        f"answers like a Gthulhu {said}")
    assert checks["api flavor"].advice.startswith("set api.flavor = ")


def test_a_decision_maker_holding_this_hosts_rule(tmp_path: Path, trace_pipe: Path,
                                                  dm: FakeDecisionMaker, keys: Dict[str, Path],
                                                  live: List[Target], name: str) -> None:
    regex = f"^(?:{name})$"
    dm.set_rules([rule(regex)])  # as the running service would have written it
    checks = checks_of(configure(tmp_path, trace_pipe, dm.url, keys["public"]), live,
                       state={"api": {"rule": regex}})
    assert levels(checks) == {"api connection": OK, "api flavor": OK, "api token": OK,
                              "api strategies": OK, "boost": OK}
    assert checks["api flavor"].saw == ("the server is a Gthulhu Decision Maker; "
                                        "api.flavor = auto")
    assert "valid 24 h 0 min" in checks["api token"].saw
    assert checks["api strategies"].saw == (
        "the Decision Maker resolves 1 strategy for the scheduler; it holds exactly the rule "
        "this service last wrote")
    assert checks["boost"].saw.startswith("all covered: the scheduler boosts all 1 gNB tasks")
    assert writes(dm) == []


def test_a_decision_maker_without_our_rule(tmp_path: Path, trace_pipe: Path,
                                           dm: FakeDecisionMaker, keys: Dict[str, Path],
                                           live: List[Target]) -> None:
    checks = checks_of(configure(tmp_path, trace_pipe, dm.url, keys["public"]), live)
    assert checks["api strategies"].level == WARN
    assert checks["api strategies"].saw == (
        "the Decision Maker resolves 0 strategies for the scheduler; it holds no node rule; "
        "no rule of this host while a gNB runs")
    assert checks["boost"].level == WARN
    assert checks["boost"].saw.startswith("the scheduler boosts none of the 1 tasks of the "
                                          "live gNB")


@pytest.fixture
def manager() -> Iterator[FakeManager]:
    server = FakeManager(users={"op": {"password": PASSWORD}}, nodes=[NODE]).start()
    yield server
    server.stop()


def manager_config(tmp_path: Path, trace_pipe: Path, url: str, keys: Dict[str, Path],
                   password: str = PASSWORD, **api: Any) -> Config:
    secret = tmp_path / "password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    return configure(tmp_path, trace_pipe, url, keys["public"], username="op",
                     password_file=str(secret), **api)


def create_policy(url: str, regex: str) -> None:
    http = JsonHttp(url, 2.0)
    try:
        deadline = time.monotonic() + 2.0
        login = http.request("POST", "/api/v1/auth/login",
                             {"username": "op", "password": PASSWORD}, deadline)
        token = login.body["data"]["accessToken"]
        answer = http.request("POST", "/api/v1/node-scheduling-policies",
                              {"nodeNames": [NODE], "commandRegex": regex, "priority": 1,
                               "executionTime": 20_000_000}, deadline, token)
        assert answer.status == 200, answer.body
    finally:
        http.close()


def policy_proof(tmp_path: Path, manager: FakeManager, object_id: str, regex: str,
                 **extra: str) -> Path:
    """The state directory with a manager-policy.json saying `object_id` holds `regex`."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "manager-policy.json").write_text(json.dumps(
        {"api_url": manager.url, "user": "op", "node": NODE, "object_id": object_id, **extra,
         "rule": {"policy_id": f"gtp5g-operator@{NODE}", "node": NODE, "command_regex": regex,
                  "priority": 1, "execution_time_ns": 20_000_000}}))
    return state


def test_a_manager_with_this_hosts_policy(tmp_path: Path, trace_pipe: Path,
                                          manager: FakeManager, keys: Dict[str, Path],
                                          live: List[Target], name: str) -> None:
    """The policy the service stored the id of is this host's: doctor judges that one,
    even when the user has other policies for the node listed before it."""
    manager.add_policy("op", [NODE], "^(?:someone-elses-job)$")  # listed first
    create_policy(manager.url, f"^(?:{name})$")
    ours = manager.policies("op")[-1]["id"]
    config = manager_config(tmp_path, trace_pipe, manager.url, keys)
    state = tmp_path / "state"
    state.mkdir()
    (state / "manager-policy.json").write_text(json.dumps(
        {"api_url": manager.url, "user": "op", "node": NODE, "policy_id": ours}))
    posts = len(manager.posts())
    checks = checks_of(config, live)
    assert levels(checks) == {"api connection": OK, "api flavor": OK, "api login": OK,
                              "api strategies": OK, "boost": WARN}
    assert checks["api flavor"].saw == "the server is a Gthulhu Manager; api.flavor = auto"
    assert checks["api login"].saw == ("logged in to the Gthulhu Manager as 'op'; access token "
                                       "valid 60 s")
    assert checks["api strategies"].saw == (
        f"policy {ours} for node {NODE} (this host's, by its stored id): ^(?:{name})$")
    # the Manager resolves no PIDs: without the node's Decision Maker nothing is verified
    assert checks["boost"].saw == ("what the scheduler boosts is not verified: the Manager "
                                   "does not resolve PIDs")
    assert checks["boost"].advice.startswith("set api.decision_maker_url to this node's "
                                             "Decision Maker")
    assert len(manager.posts()) == posts


def test_our_policy_someone_changed_is_not_called_ours(
        tmp_path: Path, trace_pipe: Path, manager: FakeManager, keys: Dict[str, Path],
        live: List[Target], name: str) -> None:
    """The stored id names a policy that now says what the service never wrote (someone
    edited it): doctor does not call it this host's, as the service no longer does."""
    create_policy(manager.url, "^(?:someone-elses-job)$")  # was ours, edited since
    edited = manager.policies("op")[-1]["id"]
    policy_proof(tmp_path, manager, edited, f"^(?:{name})$")
    check = checks_of(manager_config(tmp_path, trace_pipe, manager.url, keys),
                      live)["api strategies"]
    assert check.level == WARN
    assert check.saw.startswith(f"the Manager holds no policy of this host for node {NODE} "
                                "(1 policy of user 'op' in all)"), check.saw


def test_a_policy_of_the_user_for_this_node_is_not_taken_for_ours(
        tmp_path: Path, trace_pipe: Path, manager: FakeManager, keys: Dict[str, Path],
        live: List[Target], name: str) -> None:
    """Another host's (or a hand-made) policy for the node, even one that names our gNB:
    without the stored id or the rule the service wrote, it is not this host's."""
    create_policy(manager.url, f"^(?:{name})$")
    check = checks_of(manager_config(tmp_path, trace_pipe, manager.url, keys),
                      live)["api strategies"]
    assert check.level == WARN
    assert check.saw.startswith(f"the Manager holds no policy of this host for node {NODE} "
                                "(1 policy of user 'op' in all)")


def test_a_manager_without_a_policy_for_this_node(tmp_path: Path, trace_pipe: Path,
                                                  manager: FakeManager, keys: Dict[str, Path],
                                                  live: List[Target]) -> None:
    check = checks_of(manager_config(tmp_path, trace_pipe, manager.url, keys),
                      live)["api strategies"]
    assert check.level == WARN
    assert check.saw.startswith(f"the Manager holds no policy of this host for node {NODE} "
                                "(0 policies of user 'op' in all)")


def test_a_manager_refusing_the_login(tmp_path: Path, trace_pipe: Path, manager: FakeManager,
                                      keys: Dict[str, Path]) -> None:
    checks = checks_of(manager_config(tmp_path, trace_pipe, manager.url, keys, "wrong"))
    assert levels(checks) == {"api connection": OK, "api flavor": OK, "api login": FAIL}
    assert checks["api login"].saw.startswith("the Manager refused the login of api.username")


def test_an_invalid_configuration_is_not_taken_to_the_api() -> None:
    assert [(c.name, c.level) for c in not_loaded()] == [("api", WARN)]


# --- what the scheduler will boost: the read-back of every thread --------------------------


@pytest.fixture
def threaded(name: str, gnb: Callable[..., GnbProcess]) -> GnbProcess:
    """A gNB-like process with two threads of names no other test uses."""
    return gnb(name=name, threads=(f"{name}-r", f"{name}-w"))


def names_rule(*names: str) -> str:
    return f"^(?:{'|'.join(sorted(names))})$"


def doctor_of(tmp_path: Path, trace_pipe: Path, url: str, keys: Dict[str, Path], name: str,
              held: str, **match: Any) -> Dict[str, Check]:
    """Doctor with the live targets named `name` and a running service that last wrote
    the rule `held`."""
    sections = base_config(trace_pipe, url, keys["public"], api={"node_name": NODE},
                           match={"comm": [name], **match})
    config = load_config(str(write_config(tmp_path / "config.toml", **sections)))
    targets = find_targets("/proc", config.match)
    return checks_of(config, targets, state={"api": {"rule": held}})


@pytest.mark.parametrize("aware", [False, True], ids=["leaders only", "thread-aware"])
def test_a_leaders_only_decision_maker_fails(tmp_path: Path, trace_pipe: Path,
                                             keys: Dict[str, Path], threaded: GnbProcess,
                                             name: str, aware: bool) -> None:
    rule_ = names_rule(name, f"{name}-r", f"{name}-w")  # every thread was seen
    dm = FakeDecisionMaker(keys["private"].read_bytes(), match_threads=aware).start()
    try:
        dm.set_rules([rule(rule_)])
        checks = doctor_of(tmp_path, trace_pipe, dm.url, keys, name, rule_)
    finally:
        dm.stop()
    source = f"{dm.url}/api/v1/scheduling/strategies"
    if aware:
        assert (checks["boost"].level, checks["boost"].saw) == (
            OK, f"all covered: the scheduler boosts all 3 gNB tasks (read back from {source})")
        return
    assert checks["boost"].level == FAIL
    assert checks["boost"].saw == (
        "this Decision Maker matches thread-group leaders only: the scheduler boosts 1 of 3 "
        "gNB tasks; a Decision Maker with the thread-aware scan boosts all (read back from "
        f"{source})")
    assert checks["boost"].advice.startswith("run a Decision Maker with the thread-aware scan")
    assert writes(dm) == []


def test_threads_not_in_the_rule_are_missing(tmp_path: Path, trace_pipe: Path,
                                             keys: Dict[str, Path], threaded: GnbProcess,
                                             name: str) -> None:
    """The service wrote only the names it saw in the trace: the idle thread is not
    boosted, which doctor says (a warning: the service adds it once it carries traffic)."""
    rule_ = names_rule(name, f"{name}-r")
    dm = FakeDecisionMaker(keys["private"].read_bytes(), match_threads=True).start()
    try:
        dm.set_rules([rule(rule_)])
        check = doctor_of(tmp_path, trace_pipe, dm.url, keys, name, rule_)["boost"]
    finally:
        dm.stop()
    idle = threaded.threads[f"{name}-w"]
    assert check.level == WARN
    assert check.saw.startswith(f"the scheduler does not boost 1 of 3 gNB tasks (PIDs {idle}): "
                                "the server does not list them under this host's rule")
    assert check.advice.startswith("a thread that has not shown up in the trace")


def test_a_foreign_task_is_named(tmp_path: Path, trace_pipe: Path, keys: Dict[str, Path],
                                 gnb: Callable[..., GnbProcess], name: str) -> None:
    """Another user's process of the gNB's name: excluded by match.uid, yet boosted by
    the rule (the server matches names).  A warning naming it, not a failure: the gNB
    itself is boosted (module docstring of commands/doctor/boost.py)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to start a process as another user")
    gnb(name=name, threads=())
    impostor = gnb(name=name, threads=(), user=NOBODY)
    dm = FakeDecisionMaker(keys["private"].read_bytes()).start()
    try:
        dm.set_rules([rule(names_rule(name))])
        checks = doctor_of(tmp_path, trace_pipe, dm.url, keys, name, names_rule(name), uid=[0])
    finally:
        dm.stop()
    assert checks["boost"].level == WARN
    assert checks["boost"].saw.startswith(f"1 task(s) this host does not track are boosted by "
                                          f"its rule (PIDs {impostor.pid})")
    foreign = checks["foreign task"]
    assert (foreign.level, foreign.subject) == (WARN, str(impostor.pid))
    assert foreign.saw.startswith(f"boosted by our rule but not verified: PID {impostor.pid} "
                                  f"('{name}'), uid {NOBODY}, exe '")
    assert foreign.advice.startswith("the server matches names")


def test_a_manager_is_verified_through_the_nodes_decision_maker(
        tmp_path: Path, trace_pipe: Path, keys: Dict[str, Path], threaded: GnbProcess,
        name: str) -> None:
    dm = FakeDecisionMaker(keys["private"].read_bytes(), match_threads=True).start()
    manager = FakeManager(users={"op": {"password": PASSWORD}}, nodes=[NODE],
                          decision_makers={NODE: dm}).start()
    try:
        rule_ = names_rule(name, f"{name}-r", f"{name}-w")
        create_policy(manager.url, rule_)  # pushed on to the node's DM
        config = manager_config(tmp_path, trace_pipe, manager.url, keys,
                                decision_maker_url=dm.url)
        checks = checks_of(config, find_targets("/proc", MatchConfig(comm=(name,))),
                           state={"api": {"rule": rule_}})
    finally:
        manager.stop()
        dm.stop()
    assert checks["api strategies"].saw.endswith(f"(this host's, by what it says): {rule_}")
    assert (checks["boost"].level, checks["boost"].saw) == (
        OK, "all covered: the scheduler boosts all 3 gNB tasks (read back from "
            f"{dm.url}/api/v1/scheduling/strategies)")


@pytest.mark.parametrize("status,kind,words", [
    (429, "busy", "rate limit"), (408, "busy", "rate limit"),
    (404, "not-found", "api.url"), (400, "http-4xx", "strategy.")])
def test_each_kind_of_refusal_has_its_own_advice(
        tmp_path: Path, trace_pipe: Path, api: FakeGthulhu, keys: Dict[str, Path],
        status: int, kind: str, words: str) -> None:
    """A throttling server (or proxy), a missing route or object and a refused request
    had no advice of their own: "see the API server's log", which the person on call
    may not have, and which says nothing they can change here."""
    api.answers[("GET", "/api/v1/scheduling/strategies")] = (status, b'{"error": "no"}')
    checks = checks_of(configure(tmp_path, trace_pipe, api.url, keys["public"], flavor="v0"))
    check = checks["api strategies"]
    assert check.level == FAIL and f"HTTP {status}" in check.saw, check
    assert words in check.advice and "API server's log" not in check.advice, check.advice


def test_every_error_kind_has_advice() -> None:
    """not-ours and unauthorized (after the token step) had none either."""
    assert set(ADVICE_BY_KIND) == set(get_args(ErrorKind))


def test_a_proof_copied_from_another_machine_is_named_not_called_ours(
        tmp_path: Path, trace_pipe: Path, manager: FakeManager, keys: Dict[str, Path],
        live: List[Target], name: str) -> None:
    """The state directory came with an image of another host (one host name, so one
    node name): its manager-policy.json names that host's policy.  Doctor called the
    policy this host's, by its stored id; the service (which ignores the file, saying
    so in the journal) does not, and doctor now names the file and what to do."""
    create_policy(manager.url, f"^(?:{name}|other-thread)$")  # the other host's
    theirs = manager.policies("op")[-1]["id"]
    state = policy_proof(tmp_path, manager, theirs, f"^(?:{name}|other-thread)$",
                         machine="0123456789abcdef0123456789abcdef")
    check = checks_of(manager_config(tmp_path, trace_pipe, manager.url, keys),
                      live)["api strategies"]
    assert check.level == WARN
    assert check.saw.startswith(f"the Manager holds no policy of this host for node {NODE}")
    assert f"manager-policy.json in {state}: written on another machine" in check.saw
    assert "api.node_name" in check.advice
