"""The 2026 fakes' own contract: every integration test of the daemon trusts them, so
their strictness is pinned here (shared/reference/gthulhu-2026-api.md)."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import ssl
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from testbed.fake_decision_maker import EMPTY_ROOT, FakeDecisionMaker, resolve_rules
from testbed.fake_gthulhu import FakeGthulhu, make_keypair
from testbed.fake_http import QuietOnHangUpServer
from testbed.fake_manager import DEFAULT_PERMISSIONS, FakeManager
from testbed.golang_jwt import golang_jwt_error
from testbed.harness import GnbProcess

Answer = Tuple[int, Any]
RULE = {"policyID": "p1", "nodeID": "node-a", "commandRegex": "^(?:nr-gnb)$",
        "priority": 1, "executionTime": 20_000_000}


def call(base: str, method: str, path: str, body: Any = None, token: Optional[str] = None,
         raw: Optional[bytes] = None, headers: Optional[Dict[str, str]] = None,
         timeout: float = 5.0) -> Answer:
    """One request on a fresh connection: (status, parsed JSON or the raw bytes)."""
    host, port = base.split("//", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    hdrs = {"Content-Type": "application/json"}
    if token is not None:
        hdrs["Authorization"] = "Bearer " + token
    hdrs.update(headers or {})
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(payload)
    except ValueError:
        return resp.status, payload


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def leaf(rule: Dict[str, Any]) -> str:
    return sha256(f"policyID={rule['policyID']}|nodeID={rule['nodeID']}|"
                  f"commandRegex={rule['commandRegex']}|priority={rule['priority']}|"
                  f"executionTime={rule['executionTime']}")


@pytest.fixture(scope="module")
def dm_keys(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    d = tmp_path_factory.mktemp("dm-keys")
    private, public = make_keypair(d)
    _, wrong = make_keypair(tmp_path_factory.mktemp("dm-other-keys"))
    key = serialization.load_pem_private_key(private.read_bytes(), password=None)
    pkcs1 = d / "pkcs1_public.pem"
    pkcs1.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1))
    return {"private": private, "public": public, "wrong": wrong, "pkcs1": pkcs1}


@pytest.fixture
def dm(dm_keys: Dict[str, Path]) -> Iterator[FakeDecisionMaker]:
    server = FakeDecisionMaker(dm_keys["private"].read_bytes()).start()
    yield server
    server.stop()


@pytest.fixture
def dm_token(dm: FakeDecisionMaker, dm_keys: Dict[str, Path]) -> str:
    status, body = call(dm.url, "POST", "/api/v1/auth/token",
                        {"public_key": dm_keys["public"].read_text(), "client_id": "t"})
    assert status == 200, body
    return str(body["data"]["token"])


# --- Decision Maker ------------------------------------------------------------------


def test_dm_token_claims_and_refused_keys(dm: FakeDecisionMaker,
                                          dm_keys: Dict[str, Path]) -> None:
    status, body = call(dm.url, "POST", "/api/v1/auth/token",
                        {"public_key": dm_keys["public"].read_text(), "client_id": "op"})
    assert status == 200 and body["success"] is True and "token" not in body
    token, expired_at = body["data"]["token"], body["data"]["expired_at"]
    claims = jwt.decode(token, dm_keys["public"].read_text(), algorithms=["RS256"])
    assert claims["client_id"] == claims["sub"] == "op"
    assert claims["iss"] == "decision-maker-service"
    assert claims["exp"] == expired_at and claims["exp"] - claims["iat"] == 24 * 3600
    assert claims["nbf"] == claims["iat"]
    for key in ("wrong", "pkcs1"):
        status, body = call(dm.url, "POST", "/api/v1/auth/token",
                            {"public_key": dm_keys[key].read_text(), "client_id": "op"})
        assert status == 401 and body["error"].startswith("Public key verification failed")
    status, body = call(dm.url, "POST", "/api/v1/auth/token",
                        {"public_key": "garbage", "client_id": "op"})
    assert status == 401 and body["error"].strip() == "Public key verification failed"
    status, body = call(dm.url, "POST", "/api/v1/auth/token", {"public_key": 5})
    assert (status, body["error"]) == (400, "Invalid request payload")


def test_dm_auth_errors_say_which(dm: FakeDecisionMaker, dm_keys: Dict[str, Path],
                                  dm_token: str) -> None:
    path = "/api/v1/node-intents/merkle"
    status, body = call(dm.url, "GET", path)
    assert status == 401 and "required" in body["error"]
    status, body = call(dm.url, "GET", path, headers={"Authorization": "Basic " + dm_token})
    assert status == 401 and "Bearer" in body["error"]
    status, body = call(dm.url, "GET", path, token="not.a.jwt")
    assert status == 401 and body["error"].startswith("Invalid or expired token")
    expired = FakeDecisionMaker(dm_keys["private"].read_bytes(), token_lifetime=-10).start()
    try:
        old, _ = expired.issue_token()
    finally:
        expired.stop()
    status, body = call(dm.url, "GET", path, token=old)
    assert status == 401 and "expired" in body["error"]
    assert call(dm.url, "GET", path, token=dm_token)[0] == 200


@pytest.mark.parametrize("field,value", [
    ("priority", True), ("priority", "1"), ("priority", 1.5), ("priority", 1.0),
    ("priority", 2**63), ("executionTime", "20000000"), ("executionTime", 2.0e7),
    ("policyID", 7), ("commandRegex", ["nr-gnb"])])
def test_dm_go_typing_refuses_wrong_types(dm: FakeDecisionMaker, dm_token: str, field: str,
                                          value: Any) -> None:
    status, body = call(dm.url, "POST", "/api/v1/node-intents",
                        {"policies": [{**RULE, field: value}]}, token=dm_token)
    assert (status, body) == (400, {"success": False, "error": "Invalid request payload"})
    assert dm.rules() == [] and dm.merkle_root() == ""


def test_dm_decoding_is_go_like_otherwise(dm: FakeDecisionMaker, dm_token: str) -> None:
    for raw in (b"", b"{", b"[]", b'{"policies": {}}'):
        assert call(dm.url, "POST", "/api/v1/node-intents", raw=raw, token=dm_token)[0] == 400
    status, body = call(dm.url, "POST", "/api/v1/node-intents",
                        {"policies": [{**RULE, "surplus": {"x": 1}}], "other": True},
                        token=dm_token)
    assert status == 200 and body["success"] is True and "data" not in body
    assert dm.rules() == [RULE]
    # keys match case-insensitively; a missing one is Go's zero value
    call(dm.url, "POST", "/api/v1/node-intents",
         {"POLICIES": [{"PolicyId": "p2", "commandregex": "x", "priority": 3}]}, token=dm_token)
    assert dm.rules() == [{"policyID": "p2", "nodeID": "", "commandRegex": "x", "priority": 3,
                           "executionTime": 0}]


def test_dm_unknown_route_and_wrong_method_are_404(dm: FakeDecisionMaker,
                                                   dm_token: str) -> None:
    not_found = (404, {"message": "Not Found"})
    for token in (None, dm_token):
        assert call(dm.url, "GET", "/api/v1/nonexistent", token=token) == not_found
        assert call(dm.url, "POST", "/api/v1/scheduling/strategies", {"strategies": []},
                    token=token) == not_found
        assert call(dm.url, "GET", "/api/v1/node-intents", token=token) == not_found
        assert call(dm.url, "PUT", "/api/v1/node-intents", {"policies": []},
                    token=token) == not_found
        assert call(dm.url, "GET", "/api/v1/auth/token", token=token) == not_found
    assert call(dm.url, "POST", "/health")[0] == 405
    assert call(dm.url, "GET", "/nonexistent") == not_found
    status, body = call(dm.url, "GET", "/health")
    assert status == 200 and body["status"] == "healthy"
    assert call(dm.url, "GET", "/version")[0] == 200


def test_dm_merkle_root_values(dm: FakeDecisionMaker, dm_token: str) -> None:
    def root() -> str:
        status, body = call(dm.url, "GET", "/api/v1/node-intents/merkle", token=dm_token)
        assert status == 200 and body["success"] is True
        return str(body["data"]["rootHash"])

    assert root() == ""  # fresh: the field's zero value
    call(dm.url, "POST", "/api/v1/node-intents", {"policies": [RULE]}, token=dm_token)
    assert root() == leaf(RULE) == sha256(
        "policyID=p1|nodeID=node-a|commandRegex=^(?:nr-gnb)$|priority=1|executionTime=20000000")
    second = {**RULE, "policyID": "p0", "commandRegex": "^nr-gnb-rlc$"}
    call(dm.url, "POST", "/api/v1/node-intents", {"policies": [RULE, second]}, token=dm_token)
    # leaves sorted by "policyID|nodeID|...", parent = sha256(raw left + raw right)
    pair = hashlib.sha256(bytes.fromhex(leaf(second)) + bytes.fromhex(leaf(RULE))).hexdigest()
    assert root() == pair
    third = {**RULE, "policyID": "p2"}
    call(dm.url, "POST", "/api/v1/node-intents", {"policies": [third, RULE, second]},
         token=dm_token)
    odd = hashlib.sha256(bytes.fromhex(leaf(third)) * 2).hexdigest()  # paired with itself
    assert root() == hashlib.sha256(bytes.fromhex(pair) + bytes.fromhex(odd)).hexdigest()
    call(dm.url, "POST", "/api/v1/node-intents", {"policies": []}, token=dm_token)
    assert root() == EMPTY_ROOT == sha256("")
    dm.restart()
    assert root() == "" and dm.rules() == []


def test_dm_delete_semantics(dm: FakeDecisionMaker, dm_token: str) -> None:
    rules = [RULE, {**RULE, "policyID": "p2"}, {**RULE, "policyID": "p3"}]
    call(dm.url, "POST", "/api/v1/node-intents", {"policies": rules}, token=dm_token)
    for body in ({"PolicyId": "p2"}, {"policyid": "unknown"}):
        assert call(dm.url, "DELETE", "/api/v1/node-intents", body, token=dm_token)[0] == 200
    assert [r["policyID"] for r in dm.rules()] == ["p1", "p3"]
    status, answer = call(dm.url, "DELETE", "/api/v1/node-intents", {}, token=dm_token)
    assert status == 400 and "policyId" in answer["error"]
    assert call(dm.url, "DELETE", "/api/v1/node-intents", {"all": "yes"},
                token=dm_token)[0] == 400
    assert call(dm.url, "DELETE", "/api/v1/node-intents", {"all": True},
                token=dm_token)[0] == 200
    assert dm.rules() == [] and dm.merkle_root() == EMPTY_ROOT
    assert len(dm.deletes()) == 5


def comm_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def test_dm_strategies_resolve_real_processes(dm: FakeDecisionMaker, dm_token: str) -> None:
    gnb = GnbProcess(name="nr-gnb", threads=("nr-gnb-rlc",))
    other = GnbProcess(name="nr-gnbx", threads=())
    try:
        rules = [RULE, {**RULE, "policyID": "bad", "commandRegex": "("},
                 {**RULE, "policyID": "empty", "commandRegex": ""},
                 {**RULE, "policyID": "neg", "commandRegex": "^nr-gnbx$", "executionTime": -1}]
        status, _ = call(dm.url, "POST", "/api/v1/node-intents", {"policies": rules},
                         token=dm_token)
        assert status == 200  # an invalid regex is accepted, then skipped
        status, body = call(dm.url, "GET", "/api/v1/scheduling/strategies", token=dm_token)
        assert status == 200 and body["success"] is True and "data" not in body
        # Other tests' nr-gnb processes may be alive too: ours must be listed, and every
        # listed one must really be a process named nr-gnb.
        mine = [e for e in body["scheduling"] if e["command_regex"] == RULE["commandRegex"]]
        assert {"priority": 1, "execution_time": 20_000_000, "pid": gnb.pid,
                "command_regex": "^(?:nr-gnb)$"} in mine
        assert all(comm_of(e["pid"]) in ("nr-gnb", "") for e in mine)  # "": exited since
        assert gnb.threads["nr-gnb-rlc"] not in [e["pid"] for e in body["scheduling"]]
        wrapped = [e for e in body["scheduling"] if e["command_regex"] == "^nr-gnbx$"]
        assert {"priority": 1, "execution_time": 2**64 - 1, "pid": other.pid,
                "command_regex": "^nr-gnbx$"} in wrapped
        assert all(comm_of(e["pid"]) in ("nr-gnbx", "") for e in wrapped)
        assert {e["command_regex"] for e in body["scheduling"]} <= {"^(?:nr-gnb)$",
                                                                    "^nr-gnbx$"}
        gnb.stop()
        gone = [e["pid"] for e in dm.strategies()]
        assert gnb.pid not in gone and other.pid in gone  # scanned afresh on every GET
    finally:
        gnb.stop()
        other.stop()
    call(dm.url, "POST", "/api/v1/node-intents", {"policies": []}, token=dm_token)
    status, body = call(dm.url, "GET", "/api/v1/scheduling/strategies", token=dm_token)
    assert status == 200 and body["scheduling"] == []


def test_dm_thread_mode_lists_tids(dm: FakeDecisionMaker, dm_token: str) -> None:
    gnb = GnbProcess(name="nr-gnb", threads=("nr-gnb-rlc", "gnb-other"))
    try:
        rule = {**RULE, "commandRegex": "^(?:nr-gnb|nr-gnb-rlc)$"}
        call(dm.url, "POST", "/api/v1/node-intents", {"policies": [rule]}, token=dm_token)
        assert gnb.pid in [e["pid"] for e in dm.strategies()]
        assert gnb.threads["nr-gnb-rlc"] not in [e["pid"] for e in dm.strategies()]
        dm.match_threads = True
        status, body = call(dm.url, "GET", "/api/v1/scheduling/strategies", token=dm_token)
        assert status == 200
        ids = {e["pid"] for e in body["scheduling"]}
        assert {gnb.pid, gnb.threads["nr-gnb-rlc"]} <= ids
        assert gnb.threads["gnb-other"] not in ids
    finally:
        gnb.stop()


def make_proc(root: Path, tasks: Dict[int, Dict[int, str]]) -> Path:
    """A /proc of {tgid: {tid: comm}}: <tgid>/comm (the leader's) and <tgid>/task/<tid>/comm."""
    for tgid, threads in tasks.items():
        (root / str(tgid) / "task").mkdir(parents=True)
        (root / str(tgid) / "comm").write_text(threads.get(tgid, "gone") + "\n")
        for tid, comm in threads.items():
            (root / str(tgid) / "task" / str(tid)).mkdir()
            (root / str(tgid) / "task" / str(tid) / "comm").write_text(comm + "\n")
    return root


def entry(rule: Dict[str, Any], task_id: int) -> Dict[str, Any]:
    return {"priority": rule["priority"], "execution_time": rule["executionTime"],
            "pid": task_id, "command_regex": rule["commandRegex"]}


def test_dm_resolution_leaders_only_and_thread_aware(tmp_path: Path) -> None:
    """v1.3.0: one entry per rule and matching leader; PR #135: one per TID, the last
    matching rule in canonical (policyID...) order wins, sorted by TID; "pause" never."""
    proc = make_proc(tmp_path, {100: {100: "engine", 101: "engine-io", 102: "pause"},
                                200: {200: "pause", 201: "engine-x"}})
    a = {**RULE, "policyID": "a", "commandRegex": "^engine"}
    b = {**RULE, "policyID": "b", "commandRegex": "engine-", "priority": 2}
    unusable = [{**RULE, "policyID": "e", "commandRegex": ""},
                {**RULE, "policyID": "i", "commandRegex": "("}]
    for rules in ([a, b, *unusable], [*unusable, b, a]):
        assert resolve_rules(rules, str(proc)) == [entry(a, 100)]
        assert resolve_rules(rules, str(proc), match_threads=True) == [
            entry(a, 100), entry(b, 101), entry(b, 201)]
    z = {**a, "policyID": "z"}  # now last in canonical order: it wins where both match
    assert resolve_rules([z, b], str(proc), match_threads=True) == [
        entry(z, 100), entry(z, 101), entry(z, 201)]
    assert resolve_rules([a, a], str(proc)) == [entry(a, 100)] * 2


def test_dm_scan_errors(tmp_path: Path, dm_keys: Dict[str, Path]) -> None:
    """PR #135 fails the GET when /proc cannot be read whole (a task gone is not an
    error); v1.3.0 lists what it could read."""
    proc = make_proc(tmp_path / "proc", {100: {100: "engine"}})
    (proc / "300").mkdir()
    (proc / "300" / "comm").write_text("engine\n")
    (proc / "300" / "task").write_text("")  # not a folder: ENOTDIR, a real error
    (proc / "400").mkdir()  # no task folder: the process is gone (ENOENT)
    rule = {**RULE, "commandRegex": "^engine$"}
    assert resolve_rules([rule], str(proc)) == [entry(rule, 100), entry(rule, 300)]
    with pytest.raises(NotADirectoryError):
        resolve_rules([rule], str(proc), match_threads=True)
    (proc / "300" / "task").unlink()
    assert resolve_rules([rule], str(proc), match_threads=True) == [entry(rule, 100)]
    (proc / "300" / "task").write_text("")
    for threads, status in ((False, 200), (True, 500)):
        server = FakeDecisionMaker(dm_keys["private"].read_bytes(), match_threads=threads,
                                   proc_root=str(proc)).start()
        try:
            server.set_rules([rule])
            token, _ = server.issue_token()
            got, body = call(server.url, "GET", "/api/v1/scheduling/strategies", token=token)
            assert got == status
            if status == 500:
                assert body == {"success": False, "error": "Failed to list scheduling intents"}
        finally:
            server.stop()
    assert resolve_rules([rule], str(tmp_path / "absent")) == []  # v1.3.0: logged, none


def test_dm_decoding_duplicates_folding_and_surrogates(dm: FakeDecisionMaker,
                                                       dm_token: str) -> None:
    def post(raw: bytes) -> None:
        assert call(dm.url, "POST", "/api/v1/node-intents", raw=raw, token=dm_token)[0] == 200

    # a duplicate key decodes into what the first left (Go reuses the slice element)
    post(b'{"policies": [{"policyID": "a", "priority": 5}], "policies": [{"policyID": "b"}]}')
    assert dm.rules() == [{"policyID": "b", "nodeID": "", "commandRegex": "", "priority": 5,
                           "executionTime": 0}]
    post(b'{"policie\xc5\xbf": [{"policyID": "long-s"}]}')  # the long s folds to s
    assert [r["policyID"] for r in dm.rules()] == ["long-s"]
    post(b'{"policies": [{"policyID": "\\ud800x"}]}')  # a lone surrogate: U+FFFD
    assert [r["policyID"] for r in dm.rules()] == ["\ufffdx"]


def test_dm_echo_answers_outside_api(dm: FakeDecisionMaker) -> None:
    def raw_call(method: str) -> Tuple[int, Dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", dm.port, timeout=5)
        try:
            conn.request(method, "/health")
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    status, headers, body = raw_call("OPTIONS")
    assert (status, headers["Allow"], body) == (204, "OPTIONS, GET", b"")
    status, headers, body = raw_call("POST")
    assert (status, headers["Allow"], headers["Content-Type"]) == (
        405, "OPTIONS, GET", "application/json")
    status, headers, body = raw_call("HEAD")
    assert status == 405 and "Content-Type" not in headers and body == b""


def test_dm_token_errors_follow_golang_jwt(dm: FakeDecisionMaker, dm_keys: Dict[str, Path],
                                           dm_token: str) -> None:
    key = serialization.load_pem_private_key(dm_keys["private"].read_bytes(), password=None)
    public = key.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    head, claims, _ = dm_token.split(".")
    now = jwt.decode(dm_token, options={"verify_signature": False})["iat"]
    cases = {
        "a.b": "token is malformed: token contains an invalid number of segments",
        "ab=c." + claims + ".x":
            "token is malformed: could not base64 decode header: illegal base64 data at "
            "input byte 2",
        jwt.encode({"exp": now + 60}, "", algorithm="none"):  # type: ignore[arg-type]
            "token is unverifiable: error while executing keyfunc: unexpected signing "
            "method: none",
        jwt.encode({"exp": now - 1, "nbf": now + 60}, key, algorithm="RS256"):  # type: ignore
            "token has invalid claims: token is expired, token is not valid yet",
        f"{head}.{claims}.{'A' * 342}": "token signature is invalid: crypto/rsa: "
                                        "verification error",
        dm_token: None}
    for token, error in cases.items():
        assert golang_jwt_error(token, public, now) == error, token
    status, body = call(dm.url, "GET", "/api/v1/node-intents/merkle",
                        headers={"Authorization": "Bearer "})  # Go trims the header value
    assert (status, body["error"]) == (401, "Authorization header must start with 'Bearer '")


def test_dm_faults(dm: FakeDecisionMaker, dm_token: str) -> None:
    dm.fault = "500"
    assert call(dm.url, "GET", "/health")[0] == 500
    dm.fault = "badjson"
    assert call(dm.url, "GET", "/health") == (200, b"{not json")
    dm.fault = "hang"
    with pytest.raises(socket.timeout):
        call(dm.url, "GET", "/health", timeout=0.3)
    dm.fault = "refuse"
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        call(dm.url, "GET", "/health")
    dm.fault, dm.fault_paths = "500", ("/api/v1/node-intents",)
    assert call(dm.url, "GET", "/health")[0] == 200
    assert call(dm.url, "POST", "/api/v1/node-intents", {"policies": [RULE]},
                token=dm_token)[0] == 500
    dm.fault = None
    assert call(dm.url, "POST", "/api/v1/node-intents", {"policies": [RULE]},
                token=dm_token)[0] == 200
    assert dm.wait_post(lambda p: p == [RULE], timeout=1).method == "POST"


# --- Manager -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manager_key(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    private, _ = make_keypair(tmp_path_factory.mktemp("manager-keys"))
    return private.read_bytes()


USERS: Dict[str, Dict[str, Any]] = {
    "alice": {"password": "a-secret"},
    "bob": {"password": "initial", "must_change_password": True},
    "carol": {"password": "c-secret", "permissions": set()},
}
POLICY = {"nodeNames": ["node-a"], "commandRegex": "^(?:nr-gnb)$", "priority": 1,
          "executionTime": 20_000_000}


@pytest.fixture
def manager(manager_key: bytes) -> Iterator[FakeManager]:
    server = FakeManager(USERS, {"node-a", "node-b"}, manager_key).start()
    yield server
    server.stop()


def login(manager: FakeManager, user: str, password: str) -> Dict[str, str]:
    status, body = call(manager.url, "POST", "/api/v1/auth/login",
                        {"username": user, "password": password})
    assert status == 200, body
    return dict(body["data"])


def test_manager_login(manager: FakeManager, manager_key: bytes) -> None:
    tokens = login(manager, "alice", "a-secret")
    assert tokens["token"] == tokens["accessToken"] and tokens["refreshToken"]
    public = serialization.load_pem_private_key(manager_key, None).public_key()
    claims = jwt.decode(tokens["accessToken"], public,  # type: ignore[arg-type]
                        algorithms=["RS256"])
    assert claims["exp"] - claims["iat"] == 60 and claims["iss"] == "bss-api-server"
    assert claims["uid"] == claims["sub"] == manager.user_id("alice")
    refresh = jwt.decode(tokens["refreshToken"], public,  # type: ignore[arg-type]
                         algorithms=["RS256"])
    assert refresh["exp"] - refresh["iat"] == 24 * 3600 and refresh["tokenType"] == "refresh"
    path = "/api/v1/auth/login"
    assert call(manager.url, "POST", path, raw=b"{")[0] == 400
    assert call(manager.url, "POST", path, {"username": 5, "password": "x"})[0] == 400
    assert call(manager.url, "POST", path, {"username": "alice"})[0] == 422
    assert call(manager.url, "POST", path, {"username": "nobody", "password": "x"})[0] == 401
    status, body = call(manager.url, "POST", path, {"username": "alice", "password": "no"})
    assert (status, body["error"]) == (401, "invalid password")


def test_manager_refresh_token_is_single_use(manager: FakeManager) -> None:
    first = login(manager, "alice", "a-secret")
    status, body = call(manager.url, "POST", "/api/v1/auth/refresh",
                        {"refreshToken": first["refreshToken"]})
    assert status == 200 and body["data"]["refreshToken"] != first["refreshToken"]
    assert call(manager.url, "GET", "/api/v1/node-scheduling-policies/self",
                token=body["data"]["accessToken"])[0] == 200
    status, again = call(manager.url, "POST", "/api/v1/auth/refresh",
                         {"refreshToken": first["refreshToken"]})
    assert (status, again["error"]) == (401, "refresh token not found")
    status, wrong = call(manager.url, "POST", "/api/v1/auth/refresh",
                         {"refreshToken": first["accessToken"]})
    assert (status, wrong["error"]) == (401, "invalid refresh token")


def test_manager_password_change_required(manager: FakeManager) -> None:
    tokens = login(manager, "bob", "initial")  # logging in works
    path = "/api/v1/node-scheduling-policies/self"
    status, body = call(manager.url, "GET", path, token=tokens["accessToken"])
    assert (status, body["error"]) == (403, "password change required")
    assert call(manager.url, "POST", "/api/v1/node-scheduling-policies", POLICY,
                token=tokens["accessToken"])[0] == 403
    change = "/api/v1/users/self/password"
    status, body = call(manager.url, "PUT", change, {"oldPassword": "bad", "newPassword": "n"},
                        token=tokens["accessToken"])
    assert status == 401
    status, body = call(manager.url, "PUT", change,
                        {"oldPassword": "initial", "newPassword": "new-secret"},
                        token=tokens["accessToken"])
    assert status == 200 and not manager.must_change_password("bob")
    # the claim is in the token: the old one keeps getting 403, a new one works
    assert call(manager.url, "GET", path, token=tokens["accessToken"])[0] == 403
    fresh = login(manager, "bob", "new-secret")
    assert call(manager.url, "GET", path, token=fresh["accessToken"])[0] == 200


def test_manager_permissions_and_headers(manager: FakeManager) -> None:
    path = "/api/v1/node-scheduling-policies/self"
    carol = login(manager, "carol", "c-secret")
    status, body = call(manager.url, "GET", path, token=carol["accessToken"])
    assert (status, body["error"]) == (403, "permission denied")
    assert call(manager.url, "GET", path)[1]["error"] == "Missing Authorization header"
    alice = login(manager, "alice", "a-secret")
    status, body = call(manager.url, "GET", path, headers={"Authorization": alice["token"]})
    assert (status, body["error"]) == (401, "Invalid Authorization header format")
    manager.expire_access_tokens()
    status, body = call(manager.url, "GET", path, token=alice["accessToken"])
    assert (status, body["error"]) == (401, "invalid or expired token")
    assert "user.password.change" in DEFAULT_PERMISSIONS


def test_manager_policies(manager: FakeManager) -> None:
    token = login(manager, "alice", "a-secret")["accessToken"]
    base, path = manager.url, "/api/v1/node-scheduling-policies"
    status, body = call(base, "POST", path, {**POLICY, "nodeNames": ["elsewhere"]}, token=token)
    assert (status, body["error"]) == (404, "no nodes match the policy criteria")
    assert call(base, "POST", path, {**POLICY, "priority": True}, token=token) == (
        400, {"success": False, "error": "Invalid request body"})
    status, body = call(base, "POST", path, POLICY, token=token)
    assert status == 200 and body["success"] is True and "data" not in body
    status, body = call(base, "GET", path + "/self", token=token)
    (policy,) = body["data"]["policies"]
    assert len(policy["id"]) == 24 and int(policy["id"], 16) >= 0
    assert {k: policy[k] for k in POLICY} == POLICY
    other = login(manager, "bob", "initial")
    manager.reset_password("bob", "initial")  # still pending: stays 403 for bob
    assert call(base, "GET", path + "/self", token=other["accessToken"])[0] == 403
    assert manager.policies("bob") == [] and len(manager.policies("alice")) == 1
    pid = policy["id"]
    status, body = call(base, "PUT", path, {"policyId": pid, "commandRegex": "x"}, token=token)
    assert (status, body["error"]) == (404, "no nodes match the policy criteria")
    assert call(base, "PUT", path, {**POLICY, "policyId": "not-an-id"}, token=token)[0] == 500
    status, body = call(base, "PUT", path, {**POLICY, "policyId": "0" * 24}, token=token)
    assert status == 404 and "not found" in body["error"]
    status, body = call(base, "PUT", path, {"policyId": pid, "nodeNames": ["node-b"],
                                            "commandRegex": "^nr-gnb$", "executionTime": 5},
                        token=token)
    assert status == 200 and "data" not in body
    (updated,) = call(base, "GET", path + "/self", token=token)[1]["data"]["policies"]
    assert updated == {"id": pid, "nodeNames": ["node-b"], "commandRegex": "^nr-gnb$",
                       "executionTime": 5}  # priority 0: omitted (omitempty)
    assert call(base, "DELETE", path, {}, token=token)[0] == 400
    status, body = call(base, "DELETE", path, {"policyId": pid}, token=token)
    assert status == 200 and body["data"] == {}
    assert call(base, "DELETE", path, {"policyId": pid}, token=token)[0] == 404
    assert manager.policies() == []


def test_manager_routing(manager: FakeManager) -> None:
    token = login(manager, "alice", "a-secret")["accessToken"]
    not_found = (404, {"message": "Not Found"})
    assert call(manager.url, "GET", "/api/v1/nonexistent", token=token) == not_found
    assert call(manager.url, "GET", "/api/v1/node-scheduling-policies",
                token=token) == not_found
    assert call(manager.url, "POST", "/api/v1/auth/token", {"public_key": "x"}) == not_found
    assert call(manager.url, "GET", "/api/v1/auth/login") == not_found
    status, page = call(manager.url, "GET", "/")
    assert status == 200 and isinstance(page, bytes) and page.lstrip().startswith(b"<!doctype")
    assert call(manager.url, "POST", "/")[0] == 405
    assert call(manager.url, "GET", "/health")[0] == 200


def test_manager_restart_keeps_policies(manager: FakeManager) -> None:
    tokens = login(manager, "alice", "a-secret")
    call(manager.url, "POST", "/api/v1/node-scheduling-policies", POLICY,
         token=tokens["accessToken"])
    manager.restart()
    assert len(manager.policies("alice")) == 1
    assert call(manager.url, "GET", "/api/v1/node-scheduling-policies/self",
                token=tokens["accessToken"])[0] == 200
    manager.restart(lose_tokens=True)
    assert call(manager.url, "GET", "/api/v1/node-scheduling-policies/self",
                token=tokens["accessToken"])[0] == 401
    assert call(manager.url, "POST", "/api/v1/auth/refresh",
                {"refreshToken": tokens["refreshToken"]})[0] == 401
    fresh = login(manager, "alice", "a-secret")
    status, body = call(manager.url, "GET", "/api/v1/node-scheduling-policies/self",
                        token=fresh["accessToken"])
    assert status == 200 and len(body["data"]["policies"]) == 1


def test_manager_pushes_to_linked_decision_maker(manager_key: bytes,
                                                 dm: FakeDecisionMaker) -> None:
    manager = FakeManager(USERS, ["node-a"], manager_key,
                          decision_makers={"node-a": dm}).start()
    try:
        token = login(manager, "alice", "a-secret")["accessToken"]
        path = "/api/v1/node-scheduling-policies"
        assert call(manager.url, "POST", path, POLICY, token=token)[0] == 200
        (first,) = manager.policies()
        assert dm.rules() == [{"policyID": first["id"], "nodeID": "node-a",
                               "commandRegex": POLICY["commandRegex"], "priority": 1,
                               "executionTime": 20_000_000}]
        assert call(manager.url, "POST", path, {**POLICY, "commandRegex": "^nr-gnb-rlc$"},
                    token=token)[0] == 200
        assert len(dm.rules()) == 1  # the real Manager's push replaces the DM's list...
        assert manager.sync() == {"node-a": "sent 2"}  # ...until its reconciler runs
        assert {r["policyID"] for r in dm.rules()} == {p["id"] for p in manager.policies()}
        assert manager.sync() == {"node-a": "in sync"}
        assert call(manager.url, "DELETE", path, {"policyId": first["id"]},
                    token=token)[0] == 200
        assert [r["commandRegex"] for r in dm.rules()] == ["^nr-gnb-rlc$"]
        dm.fault = "500"
        status, body = call(manager.url, "POST", path, POLICY, token=token)
        assert (status, body["error"]) == (500, "Internal Server Error")
        assert len(manager.policies()) == 2  # saved all the same
        dm.fault = None
        dm.restart()
        assert manager.sync() == {"node-a": "sent 2"} and len(dm.rules()) == 2
    finally:
        manager.stop()


@pytest.mark.parametrize("hang_up", [BrokenPipeError, ConnectionResetError,
                                     ConnectionAbortedError, ssl.SSLEOFError])
def test_a_client_hanging_up_prints_no_traceback(
        hang_up: type, capsys: pytest.CaptureFixture[str]) -> None:
    """The daemon cuts an exchange when stopped (or when its deadline passes); the
    fake's thread then fails to read or write.  socketserver would print that as a
    traceback, which the demo (rightly) takes for a crash; a real bug still prints."""
    server = QuietOnHangUpServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    try:
        for exc in (hang_up(32, "hung up"), ValueError("a bug in the fake")):
            try:
                raise exc
            except Exception:
                server.handle_error(None, ("127.0.0.1", 1))
    finally:
        server.server_close()
    err = capsys.readouterr().err
    assert "hung up" not in err
    assert "Traceback" in err and "ValueError: a bug in the fake" in err


def test_v0_takes_only_a_pkix_public_key(dm_keys: Dict[str, Path]) -> None:
    """The 2025 API parses the key with x509.ParsePKIXPublicKey (gthulhu-v1-api.md), as the
    Decision Maker does: a PKCS#1 copy of the right key is refused, the PKIX one taken."""
    server = FakeGthulhu(dm_keys["private"].read_bytes()).start()
    try:
        got = {form: call(server.url, "POST", "/api/v1/auth/token",
                          {"public_key": dm_keys[form].read_text()})[0]
               for form in ("public", "pkcs1", "wrong")}
    finally:
        server.stop()
    assert got == {"public": 200, "pkcs1": 401, "wrong": 401}
