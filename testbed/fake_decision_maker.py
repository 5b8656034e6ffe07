"""A strict fake of Gthulhu's 2026 per-node Decision Maker (DM) for tests and the demo.

Contract: the Decision Maker of Gthulhu since 2026-08, as the project's reference notes
describe it (not part of this repository).  Details beyond those notes were
read from Gthulhu's public sources (repository Gthulhu/Gthulhu, folder api/, and
its former home Gthulhu/api); each is cited where it is used:

- routes and the `/api` catch-all: api/decisionmaker/rest/handler.go (echo router;
  a group with middleware registers a 404 route for `/api/*`, so an unknown path
  and a known path with the wrong method both answer 404 {"message":"Not Found"}).
- node rules: api/decisionmaker/rest/node_policy_hdl.go (request structs, the
  "Invalid request payload" and "policyId is required when 'all' is false"
  errors, success answers without `data`) and
  api/decisionmaker/service/node_policy_svc.go (the whole list is replaced; the
  Merkle root over the sorted leaf hashes; rules with an empty regex or an
  invalid one are skipped; processes whose comm is "pause" are never matched).
- the Merkle tree: Gthulhu/api pkg/util/merkle.go (empty tree = sha256(""),
  odd node paired with itself, parent = sha256(raw(left) + raw(right))).  The
  root is "" only until the first POST or DELETE (zero value of the field).
- the /proc scan: api/decisionmaker/service/procmonitor.go (thread-group leaders,
  comm trimmed) and its successor (every /proc/<tgid>/task/<tid>/comm, sorted by
  TID): `match_threads=True`.
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
- request decoding: Go's encoding/json as used by JSONBind (json.NewDecoder().
  Decode): first JSON value only, keys matched case-insensitively, unknown keys
  ignored, `null` leaves a field unchanged, a wrong type (true, "1" or 1.5 for an
  int) is an error.  See go_decode().

Deliberate stand-ins: Python `re` (ASCII classes) for Go RE2, with the RE2-only
rejections of look-arounds, back-references, atomic groups and \\Z; processes are
listed by PID (the real DM iterates a Go map: random order).  The DM's other
routes (/api/v1/intents, metrics, runtime-config, pods/pids) check the token and
then answer 501: they are not modelled.

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
import base64
import contextlib
import errno
import hashlib
import json
import os
import re
import ssl
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Pattern, Sequence, Tuple, Union

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from testbed.fake_gthulhu import Received, make_keypair
from testbed.fake_http import FakeServerBase, FakeServerHandler
from testbed.go_regexp import compile_re2

__all__ = [
    "DM_ISSUER",
    "DM_TOKEN_LIFETIME",
    "EMPTY_ROOT",
    "FakeDecisionMaker",
    "GoJSONError",
    "Received",
    "compile_re2",
    "go_decode",
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

# --- Go encoding/json, the parts the handlers rely on ----------------------------------

Kind = Union[str, Tuple[str, Any], Dict[str, Any]]
"""A field's Go type: "string", "int", "int64", "bool", ("list", Kind) or a struct
given as {json name: Kind}."""

_INT_RANGES = {"int": (-(1 << 63), (1 << 63) - 1), "int64": (-(1 << 63), (1 << 63) - 1)}


class GoJSONError(ValueError):
    """What json.Decoder.Decode would have returned as an error."""


class _Obj(list):  # type: ignore[type-arg]
    """A JSON object as its (key, value) pairs, in order, duplicates kept."""


class _Slice(list):  # type: ignore[type-arg]
    """A decoded Go slice: its elements, and the backing array behind them.  Decoding
    into the same slice again (a duplicate key) reuses the backing array's elements
    without zeroing them: decode.go array() sets the length, never clears."""

    def __init__(self, visible: List[Any], backing: List[Any]) -> None:
        super().__init__(visible)
        self.backing = backing


def _zero(kind: Kind) -> Any:
    if isinstance(kind, dict):
        return {name: _zero(k) for name, k in kind.items()}
    if isinstance(kind, tuple):
        return _Slice([], [])
    return {"string": "", "int": 0, "int64": 0, "bool": False}[kind]


def _plain(value: Any) -> Any:
    """Decoded value without the slices' backing arrays."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _type_name(value: Any) -> str:
    if isinstance(value, _Obj):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    return "number"


def _fold_rune(char: str) -> str:
    """fold.go foldRune: the smallest rune of the character's case-fold orbit."""
    orbit, todo = {char}, [char]
    while todo:
        current = todo.pop()
        for other in (current.lower(), current.upper(), current.casefold()):
            if len(other) == 1 and other not in orbit:
                orbit.add(other)
                todo.append(other)
    return min(orbit)


def go_fold(name: str) -> str:
    """fold.go foldName: how a JSON key is compared with a field name when the exact
    name does not match (ASCII upper-cased; others by simple case folding, so the
    Kelvin sign matches k and the long s matches s)."""
    return "".join(c.upper() if c < "\x80" else _fold_rune(c) for c in name)


def _field(key: str, kind: Dict[str, Kind]) -> Optional[str]:
    if key in kind:
        return key
    folded = go_fold(key)
    return next((name for name in kind if go_fold(name) == folded), None)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _decode(value: Any, kind: Kind, where: str, into: Any) -> Any:
    """`value` decoded into the Go value `into` of type `kind` (null leaves a struct or a
    scalar unchanged and makes a slice nil)."""
    if isinstance(kind, dict):
        if value is None:
            return into
        if not isinstance(value, _Obj):
            raise GoJSONError(f"json: cannot unmarshal {_type_name(value)} into Go value {where}")
        result = dict(into)
        for key, item in value:
            name = _field(key, kind)
            if name is not None:  # unknown fields are ignored (no DisallowUnknownFields)
                result[name] = _decode(item, kind[name], f"{where}.{name}", result[name])
        return result
    if isinstance(kind, tuple):
        if value is None:
            return _Slice([], [])
        if not isinstance(value, list) or isinstance(value, _Obj):
            raise GoJSONError(f"json: cannot unmarshal {_type_name(value)} into Go value {where}")
        if not value:
            return _Slice([], [])  # an empty array: a new empty slice
        backing = list(into.backing if isinstance(into, _Slice) else into)
        for i, item in enumerate(value):
            base = backing[i] if i < len(backing) else _zero(kind[1])
            decoded = _decode(item, kind[1], f"{where}[{i}]", base)
            if i < len(backing):
                backing[i] = decoded
            else:
                backing.append(decoded)
        return _Slice(backing[:len(value)], backing)
    if value is None:
        return into
    if kind == "string":
        if isinstance(value, str):
            return _SURROGATE.sub("\ufffd", value)  # Go decodes a lone \ud800 as U+FFFD
    elif kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        # type() is int: excludes bool; json gives a float for 1.5, 1.0 and 1e3, which Go
        # refuses for an int as well
        if type(value) is int and low <= value <= high:
            return value
    else:
        raise AssertionError(f"unknown kind {kind!r}")
    raise GoJSONError(f"json: cannot unmarshal {_type_name(value)} into Go struct field "
                      f"{where} of type {kind}")


def _reject_constant(name: str) -> Any:
    raise GoJSONError(f"invalid character {name[0]!r} looking for beginning of value")


def go_decode(raw: bytes, schema: Dict[str, Kind]) -> Dict[str, Any]:
    """Decode a request body into the struct `schema` the way JSONBind does.

    Only the first JSON value is read (trailing bytes are ignored, as by
    json.Decoder); an empty body is an error (EOF); a top-level `null` gives the
    zero struct; a duplicate key decodes into what the first one left (merging
    objects, reusing slice elements).  Raises GoJSONError.
    """
    text = raw.decode("utf-8", errors="replace").lstrip(" \t\r\n")
    if not text:
        raise GoJSONError("EOF")
    decoder = json.JSONDecoder(object_pairs_hook=_Obj, parse_constant=_reject_constant)
    try:
        value, _ = decoder.raw_decode(text)
    except json.JSONDecodeError as e:
        raise GoJSONError(str(e)) from None
    return _plain(_decode(value, schema, "request", _zero(schema)))  # type: ignore[no-any-return]


def go_json(value: Any) -> bytes:
    """json.NewEncoder(w).Encode(value): compact, HTML characters escaped, newline."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return (text + "\n").encode()


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
    """os.ReadFile + strings.TrimSpace; raises OSError."""
    with open(path, "rb") as f:
        return f.read().decode("utf-8", errors="replace").strip(_GO_SPACE)


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
            fault = api.fault
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

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

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
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.S)


def pkix_rsa_public_key(pem: str) -> Optional[rsa.RSAPublicKey]:
    """util.PEMToRSAPublicKey: the first PEM block must be a PKIX "PUBLIC KEY" holding an
    RSA key; PKCS#1 ("RSA PUBLIC KEY"), other key types and garbage give None."""
    match = _PEM_BLOCK.search(pem.encode("utf-8", errors="replace"))
    if match is None or match.group(1) != b"PUBLIC KEY":
        return None
    try:
        key = serialization.load_der_public_key(base64.b64decode(match.group(2)))
    except (ValueError, TypeError):
        return None
    return key if isinstance(key, rsa.RSAPublicKey) else None


# --- golang-jwt/v5 (v5.3.0) ParseWithClaims, as the DM's middleware calls it ---------------

_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_GO_ALGS = {"ES256", "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512", "none",
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}  # RegisterSigningMethod
_RSA_HASHES = {"RS256": hashes.SHA256, "RS384": hashes.SHA384, "RS512": hashes.SHA512}
_JSON_STARTS = set('{["-0123456789tfn')


def go_b64_raw_url(segment: str) -> bytes:
    """base64.RawURLEncoding.DecodeString; ValueError with Go's text on bad input."""
    values = []
    for i, char in enumerate(segment):
        if char in "\r\n":
            continue  # the Go decoder skips new lines
        if char not in _B64URL:
            raise ValueError(f"illegal base64 data at input byte {i}")
        values.append(char)
    if len(values) % 4 == 1:
        raise ValueError(f"illegal base64 data at input byte {len(segment) - 1}")
    text = "".join(values)
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _go_quote_char(byte: int) -> str:
    """encoding/json quoteChar: how a syntax error names the offending byte."""
    if byte == ord("'"):
        return "'\\''"
    if byte == ord('"'):
        return "'\"'"
    text = json.dumps(chr(byte))[1:-1] if byte < 0x80 else f"\\u{byte:04x}"
    return "'" + (chr(byte) if 0x20 <= byte < 0x7F else text) + "'"


def go_unmarshal_object(data: bytes, go_type: str) -> Dict[str, Any]:
    """json.Unmarshal into an object of `go_type`; ValueError with Go's text.  The text
    is Go's for an empty or truncated input, a bad first character and a value that is
    not an object; other syntax errors get a Go-like approximation."""
    stripped = data.lstrip(b" \t\r\n")
    if stripped and chr(stripped[0]) not in _JSON_STARTS:
        raise ValueError(f"invalid character {_go_quote_char(stripped[0])} "
                         "looking for beginning of value")
    try:
        value = json.loads(data.decode("utf-8", errors="replace"),
                           parse_constant=_reject_constant)
    except (json.JSONDecodeError, GoJSONError) as e:
        if isinstance(e, json.JSONDecodeError) and e.pos >= len(e.doc.rstrip()):
            raise ValueError("unexpected end of JSON input") from None
        raise ValueError(f"invalid character in JSON input ({e})") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"json: cannot unmarshal {_type_name(value)} into Go value of type "
                         + go_type)
    return value


def _numeric_date(value: Any) -> Optional[float]:
    """NumericDate.UnmarshalJSON: a number, or a string holding one (json.Number)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("could not parse NumericData")
    try:
        return float(int(float(value)))  # truncated to jwt.TimePrecision (1 s)
    except ValueError:
        raise ValueError("could not parse NumericData") from None


def golang_jwt_error(token: str, key: rsa.RSAPublicKey, now: float) -> Optional[str]:
    """The error golang-jwt's ParseWithClaims gives for `token` with the DM's key
    function (any RSA PKCS#1 v1.5 method; anything else is "unexpected signing method"),
    checked in the library's order; None for a valid token."""
    parts = token.split(".")
    if len(parts) != 3:
        return "token is malformed: token contains an invalid number of segments"
    decoded: List[Any] = []
    # the header into map[string]interface {}, the claims into the middleware's Claims
    for part, what, go_type in ((parts[0], "header", "map[string]interface {}"),
                                (parts[1], "claim", "rest.Claims")):
        try:
            raw = go_b64_raw_url(part)
        except ValueError as e:
            return f"token is malformed: could not base64 decode {what}: {e}"
        try:
            decoded.append(go_unmarshal_object(raw, go_type))
        except ValueError as e:
            return f"token is malformed: could not JSON decode {what}: {e}"
    header, claims = decoded
    try:
        exp, nbf = (_numeric_date(claims.get(name)) for name in ("exp", "nbf"))
    except ValueError as e:
        return f"token is malformed: could not JSON decode claim: {e}"
    alg = header.get("alg")
    if not isinstance(alg, str):
        return "token is unverifiable: signing method (alg) is unspecified"
    if alg not in _GO_ALGS:
        return "token is unverifiable: signing method (alg) is unavailable"
    try:
        signature = go_b64_raw_url(parts[2])
    except ValueError as e:
        return f"token is malformed: could not base64 decode signature: {e}"
    if alg not in _RSA_HASHES:
        return ("token is unverifiable: error while executing keyfunc: "
                f"unexpected signing method: {alg}")
    try:
        key.verify(signature, f"{parts[0]}.{parts[1]}".encode("latin-1"), padding.PKCS1v15(),
                   _RSA_HASHES[alg]())
    except (InvalidSignature, ValueError):
        return "token signature is invalid: crypto/rsa: verification error"
    problems = []
    if exp is not None and not now < exp:
        problems.append("token is expired")
    if nbf is not None and now < nbf:
        problems.append("token is not valid yet")
    return "token has invalid claims: " + ", ".join(problems) if problems else None


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
        full = [{name: r.get(name, _zero(NODE_POLICY[name])) for name in RULE_FIELDS}
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
        now = int(time.time())
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
                                       time.time())
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
