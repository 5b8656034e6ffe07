"""Whatever a server sends, the daemon lives (robustness issue, classes 1, 3 and 7).

Every route of every flavor answers, in turn, each of a list of hostile bodies
— JSON nested a hundred thousand deep, numbers no float holds, a million
containers, values of the wrong JSON type where an id, a list, a token or a
time is expected, NaN, bytes that are not UTF-8 — and interim 1xx answers come
before real ones.  The real daemon must log `bad-answer` (at WARNING: it
passes), back off, never exit, never print a traceback, and recover once the
server behaves.  A condition only a person can fix is logged at ERROR, a
transient one at WARNING.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from testbed.fake_decision_maker import FakeDecisionMaker
from testbed.fake_http import FakeServerBase
from testbed.fake_manager import FakeManager
from testbed.harness import DaemonProcess, GnbProcess, wait_until
from testbed.tiny_server import TinyServer
from tests.conftest import Env
from tests.integration.test_flavors import (
    lines,
    manager_for,
    my_policies,
    regex_is,
    rule,
    start_dm,
    start_manager,
)

pytestmark = pytest.mark.faults

DEEP = 100_000

# (what, the body a 200 carries): each is a different way of not being the answer
HOSTILE: List[Tuple[str, bytes]] = [
    ("nested arrays", b"[" * DEEP + b"]" * DEEP),
    ("nested objects", b'{"data":' * DEEP + b"1" + b"}" * DEEP),
    ("a million containers", b"[" + b"{}," * 400_000 + b"{}]"),
    ("a number no float holds", b'{"success":true,"data":{"token":"t","expired_at":1e999,'
                                b'"rootHash":1e999,"policies":1e999},"scheduling":1e999}'),
    ("an integer of 5000 digits", b'{"data":{"rootHash":' + b"9" * 5000 + b"}}"),
    ("NaN", b'{"data":{"rootHash":NaN,"token":NaN},"token":NaN}'),
    ("not UTF-8", b'{"data":{"rootHash":"\xff\xfe"}}'),
    ("wrong types", b'{"success":true,"data":[1,2],"token":5,"scheduling":{"pid":1}}'),
    ("wrong inner types", b'{"success":true,"data":{"token":["x"],"rootHash":{},"policies":'
                          b'"all","accessToken":7},"scheduling":[{"pid":"1"},7,null]}'),
    ("a JSON string", b'"just a string"'),
    ("null", b"null"),
    ("an empty object", b"{}"),
]


UNAUTHORIZED = (401, b'{"success":false,"error":"Invalid or expired token"}')


def survive(server: FakeServerBase, d: DaemonProcess, route: Tuple[str, str],
            trigger: Optional[Tuple[str, str]] = None) -> None:
    """Plant each hostile body on `route` in turn; each must be asked for and taken.
    `trigger`: a route answered 401 until the first hostile body is asked for (a token
    route is asked only when the credentials are refused)."""
    if trigger is not None:
        server.answers[trigger] = UNAUTHORIZED
        server.answers[route] = (200, HOSTILE[0][1])
        server.wait_for(lambda: server.answered.get(route, 0) > 0, 30)
        del server.answers[trigger]
    for what, body in HOSTILE:
        before = server.answered.get(route, 0)
        server.answers[route] = (200, body)
        try:
            server.wait_for(lambda b=before: server.answered.get(route, 0) > b,  # type: ignore
                            60)
        except TimeoutError:
            raise AssertionError(f"{route} {what}: not asked for again within 60 s\n"
                                 f"{d.log()[-3000:]}") from None
        assert d.proc.poll() is None, f"{route} {what}: the daemon exited\n{d.log()[-3000:]}"
    del server.answers[route]
    log = d.log()
    assert "Traceback" not in log and "bug:" not in log, log[-5000:]
    assert "bad-answer" in log


# --- v0 ----------------------------------------------------------------------------------------


V0_POST = ("POST", "/api/v1/scheduling/strategies")


@pytest.mark.parametrize("route", [("POST", "/api/v1/auth/token"), V0_POST,
                                   ("GET", "/api/v1/scheduling/strategies")])
def test_v0_routes(env: Env, gnb: Callable[..., GnbProcess], route: Tuple[str, str]) -> None:
    d = env.start(api={"flavor": "v0"}, strategy={"resync_interval": 1.5, "mode": "merge"})
    g = gnb(threads=())
    env.writer.write(lines(g))
    env.api.wait_post(lambda s: {x.get("pid") for x in s} >= {g.pid}, timeout=30)
    survive(env.api, d, route, V0_POST if "token" in route[1] else None)
    posts = len(env.api.posts())
    env.api.wait_post(lambda s: {x.get("pid") for x in s} >= {g.pid}, timeout=30, after=posts)


# --- the Decision Maker -----------------------------------------------------------------------


@pytest.fixture
def dm(keys: Dict[str, Path]) -> Iterator[FakeDecisionMaker]:
    server = FakeDecisionMaker(keys["private"].read_bytes()).start()
    yield server
    server.stop()


@pytest.mark.parametrize("route", [("POST", "/api/v1/auth/token"),
                                   ("GET", "/api/v1/node-intents/merkle"),
                                   ("POST", "/api/v1/node-intents"),
                                   ("GET", "/api/v1/scheduling/strategies")])  # read-back
def test_decision_maker_routes(env: Env, dm: FakeDecisionMaker,
                               gnb: Callable[..., GnbProcess], route: Tuple[str, str]) -> None:
    d = start_dm(env, dm, strategy={"resync_interval": 1.5})
    g = gnb(threads=())
    env.writer.write(lines(g))
    dm.wait_for(lambda: dm.rules() == [rule("^(?:nr-gnb)$")], 30)
    if route == ("POST", "/api/v1/node-intents"):
        dm.set_rules([])  # so that each resync writes the rule again
    survive(dm, d, route, ("GET", "/api/v1/node-intents/merkle") if "token" in route[1]
            else None)
    dm.set_rules([])
    dm.wait_for(lambda: dm.rules() == [rule("^(?:nr-gnb)$")], 30)


# --- the Manager ------------------------------------------------------------------------------


@pytest.fixture
def manager(keys: Dict[str, Path]) -> Iterator[FakeManager]:
    server = manager_for(keys)
    yield server
    server.stop()


@pytest.mark.parametrize("route", [("POST", "/api/v1/auth/login"),
                                   ("GET", "/api/v1/node-scheduling-policies/self"),
                                   ("POST", "/api/v1/node-scheduling-policies")])
def test_manager_routes(env: Env, manager: FakeManager, gnb: Callable[..., GnbProcess],
                        route: Tuple[str, str]) -> None:
    d = start_manager(env, manager, strategy={"resync_interval": 1.5})
    g = gnb(threads=())
    env.writer.write(lines(g))
    manager.wait_for(lambda: regex_is(manager, "^(?:nr-gnb)$"), 30)
    d.wait_log("policy", timeout=30)  # its id is stored: ours is known from here on
    d.wait_log(" created for node", timeout=30)
    if route[0] == "POST" and "policies" in route[1]:  # ours looks gone: created again
        manager.answers[("PUT", "/api/v1/node-scheduling-policies")] = (
            404, b'{"success":false,"error":"node policy not found or you don\'t have '
                 b'permission to update it"}')
        manager.answers[("GET", "/api/v1/node-scheduling-policies/self")] = (
            200, b'{"success":true,"data":{"policies":[]}}')
    if route == ("POST", "/api/v1/auth/login"):
        manager.expire_access_tokens()
        manager.revoke_sessions("operator")  # every renewal is a login
    survive(manager, d, route)
    manager.answers.clear()
    g.stop()
    manager.wait_for(lambda: my_policies(manager) == [], 30)


def test_token_claims_no_clock_can_show(env: Env, manager: FakeManager,
                                        gnb: Callable[..., GnbProcess]) -> None:
    """The Manager's access token is only decoded, never verified: claims with times
    beyond any clock, nested too deep or of the wrong type change nothing."""
    import base64

    def token(claims: bytes) -> str:
        part = base64.urlsafe_b64encode(claims).rstrip(b"=").decode()
        return f"eyJhbGciOiJSUzI1NiJ9.{part}.c2ln"

    d = start_manager(env, manager, api={"flavor": "manager"},
                      strategy={"resync_interval": 1.5})
    g = gnb(threads=())
    env.writer.write(lines(g))
    manager.wait_for(lambda: regex_is(manager, "^(?:nr-gnb)$"), 30)
    login = ("POST", "/api/v1/auth/login")
    for claims in (b'{"exp":1e999,"iat":-1e999}', b'{"exp":' + b"9" * 400 + b',"iat":1}',
                   b"[" * DEEP + b"]" * DEEP, b'{"exp":"soon","iat":[1]}', b"\xff"):
        logins = manager.answered.get(login, 0)
        body = json.dumps({"success": True, "data": {"token": token(claims),
                                                     "accessToken": token(claims)}})
        manager.answers[login] = (200, body.encode())
        manager.expire_access_tokens()
        manager.revoke_sessions("operator")
        wait_until(lambda n=logins: manager.answered.get(login, 0) > n,  # type: ignore
                   30, "a login with the odd token")
        assert d.proc.poll() is None, d.log()[-3000:]
    manager.answers.clear()
    assert "Traceback" not in d.log()


# --- interim (1xx) answers ---------------------------------------------------------------------


@pytest.mark.parametrize("interim", [
    [b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"],
    [b"HTTP/1.1 102 Processing\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
     b"HTTP/1.1 100 Continue\r\n\r\n"],
])
def test_interim_answers_are_skipped_and_every_request_gets_its_own(
        env: Env, gnb: Callable[..., GnbProcess], interim: List[bytes]) -> None:
    """Before the fix, a 103 was taken for the final answer and every later request on
    the kept-alive connection read the previous request's answer: merge mode's POST
    judged by its GET's 200, the GET fed the token answer.  Here each exchange must be
    its own: the token verifies, the GET's list merges, the POST lands."""
    env.api.interim = interim
    env.api.strategies = [{"pid": 999_999, "priority": True, "execution_time": 1}]
    d = env.start(strategy={"mode": "merge", "resync_interval": 1.5})
    g = gnb(threads=())
    env.writer.write(lines(g))
    env.api.wait_post(lambda s: {x.get("pid") for x in s} == {999_999, g.pid}, timeout=30)
    posts = len(env.api.posts())
    env.api.wait_post(lambda s: {x.get("pid") for x in s} == {999_999, g.pid}, timeout=10,
                      after=posts)  # and again at the resync, on the same connection
    log = d.log()
    assert "push failed" not in log and "bad-answer" not in log, log[-3000:]


# --- severity ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,level", [
    ("refused", "WARNING"),   # the server is down: passes by itself
    ("500", "WARNING"),
    ("429", "WARNING"),       # too many requests (a throttling proxy): passes by itself
    ("408", "WARNING"),       # the server's own request timeout: likewise
    ("key", "ERROR"),         # our key refused: a person must install the right one
    ("403", "ERROR"),         # a missing permission
    ("node", "ERROR"),        # an unknown node name
])
def test_what_needs_a_person_is_an_error_and_what_passes_a_warning(
        env: Env, keys: Dict[str, Path], gnb: Callable[..., GnbProcess], kind: str,
        level: str) -> None:
    """`journalctl -p err` must list exactly what needs a person."""
    g = gnb(threads=())
    servers: List[object] = []
    if kind in ("refused", "500", "429", "408", "key"):
        if kind == "refused":
            env.api.stop()
        elif kind == "500":
            env.api.fault = "500"
        elif kind in ("429", "408"):
            env.api.answers[("POST", "/api/v1/scheduling/strategies")] = (
                int(kind), b'{"success": false, "error": "try again later"}')
        d = env.start(api={"flavor": "v0"} if kind != "key" else
                      {"flavor": "v0", "public_key": str(keys["wrong_public"])})
    else:
        manager = manager_for(keys) if kind == "node" else manager_for(keys, permissions=set())
        servers.append(manager)
        d = start_manager(env, manager, api={"node_name": "no-such-node"} if kind == "node"
                          else {})
    try:
        env.writer.write(lines(g))
        d.wait_log("push failed:", timeout=15)
        failed = [ln for ln in d.log().splitlines() if "push failed:" in ln]
        assert failed and f" {level} " in failed[0], failed
    finally:
        for s in servers:
            s.stop()  # type: ignore[attr-defined]


# --- a head of megabytes -----------------------------------------------------------------------


class OneAnswer(TinyServer):
    """Reads each request whole, then sends `answer()` and closes; counts them."""

    def __init__(self) -> None:
        self.served = 0
        super().__init__()

    def answer(self) -> bytes:
        raise NotImplementedError

    def serve(self, conn: socket.socket) -> None:
        request = conn.makefile("rb")
        length = 0
        while (line := request.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        request.read(length)  # all of it: closing on unread bytes would reset
        self.served += 1  # the next request comes once this answer was taken
        conn.sendall(self.answer())


class HeavyHead(OneAnswer):
    """Answers every request 200 `{}` after `lines` header lines of 64 KiB each (http.client
    takes up to 100 of them)."""

    lines = 0

    def answer(self) -> bytes:
        return (b"HTTP/1.1 200 OK\r\n" + (b"X: " + b"y" * 65500 + b"\r\n") * self.lines
                + b"Connection: close\r\nContent-Length: 2\r\n\r\n{}")


def peak_memory_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_head_of_megabytes_does_not_blow_the_memory_limit(env: Env) -> None:
    """Parsing 97 header lines of 64 KiB raised the daemon's peak memory from 35 to
    84 MB: past the unit's MemoryMax=64M, so one answer of whoever listens on api.url
    got the service killed, again after each restart."""
    server = HeavyHead()
    try:
        d = env.start(api={"url": server.url}, strategy={"resync_interval": 1.5})
        wait_until(lambda: server.served >= 2, 20, "two answers")
        before = peak_memory_mb(d.pid)
        server.lines, served = 97, server.served
        wait_until(lambda: server.served >= served + 3, 20, "three heavy answers")
        assert d.proc.poll() is None, d.log()[-3000:]
        grown = peak_memory_mb(d.pid) - before
        assert grown < 16, f"peak memory grew by {grown:.0f} MB"
        d.wait_log("longer than 262144 bytes", timeout=5)
        assert "Traceback" not in d.log()
    finally:
        server.close()


# --- a body of small values ----------------------------------------------------------------------


class SmallValues(OneAnswer):
    """Answers every request 200 with `body` (`{}` until a test sets it)."""

    body = b"{}"

    def answer(self) -> bytes:
        return (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
                % len(self.body) + self.body)


def test_a_megabyte_of_small_values_does_not_blow_the_memory_limit(env: Env) -> None:
    """1 MiB of [{"a":"ā"},...] (under the body limit) decoded to 26 MB of objects and
    raised the daemon's peak memory by about 30 MB: with its endpoint, 56 MB of the
    unit's MemoryHigh=48M, at every answer of whoever listens on api.url."""
    server = SmallValues()
    try:
        d = env.start(api={"url": server.url}, strategy={"resync_interval": 1.5})
        wait_until(lambda: server.served >= 2, 20, "two answers")
        before = peak_memory_mb(d.pid)
        item = '{"a":"ā"}'.encode()
        server.body = b"[" + b",".join([item] * ((1 << 20) // (len(item) + 1) - 1)) + b"]"
        served = server.served
        wait_until(lambda: server.served >= served + 3, 30, "three answers of 1 MiB")
        assert d.proc.poll() is None, d.log()[-3000:]
        grown = peak_memory_mb(d.pid) - before
        assert grown < 12, f"peak memory grew by {grown:.0f} MB"
        d.wait_log("JSON objects and arrays", timeout=5)
        assert "Traceback" not in d.log()
    finally:
        server.close()
