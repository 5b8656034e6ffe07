"""A strict fake of Gthulhu's 2026 per-node Decision Maker (DM) for tests and the demo.

Contract: the Decision Maker of Gthulhu since 2026-08, as the project's reference notes
describe it (not part of this repository).  Details beyond those notes were
read from Gthulhu's public sources (repository Gthulhu/Gthulhu, folder api/, and
its former home Gthulhu/api); each is cited where it is used:

- routes and the `/api` catch-all: api/decisionmaker/rest/handler.go (echo v4.13
  router; a group with middleware registers a 404 route for `/api/*`, so an unknown
  path and a known path with the wrong method both answer 404 {"message":"Not
  Found"}; outside /api a wrong method is 405 with `Allow: OPTIONS, GET`, OPTIONS
  204; no Content-Type on HEAD answers).
- node rules: api/decisionmaker/rest/node_policy_hdl.go (request structs, the
  "Invalid request payload" and "policyId is required when 'all' is false"
  errors, success answers without `data`) and
  api/decisionmaker/service/node_policy_svc.go (the whole list is replaced; the
  Merkle root over the sorted leaf hashes; rules with an empty regex or an
  invalid one are skipped; processes whose comm is "pause" are never matched).
- the Merkle tree: Gthulhu/api pkg/util/merkle.go (empty tree = sha256(""),
  odd node paired with itself, parent = sha256(raw(left) + raw(right))).  The
  root is "" only until the first POST or DELETE (zero value of the field).
- the /proc scan: api/decisionmaker/service/procmonitor.go at v1.3.0 (thread-group
  leaders, by PID) and after PR #135, `match_threads=True` (every
  /proc/<tgid>/task/<tid>/comm, one entry per TID: the last matching rule in
  canonical order, sorted by TID; a scan error other than a task gone fails the
  GET with 500 "Failed to list scheduling intents").
- strategies answer: Gthulhu/api decisionmaker/rest/intent_handler.go (message
  "Scheduling intents retrieved successfully", `scheduling` is [] when empty,
  execution_time is a uint64: a negative executionTime wraps around).
- tokens: Gthulhu/api decisionmaker/service/token_svc.go (claims client_id, iss
  "decision-maker-service", sub = client_id, exp/nbf/iat; 24 h because the
  service never receives its token config), decisionmaker/rest/token_handler.go
  (401 "Public key verification failed " -- with that trailing space) and
  decisionmaker/rest/middleware.go (401 "Authorization header is required",
  "Authorization header must start with 'Bearer '", "Invalid or expired token: "
  + the golang-jwt/v5 error text).
- request decoding: Go's encoding/json as used by JSONBind (testbed/go_json.py):
  first JSON value only, keys matched by Go's case folding, unknown keys ignored,
  `null` leaves a field unchanged, a duplicate key decodes into what the first
  left, a wrong type (true, "1" or 1.5 for an int) is an error.
- token errors: golang-jwt v5.3.0's, in its order of checks (testbed/golang_jwt.py).
- rules: Go's regexp (RE2 syntax) translated onto Python's `re`
  (testbed/go_regexp.py); comm trimmed as strings.TrimSpace does.

All of this is compared with real builds of the DM (v1.3.0 against the default
mode, PR #135 against match_threads=True) by tests/contract/, where such builds
exist (see tests/contract/real_dm.py).

Deliberate stand-ins: leaders-only mode lists processes by PID (the real v1.3.0
walks a Go map: any order).  The DM's other routes (/api/v1/intents, metrics,
runtime-config, pods/pids) check the token and then answer 501: they are not
modelled (the real ones answer 200; the operator uses none of them).

Faults (`server.fault = ...`, optionally limited with `server.fault_paths`):
"hang", "slow" (sleeps fault_delay, then answers), "trickle", "500", "400",
"401", "badjson", "huge", "reset" (connection dropped with a RST, no answer) and
"refuse" (the same: the nearest a listening server gets to a refused connection;
stop() gives a real ECONNREFUSED).

Run it alone:  python3 -m testbed.fake_decision_maker --port 8080 --key-dir DIR
"""

from __future__ import annotations

import abc
import argparse
import contextlib
import errno
import hashlib
import json
import os
import ssl
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Pattern, Sequence, Tuple

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from testbed.fake_gthulhu import Received, make_keypair, pkix_rsa_public_key
from testbed.fake_http import FakeServerBase, FakeServerHandler
from testbed.go_json import GoJSONError, Kind, go_decode, go_json, zero_value
from testbed.go_regexp import compile_re2
from testbed.golang_jwt import golang_jwt_error

__all__ = [
    "DM_ISSUER",
    "DM_TOKEN_LIFETIME",
    "EMPTY_ROOT",
    "FakeDecisionMaker",
    "GoJSONError",
    "Kind",
    "Received",
    "compile_re2",
    "go_decode",
    "go_json",
    "make_keypair",
    "merkle_root",
    "node_policies_root",
    "node_policy_hash",
    "scan_processes",
    "scan_tasks",
]

DM_ISSUER = "decision-maker-service"
DM_TOKEN_LIFETIME = 24 * 3600.0  # token_svc.go: TokenDurationHr is never set, so 24 h
EMPTY_ROOT = hashlib.sha256(b"").hexdigest()
PAUSE_COMMAND = "pause"  # service.go: pauseCommand, never matched
RULE_FIELDS = ("policyID", "nodeID", "commandRegex", "priority", "executionTime")
_UINT64 = (1 << 64) - 1

def rfc3339_now() -> str:
    """time.Now().UTC().Format(time.RFC3339)"""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- node rules: hashing, matching -------------------------------------------------------


def node_policy_hash(rule: Dict[str, Any]) -> str:
    """hashNodePolicy (node_policy_svc.go): the leaf hash of one rule."""
    serialized = (f"policyID={rule['policyID']}|nodeID={rule['nodeID']}|"
                  f"commandRegex={rule['commandRegex']}|priority={rule['priority']}|"
                  f"executionTime={rule['executionTime']}")
    return hashlib.sha256(serialized.encode()).hexdigest()


def merkle_root(leaf_hashes: Sequence[str]) -> str:
    """util.BuildMerkleTree(leaves).Hash (Gthulhu/api pkg/util/merkle.go)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), 2):
            left = level[i]
            right = level[i + 1] if i + 1 < len(level) else left
            try:
                merged = bytes.fromhex(left) + bytes.fromhex(right)
            except ValueError:
                merged = (left + right).encode()
            nxt.append(hashlib.sha256(merged).hexdigest())
        level = nxt
    return level[0]


def _sort_key(rule: Dict[str, Any]) -> str:
    return "|".join([rule["policyID"], rule["nodeID"], rule["commandRegex"],
                     str(rule["priority"]), str(rule["executionTime"])])


def node_policies_root(rules: Sequence[Dict[str, Any]]) -> str:
    """The DM's rootHash once it holds `rules` (sorted by nodePolicySortKey first)."""
    return merkle_root([node_policy_hash(r) for r in sorted(rules, key=_sort_key)])


# strings.TrimSpace: Unicode White_Space (not Python's str.strip(), which also takes
# \x1c-\x1f)
_GO_SPACE = ("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
             "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_GONE = (errno.ENOENT, errno.ESRCH)  # procmonitor.go isTransientProcError


def _read_comm(path: str) -> str:
    """os.ReadFile + strings.TrimSpace; raises OSError.  Go's regexp reads each byte that
    is not UTF-8 as one U+FFFD ("replace" makes one of a cut-off sequence, "\xe2\x80")."""
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", errors="surrogateescape")
    return "".join("\ufffd" if "\udc80" <= c <= "\udcff" else c for c in text).strip(_GO_SPACE)


def _numeric_dirs(directory: str) -> List[int]:
    """The numeric sub-folders of `directory` (os.ReadDir, IsDir, strconv.Atoi); raises
    OSError when the folder cannot be read."""
    out = []
    with os.scandir(directory) as entries:
        for entry in entries:
            name = entry.name
            if name.isascii() and name.isdigit():
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        out.append(int(name))
    return out


def scan_processes(proc_root: str = "/proc") -> List[Tuple[int, str]]:
    """(pid, comm) of every thread-group leader, by PID (v1.3.0 procScanSource.Snapshot:
    a process whose comm cannot be read, for whatever reason, is left out).  Raises
    OSError when proc_root cannot be listed."""
    out = []
    for pid in _numeric_dirs(proc_root):
        with contextlib.suppress(OSError):
            out.append((pid, _read_comm(f"{proc_root}/{pid}/comm")))
    return sorted(out)


def scan_tasks(proc_root: str = "/proc") -> List[Tuple[int, int, str]]:
    """(tgid, tid, comm) of every thread, by TID (procTaskSource.Snapshot after PR #135).
    A task gone mid-scan (ENOENT, ESRCH) is left out; any other error is raised
    (OSError): an incomplete snapshot must not pass for the whole."""
    out = []
    for tgid in _numeric_dirs(proc_root):
        try:
            tids = _numeric_dirs(f"{proc_root}/{tgid}/task")
        except OSError as e:
            if e.errno in _GONE:
                continue
            raise
        for tid in tids:
            try:
                out.append((tgid, tid, _read_comm(f"{proc_root}/{tgid}/task/{tid}/comm")))
            except OSError as e:
                if e.errno not in _GONE:
                    raise
    return sorted(out, key=lambda t: t[1])


def _intent(rule: Dict[str, Any], task_id: int) -> Dict[str, Any]:
    return {"priority": rule["priority"], "execution_time": rule["executionTime"] & _UINT64,
            "pid": task_id, "command_regex": rule["commandRegex"]}


def _usable_patterns(rules: Sequence[Dict[str, Any]]
                     ) -> List[Tuple[Dict[str, Any], Pattern[str]]]:
    """Rules with their compiled regex; an empty or invalid regex is skipped (the DM logs
    "invalid commandRegex ... in node policy" and goes on)."""
    out = []
    for rule in rules:
        pattern = compile_re2(rule["commandRegex"]) if rule["commandRegex"] else None
        if pattern is not None:
            out.append((rule, pattern))
    return out


def resolve_rules(rules: Sequence[Dict[str, Any]], proc_root: str = "/proc",
                  match_threads: bool = False) -> List[Dict[str, Any]]:
    """resolveNodeSchedulingIntents: the node rules' part of a strategies GET.

    Leaders only (v1.3.0): rules in the order held, processes by PID (the real DM
    walks a Go map: any order), one entry per rule and matching process; /proc
    unreadable gives no entries (logged).  Thread-aware (PR #135): rules in their
    canonical (merkle) order, at most one entry per TID, the last matching rule's,
    sorted by TID; a scan error is raised (OSError) and the GET fails.
    """
    if not rules:
        return []
    if not match_threads:
        try:
            processes = scan_processes(proc_root)
        except OSError:
            return []
        return [_intent(rule, pid) for rule, pattern in _usable_patterns(rules)
                for pid, comm in processes
                if comm != PAUSE_COMMAND and pattern.search(comm)]
    tasks = scan_tasks(proc_root)
    by_tid: Dict[int, Dict[str, Any]] = {}
    for rule, pattern in _usable_patterns(sorted(rules, key=_sort_key)):
        for _, tid, comm in tasks:
            if comm != PAUSE_COMMAND and pattern.search(comm):
                by_tid[tid] = _intent(rule, tid)
    return [by_tid[tid] for tid in sorted(by_tid)]


# --- HTTP plumbing shared with testbed.fake_manager ------------------------------------


@dataclass
class HTTPRequest:
    method: str
    path: str  # without the query string
    query: str
    headers: Any  # http.client.HTTPMessage
    raw: bytes

    @property
    def authorization(self) -> str:
        return str(self.headers.get("Authorization") or "")


@dataclass
class HTTPResponse:
    status: int
    body: bytes
    content_type: str = "application/json"  # "" sends no Content-Type
    headers: Dict[str, str] = field(default_factory=dict)


def json_response(status: int, value: Any) -> HTTPResponse:
    return HTTPResponse(status, go_json(value))


def echo_not_found() -> HTTPResponse:
    """echo.ErrNotFound as rendered by echo's default error handler (echo v4.13:
    Content-Type without a charset)."""
    return HTTPResponse(404, go_json({"message": "Not Found"}))


# router.go updateAllowHeader: OPTIONS first, then the path's methods in this order
_ECHO_METHOD_ORDER = ("CONNECT", "DELETE", "GET", "HEAD", "PATCH", "POST", "PROPFIND", "PUT",
                      "TRACE", "REPORT")


def echo_allow(methods: Sequence[str]) -> str:
    return ", ".join(["OPTIONS", *(m for m in _ECHO_METHOD_ORDER if m in methods)])


def echo_method_not_allowed(allowed: Sequence[str]) -> HTTPResponse:
    return HTTPResponse(405, go_json({"message": "Method Not Allowed"}),
                        headers={"Allow": echo_allow(allowed)})


def echo_options(allowed: Sequence[str]) -> HTTPResponse:
    """echo's optionsMethodHandler: an OPTIONS request to a path that has routes."""
    return HTTPResponse(204, b"", "", {"Allow": echo_allow(allowed)})


Handler = Callable[[HTTPRequest], HTTPResponse]
Routes = Dict[str, Dict[str, Handler]]


def route(routes: Routes, request: HTTPRequest, web_ui: Optional[Handler] = None
          ) -> HTTPResponse:
    """echo's routing as both services set it up: under /api every miss is the group's
    404 catch-all; elsewhere a wrong method is 405 (OPTIONS: 204 with Allow), an
    unknown path 404 (or the web UI's SPA fallback for GET, when there is one)."""
    path = request.path
    methods = routes.get(path)
    if path == "/api" or path.startswith("/api/"):
        if methods is None or request.method not in methods:
            return echo_not_found()
        return methods[request.method](request)
    if methods is not None:
        if request.method in methods:
            return methods[request.method](request)
        if web_ui is None or request.method != "GET":
            return _wrong_method(request, sorted(methods))
    if web_ui is not None:
        if request.method == "GET":
            return web_ui(request)
        return _wrong_method(request, ["GET"])
    return echo_not_found()


def _wrong_method(request: HTTPRequest, allowed: Sequence[str]) -> HTTPResponse:
    if request.method == "OPTIONS":
        return echo_options(allowed)
    return echo_method_not_allowed(allowed)


def _record_body(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


class FakeHTTPServer(FakeServerBase, abc.ABC):
    """FakeServerBase with routes: subclasses answer requests in `dispatch`."""

    error_field = "error"

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 tls: Optional[ssl.SSLContext] = None) -> None:
        super().__init__(_make_handler(self), host, port, tls)
        self.fault_paths: Optional[Tuple[str, ...]] = None  # path prefixes; None = every path

    def _changed(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def requests(self, method: Optional[str] = None, path: Optional[str] = None
                 ) -> List[Received]:
        """Recorded requests, optionally only this method and/or this path (no query)."""
        with self._cond:
            return [r for r in self.received
                    if (method is None or r.method == method)
                    and (path is None or r.path.split("?", 1)[0] == path)]

    def _health(self, request: HTTPRequest) -> HTTPResponse:
        return json_response(200, {"status": "healthy", "timestamp": rfc3339_now(),
                                   "service": SERVICE_NAME})

    # --- behaviour, provided by subclasses --------------------------------------

    @abc.abstractmethod
    def dispatch(self, request: HTTPRequest) -> HTTPResponse:
        """The answer to one request (the routes)."""

    def error_response(self, status: int, message: str) -> HTTPResponse:
        return json_response(status, {"success": False, "error": message})

    def fault_401_message(self) -> str:
        return "unauthorized"

    def fault_applies(self, path: str) -> bool:
        prefixes = self.fault_paths
        return prefixes is None or any(path.startswith(p) for p in prefixes)


def _make_handler(api: FakeHTTPServer) -> type:
    class Handler(FakeServerHandler):
        def _read_body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                chunks: List[bytes] = []
                while True:
                    size_line = self.rfile.readline(1024)
                    size = int(size_line.split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline(1024)
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = 0
            return self.rfile.read(length) if length > 0 else b""

        def _send(self, resp: HTTPResponse) -> None:
            self.send_response(resp.status)
            if resp.content_type and self.command != "HEAD":  # Go sends none for HEAD
                self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(resp.body)))
            for name, value in resp.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(resp.body)

        def error_answer(self, status: int, message: str) -> None:
            if status == 401:
                message = api.fault_401_message()
            self._send(api.error_response(status, message))

        def raw_answer(self, status: int, data: bytes) -> None:
            self._send(HTTPResponse(status, data))

        def _fault(self, path: str) -> bool:
            """Apply a configured fault; True if the request was answered (or dropped)."""
            fault = api.fault_now()
            if fault is None or not api.fault_applies(path):
                return False
            return self.play_fault(fault)

        def _handle(self) -> None:
            raw = self._read_body()
            path, _, query = self.path.partition("?")
            request = HTTPRequest(self.command, path, query, self.headers, raw)
            api.record(Received(time.monotonic(), self.command, self.path, _record_body(raw),
                                request.authorization))
            if self._fault(path):
                return
            try:
                resp = api.dispatch(request)
            except Exception:  # a bug in the fake: say so loudly, answer like Go's recover
                traceback.print_exc(file=sys.stderr)
                resp = HTTPResponse(500, b"Internal Server Error\n", "text/plain; charset=utf-8")
            self._send(resp)

        def __getattr__(self, name: str) -> Any:
            # Go serves every method name (TRACE, PROPFIND, even "get"): echo routes it
            if name.startswith("do_"):
                return self._handle
            raise AttributeError(name)

    Handler.api = api
    return Handler


# --- the Decision Maker ---------------------------------------------------------------------

NODE_POLICY: Dict[str, Kind] = {"policyID": "string", "nodeID": "string",
                                "commandRegex": "string", "priority": "int",
                                "executionTime": "int64"}
NODE_POLICIES_REQUEST: Dict[str, Kind] = {"policies": ("list", NODE_POLICY)}
DELETE_NODE_POLICY_REQUEST: Dict[str, Kind] = {"policyId": "string", "all": "bool"}
TOKEN_REQUEST: Dict[str, Kind] = {"public_key": "string", "client_id": "string",
                                  "expired_at": "int64"}
SERVICE_NAME = "BSS Metrics API Server"
DM_VERSION = {"message": SERVICE_NAME, "version": "1.0.0",
              "endpoints": "/health, /version, POST_/api/v1/intents, "
                           "GET_/api/v1/scheduling/strategies"}
def _load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the JWT key must be an RSA private key")
    return key


class FakeDecisionMaker(FakeHTTPServer):
    """The per-node Decision Maker: node rules in, PIDs (or TIDs) resolved from /proc out."""

    def __init__(self, private_key_pem: bytes, host: str = "127.0.0.1", port: int = 0,
                 tls: Optional[ssl.SSLContext] = None, match_threads: bool = False,
                 proc_root: str = "/proc", token_lifetime: float = DM_TOKEN_LIFETIME) -> None:
        self._key = _load_private_key(private_key_pem)
        self.public_key_pem: bytes = self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.match_threads = match_threads  # "upstream's next change": each thread's comm
        self.proc_root = proc_root
        self.token_lifetime = token_lifetime  # the real DM: always 24 h
        # Its host's clock minus the real one, in seconds (the node's, so ours too when
        # the operator runs beside it): for the tokens it issues and those it checks.
        self.clock_skew = 0.0
        self.tokens_issued = 0
        self.restarts = 0
        self._rules: List[Dict[str, Any]] = []
        self._root_hash = ""  # zero value until the first POST or DELETE
        super().__init__(host, port, tls)
        self._routes: Routes = {
            "/health": {"GET": self._health},
            "/version": {"GET": self._version},
            "/metrics": {"GET": self._metrics},
            "/api/v1/auth/token": {"POST": self._token},
            "/api/v1/node-intents": {"POST": self._auth(self._post_rules),
                                     "DELETE": self._auth(self._delete_rules)},
            "/api/v1/node-intents/merkle": {"GET": self._auth(self._merkle)},
            "/api/v1/scheduling/strategies": {"GET": self._auth(self._strategies)},
        }
        for path, method in (("/api/v1/intents", "POST"), ("/api/v1/intents/merkle", "GET"),
                             ("/api/v1/intents", "DELETE"), ("/api/v1/metrics", "POST"),
                             ("/api/v1/runtime-config", "POST"),
                             ("/api/v1/runtime-config", "GET"), ("/api/v1/pods/pids", "GET")):
            self._routes.setdefault(path, {})[method] = self._auth(self._not_modelled)

    def start(self) -> FakeDecisionMaker:
        self._start()
        return self

    # --- helpers for tests --------------------------------------------------------

    def rules(self) -> List[Dict[str, Any]]:
        """The node rules held now, in the order of the last POST."""
        with self._cond:
            return [dict(r) for r in self._rules]

    def set_rules(self, rules: Sequence[Dict[str, Any]]) -> None:
        """Replace the rules as a POST would (missing fields get Go's zero values)."""
        full = [{name: r.get(name, zero_value(NODE_POLICY[name])) for name in RULE_FIELDS}
                for r in rules]
        with self._cond:
            self._rules = full
            self._root_hash = node_policies_root(full)
            self._cond.notify_all()

    def merkle_root(self) -> str:
        with self._cond:
            return self._root_hash

    def strategies(self) -> List[Dict[str, Any]]:
        """What the scheduler would read with a GET now (resolved against proc_root)."""
        return resolve_rules(self.rules(), self.proc_root, self.match_threads)

    def posts(self) -> List[Received]:
        """Every POST /api/v1/node-intents received (also rejected ones)."""
        return self.requests("POST", "/api/v1/node-intents")

    def deletes(self) -> List[Received]:
        return self.requests("DELETE", "/api/v1/node-intents")

    def wait_post(self, predicate: Callable[[List[Dict[str, Any]]], bool], timeout: float = 5.0,
                  after: int = 0) -> Received:
        """The first node-intents POST (index >= after) whose `policies` satisfy predicate."""
        def find() -> Optional[Received]:
            for r in self.posts()[after:]:
                body = r.body if isinstance(r.body, dict) else {}
                policies = body.get("policies")
                if isinstance(policies, list) and predicate(policies):
                    return r
            return None
        return self.wait_for(find, timeout)  # type: ignore[no-any-return]

    def restart(self, drop_connections: bool = True) -> None:
        """A DM restart: the rules live in memory only, so they are gone and the root is
        "" again.  Same key, so tokens issued before stay valid."""
        with self._cond:
            self._rules = []
            self._root_hash = ""
            self.restarts += 1
            self._cond.notify_all()
        if drop_connections:
            self.drop_connections()

    def issue_token(self, client_id: str = "gtp5g-operator") -> Tuple[str, int]:
        now = int(time.time() + self.clock_skew)
        exp = now + int(self.token_lifetime)
        claims: Dict[str, Any] = {"client_id": client_id, "iss": DM_ISSUER}
        if client_id:
            claims["sub"] = client_id  # RegisteredClaims: sub is omitempty
        claims.update({"exp": exp, "nbf": now, "iat": now})
        with self._cond:
            self.tokens_issued += 1
        return jwt.encode(claims, self._key, algorithm="RS256"), exp

    # --- behaviour ------------------------------------------------------------------

    def dispatch(self, request: HTTPRequest) -> HTTPResponse:
        return route(self._routes, request)

    def fault_401_message(self) -> str:
        return "Invalid or expired token: token has invalid claims: token is expired"

    def _success(self, data: Any = None) -> HTTPResponse:
        body: Dict[str, Any] = {"success": True}
        if data is not None:
            body["data"] = data
        body["timestamp"] = rfc3339_now()
        return json_response(200, body)

    def _auth(self, handler: Handler) -> Handler:
        def checked(request: HTTPRequest) -> HTTPResponse:
            header = request.authorization.strip(" \t")  # as Go's header parsing does
            if header == "":
                return self.error_response(401, "Authorization header is required")
            if not header.startswith("Bearer "):
                return self.error_response(401, "Authorization header must start with 'Bearer '")
            problem = golang_jwt_error(header[len("Bearer "):], self._key.public_key(),
                                       time.time() + self.clock_skew)
            if problem is not None:
                return self.error_response(401, "Invalid or expired token: " + problem)
            return handler(request)
        return checked

    def _version(self, request: HTTPRequest) -> HTTPResponse:
        return json_response(200, DM_VERSION)

    def _metrics(self, request: HTTPRequest) -> HTTPResponse:
        return HTTPResponse(200, b"# fake decision maker: no metrics\n",
                            "text/plain; version=0.0.4; charset=utf-8")

    def _not_modelled(self, request: HTTPRequest) -> HTTPResponse:
        return self.error_response(501, "not modelled by the fake decision maker")

    def _token(self, request: HTTPRequest) -> HTTPResponse:
        try:
            body = go_decode(request.raw, TOKEN_REQUEST)
        except GoJSONError:
            return self.error_response(400, "Invalid request payload")
        key = pkix_rsa_public_key(body["public_key"])
        if key is None or key.public_numbers() != self._key.public_key().public_numbers():
            # token_handler.go, trailing space included
            return self.error_response(401, "Public key verification failed ")
        token, exp = self.issue_token(body["client_id"])
        return self._success({"token": token, "expired_at": exp})

    def _post_rules(self, request: HTTPRequest) -> HTTPResponse:
        try:
            body = go_decode(request.raw, NODE_POLICIES_REQUEST)
        except GoJSONError:
            return self.error_response(400, "Invalid request payload")
        self.set_rules(body["policies"])
        return self._success()

    def _delete_rules(self, request: HTTPRequest) -> HTTPResponse:
        try:
            body = go_decode(request.raw, DELETE_NODE_POLICY_REQUEST)
        except GoJSONError:
            return self.error_response(400, "Invalid request payload")
        if body["all"]:
            self.set_rules([])
        elif body["policyId"] != "":
            with self._cond:
                self.set_rules([r for r in self._rules if r["policyID"] != body["policyId"]])
        else:
            return self.error_response(400, "policyId is required when 'all' is false")
        return self._success()

    def _merkle(self, request: HTTPRequest) -> HTTPResponse:
        return self._success({"rootHash": self.merkle_root()})

    def _strategies(self, request: HTTPRequest) -> HTTPResponse:
        try:
            scheduling = self.strategies()
        except OSError:  # thread-aware only: ListIntents fails on a scan error
            return self.error_response(500, "Failed to list scheduling intents")
        return json_response(200, {"success": True,
                                   "message": "Scheduling intents retrieved successfully",
                                   "timestamp": rfc3339_now(),
                                   "scheduling": scheduling})


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--key-dir", required=True, type=Path,
                    help="holds jwt_private_key.pem (made, with its public key, if missing)")
    ap.add_argument("--match-threads", action="store_true",
                    help="match each thread's own comm and list TIDs (upstream's next change)")
    ap.add_argument("--token-lifetime", type=float, default=DM_TOKEN_LIFETIME)
    ap.add_argument("--log-posts", action="store_true", help="print each node-intents POST")
    a = ap.parse_args()
    private = a.key_dir / "jwt_private_key.pem"
    if not private.exists():
        a.key_dir.mkdir(parents=True, exist_ok=True)
        make_keypair(a.key_dir)
    dm = FakeDecisionMaker(private.read_bytes(), host=a.host, port=a.port,
                           match_threads=a.match_threads, token_lifetime=a.token_lifetime).start()
    print(f"fake Gthulhu decision maker on {dm.url}", flush=True)
    seen = 0
    try:
        while True:
            time.sleep(0.2)
            posts = dm.posts()
            if a.log_posts:
                for r in posts[seen:]:
                    print(json.dumps({"at": time.time(), "body": r.body}, default=repr),
                          flush=True)
            seen = len(posts)
    except KeyboardInterrupt:
        dm.stop()


if __name__ == "__main__":
    main()
