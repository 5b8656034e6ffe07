"""A strict fake of Gthulhu's 2026 cluster Manager for tests and the demo.

Contract: Gthulhu's Manager as the project's reference notes describe it (not part of
this repository).  Details
beyond it come from Gthulhu's public sources (repository Gthulhu/Gthulhu, folder api/):

- routes, permission keys and the `/api` catch-all: api/manager/rest/routes.go and
  api/docs/manager/swagger.yaml (keys "node_scheduling_policy.create|read|update|
  delete", "node_scheduling_intent.read|delete", "user.password.change", ...);
  api/manager/migration/009_add_node_scheduling_policy_permissions.up.json gives the
  node-policy keys to the admin role only.
- login/refresh/logout and token checks: api/manager/rest/auth_hdl.go and
  api/manager/service/auth_svc.go: 400 "Invalid request body", 422 "Username and
  password are required", 401 "user not found" / "invalid password" / "user is
  inactive"; access tokens RS256, 1 minute, claims uid, needChangePassword,
  tokenVersion, tokenType, iss "bss-api-server", sub = uid; refresh tokens 24 h
  with a jti, stored hashed per user, revoked when used and pruned at the next
  issue (so a reuse is 401 "refresh token not found"); 401 "invalid or expired
  token", "invalid token type", "invalid refresh token", "token revoked"; 403
  "password change required" (decided from the token's needChangePassword claim,
  so a token issued before the password change keeps getting it: log in or refresh
  again), 403 "permission denied".
- the Authorization header: api/manager/rest/middleware.go: 401 "Missing
  Authorization header", "Invalid Authorization header format".
- node scheduling policies: api/manager/rest/node_policy_hdl.go and
  api/manager/service/node_policy_svc.go: POST/PUT answer no `data`, DELETE answers
  "data":{}; "Policy ID is required" (400); a malformed policyId is a plain error
  (500 "Internal Server Error"); an id that is not one of the caller's policies is
  404 "node policy not found or you don't have permission to update it" (or "...
  delete it"), checked before the nodes; nodes are resolved with exact
  nodeNames (api/manager/k8s_adapter/adapter.go QueryNodesBySelectors), label
  nodeSelectors, draSelectors (no ResourceSlices here: never match), AND-ed; none
  -> 404 "no nodes match the policy criteria".  Responses use Go's omitempty: a
  policy with priority 0 has no "priority" key.
- policies are Kubernetes custom resources (api/manager/repository/
  cr_node_policy_repo.go), users and refresh sessions live in MongoDB and the JWT
  key in the config: a real restart loses none of them.  restart() therefore keeps
  everything by default; restart(lose_tokens=True) also gives the Manager a new key
  and forgets refresh sessions (a redeploy with a fresh key).
- pushing to Decision Makers (optional, `decision_makers={node: FakeDecisionMaker or
  (url, dm public key PEM)}`), over HTTP like api/manager/client/deicison_maker.go:
  a create sends only the NEW policy's rules to each matched node's DM, which
  REPLACES the DM's list (a quirk of the real Manager until its reconciler runs);
  an update first DELETEs the old policyId on its nodes, then sends the new rules
  the same way; a delete DELETEs {"policyId"}.  A failed push makes the create or
  update answer 500 although the policy was saved.  sync() is the reconciler
  (api/manager/app/rest_app.go every 30 s; the node part compares the DM's Merkle
  root with the expected one and re-sends all of that node's rules, or DELETEs all
  when there are none); `reconcile_interval` runs it in the background.

Other Manager routes (users, roles, strategies, pod routes, ...) are not modelled:
after the token check they answer 501.  Faults as in testbed.fake_decision_maker.

Run it alone:
  python3 -m testbed.fake_manager --port 8081 --key-dir DIR --user admin:secret \\
      --node "$(hostname)" [--dm NODE=URL]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from testbed.fake_decision_maker import (
    EMPTY_ROOT,
    SERVICE_NAME,
    FakeDecisionMaker,
    FakeHTTPServer,
    GoJSONError,
    HTTPRequest,
    HTTPResponse,
    Kind,
    Routes,
    go_decode,
    json_response,
    node_policies_root,
    rfc3339_now,
    route,
)
from testbed.fake_gthulhu import Received, make_keypair

__all__ = [
    "ALL_NODE_POLICY_PERMISSIONS",
    "DEFAULT_PERMISSIONS",
    "MANAGER_ISSUER",
    "FakeManager",
    "Received",
    "make_keypair",
]

MANAGER_ISSUER = "bss-api-server"
PERM_NODE_POLICY_CREATE = "node_scheduling_policy.create"
PERM_NODE_POLICY_READ = "node_scheduling_policy.read"
PERM_NODE_POLICY_UPDATE = "node_scheduling_policy.update"
PERM_NODE_POLICY_DELETE = "node_scheduling_policy.delete"
PERM_NODE_INTENT_READ = "node_scheduling_intent.read"
PERM_NODE_INTENT_DELETE = "node_scheduling_intent.delete"
PERM_CHANGE_OWN_PASSWORD = "user.password.change"
PERM_CHANGE_USER_PERMISSION = "user.permission.update"
ALL_NODE_POLICY_PERMISSIONS = frozenset({
    PERM_NODE_POLICY_CREATE, PERM_NODE_POLICY_READ, PERM_NODE_POLICY_UPDATE,
    PERM_NODE_POLICY_DELETE, PERM_NODE_INTENT_READ, PERM_NODE_INTENT_DELETE})
DEFAULT_PERMISSIONS = ALL_NODE_POLICY_PERMISSIONS | {PERM_CHANGE_OWN_PASSWORD}
# VerifyJWTToken lets these through while a password change is pending (ChangeUserPermission
# in the source read; ChangeOwnPassword too, or the change itself could never be made)
_ALLOWED_BEFORE_PASSWORD_CHANGE = frozenset({PERM_CHANGE_USER_PERMISSION,
                                             PERM_CHANGE_OWN_PASSWORD})

USER_STATUS_ACTIVE, USER_STATUS_INACTIVE, USER_STATUS_WAIT_CHANGE_PASSWORD = 1, 2, 3
INTENT_STATE_INITIALIZED, INTENT_STATE_SENT = 1, 2

LABEL_SELECTOR: Dict[str, Kind] = {"key": "string", "value": "string"}
DRA_SELECTOR: Dict[str, Kind] = {"deviceClass": "string",
                                 "attributes": ("list", LABEL_SELECTOR)}
CREATE_POLICY: Dict[str, Kind] = {
    "nodeSelectors": ("list", LABEL_SELECTOR), "nodeNames": ("list", "string"),
    "draSelectors": ("list", DRA_SELECTOR), "commandRegex": "string", "priority": "int",
    "executionTime": "int64"}
UPDATE_POLICY: Dict[str, Kind] = {"policyId": "string", **CREATE_POLICY}
DELETE_POLICY: Dict[str, Kind] = {"policyId": "string"}
DELETE_INTENTS: Dict[str, Kind] = {"intentIds": ("list", "string")}
LOGIN: Dict[str, Kind] = {"username": "string", "password": "string"}
REFRESH: Dict[str, Kind] = {"refreshToken": "string"}
CHANGE_PASSWORD: Dict[str, Kind] = {"oldPassword": "string", "newPassword": "string"}
MANAGER_VERSION = {"message": SERVICE_NAME, "version": "1.0.0",
                   "endpoints": "/api/v1/auth/token (POST), /api/v1/metrics (POST), "
                                "/api/v1/pods/pids (GET), /api/v1/scheduling/strategies "
                                "(GET, POST), /health (GET), /static/ (Frontend)"}
INDEX_HTML = (b"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"UTF-8\">"
              b"<title>Gthulhu</title></head><body><div id=\"root\"></div>"
              b"<!-- fake Gthulhu Manager web UI --></body></html>\n")

_oid_lock = threading.Lock()
_oid_counter = int.from_bytes(os.urandom(3), "big")
_OID_PROCESS = os.urandom(5)


def new_object_id() -> str:
    """bson.NewObjectID().Hex(): 4 bytes of seconds, 5 random bytes, a 3-byte counter."""
    global _oid_counter
    with _oid_lock:
        _oid_counter = (_oid_counter + 1) & 0xFFFFFF
        counter = _oid_counter
    return (int(time.time()).to_bytes(4, "big") + _OID_PROCESS
            + counter.to_bytes(3, "big")).hex()


def parse_object_id(text: str) -> Optional[str]:
    """bson.ObjectIDFromHex: exactly 24 hex digits (either case); the canonical form."""
    if len(text) != 24:
        return None
    try:
        return bytes.fromhex(text).hex()
    except ValueError:
        return None


def _xid() -> str:
    """A 20-character xid-like jti."""
    alphabet = "0123456789abcdefghijklmnopqrstuv"
    return "".join(secrets.choice(alphabet) for _ in range(20))


class _HTTPStatusError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class _Session:
    token_hash: str
    expires_at: int
    revoked: bool = False


@dataclass
class _User:
    name: str
    uid: str
    password: str
    permissions: Set[str]
    must_change_password: bool
    active: bool = True
    roles: Optional[List[str]] = None
    token_version: int = 0
    sessions: Dict[str, _Session] = field(default_factory=dict)

    @property
    def status(self) -> int:
        if not self.active:
            return USER_STATUS_INACTIVE
        return USER_STATUS_WAIT_CHANGE_PASSWORD if self.must_change_password \
            else USER_STATUS_ACTIVE


@dataclass
class _Policy:
    id: str
    creator: str  # uid
    node_selectors: List[Dict[str, str]]
    node_names: List[str]
    dra_selectors: List[Dict[str, Any]]
    command_regex: str
    priority: int
    execution_time: int


@dataclass
class _Intent:
    id: str
    policy_id: str
    creator: str
    node_id: str
    command_regex: str
    priority: int
    execution_time: int
    state: int = INTENT_STATE_INITIALIZED

    def rule(self) -> Dict[str, Any]:
        """As SendNodeSchedulingPolicies puts it on the wire to the DM."""
        return {"policyID": self.policy_id, "nodeID": self.node_id,
                "commandRegex": self.command_regex, "priority": self.priority,
                "executionTime": self.execution_time}


class _DMClient:
    """The Manager's Decision Maker client (deicison_maker.go), over HTTP."""

    def __init__(self, url: str, public_key_pem: bytes, client_id: str,
                 context: Optional[ssl.SSLContext] = None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.public_key_pem = public_key_pem
        self.client_id = client_id
        self.context = context
        self.timeout = timeout
        self._token: Optional[Tuple[str, float]] = None

    def _call(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = "Bearer " + self.token()
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout,
                                        context=self.context) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            if auth and e.code == 401:
                self._token = None
            raise RuntimeError(f"decision maker {self.url} returned non-OK status: "
                               f"{e.code}") from None
        return json.loads(raw) if raw else None

    def token(self) -> str:
        if self._token is not None and time.time() < self._token[1] - 60:
            return self._token[0]
        answer = self._call("POST", "/api/v1/auth/token",
                            {"public_key": self.public_key_pem.decode(),
                             "client_id": self.client_id}, auth=False)
        data = answer["data"]
        self._token = (data["token"], float(data["expired_at"]))
        return str(data["token"])

    def send(self, rules: List[Dict[str, Any]]) -> None:
        self._call("POST", "/api/v1/node-intents", {"policies": rules})

    def delete(self, policy_id: Optional[str] = None) -> None:
        body = {"all": True} if policy_id is None else {"policyId": policy_id}
        self._call("DELETE", "/api/v1/node-intents", body)

    def merkle(self) -> str:
        return str(self._call("GET", "/api/v1/node-intents/merkle")["data"]["rootHash"])


DMSpec = Union[FakeDecisionMaker, Tuple[str, bytes]]
UserHandler = Callable[[HTTPRequest, _User, Dict[str, Any]], HTTPResponse]


class FakeManager(FakeHTTPServer):
    """The cluster Manager: users and tokens, node scheduling policies, DM pushes."""

    def __init__(self, users: Dict[str, Dict[str, Any]],
                 nodes: Union[Iterable[str], Dict[str, Dict[str, str]]],
                 private_key_pem: Optional[bytes] = None, host: str = "127.0.0.1",
                 port: int = 0, tls: Optional[ssl.SSLContext] = None,
                 access_token_lifetime: float = 60.0,
                 refresh_token_lifetime: float = 24 * 3600.0, web_ui: bool = True,
                 decision_makers: Optional[Dict[str, DMSpec]] = None,
                 reconcile_interval: Optional[float] = None,
                 client_id: str = "gthulhu-manager") -> None:
        """users: {name: {"password": str, "permissions": set of permission keys (default
        DEFAULT_PERMISSIONS), "must_change_password": bool, "active": bool, "roles": [..]}};
        nodes: the Kubernetes node names, or {name: {label: value}}."""
        if private_key_pem is None:
            self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            key = serialization.load_pem_private_key(private_key_pem, password=None)
            if not isinstance(key, rsa.RSAPrivateKey):
                raise ValueError("the Manager's JWT key must be an RSA private key")
            self._key = key
        self._users: Dict[str, _User] = {}
        for name, spec in users.items():
            self._users[name] = _User(
                name=name, uid=new_object_id(), password=str(spec.get("password", "")),
                permissions=set(spec.get("permissions", DEFAULT_PERMISSIONS)),
                must_change_password=bool(spec.get("must_change_password", False)),
                active=bool(spec.get("active", True)), roles=spec.get("roles"))
        self.nodes: Dict[str, Dict[str, str]] = (
            {n: dict(labels) for n, labels in nodes.items()} if isinstance(nodes, dict)
            else {n: {} for n in nodes})
        self.access_token_lifetime = access_token_lifetime
        self.refresh_token_lifetime = refresh_token_lifetime
        # claims left out of access tokens (a build whose tokens say only "exp", say)
        self.access_claims_omitted: Set[str] = set()
        self.web_ui = web_ui
        self._policies: Dict[str, _Policy] = {}
        self._intents: Dict[str, _Intent] = {}
        self._issued_access: Set[str] = set()
        self._expired_access: Set[str] = set()
        self.tokens_issued = 0
        self.restarts = 0
        self._dms: Dict[str, _DMClient] = {}
        self._reconcile_interval = reconcile_interval
        self._reconcile_stop = threading.Event()
        self.sync_errors: List[str] = []
        super().__init__(host, port, tls)
        for node, dm in (decision_makers or {}).items():
            self.link_decision_maker(node, dm, client_id)
        self._routes: Routes = {
            "/health": {"GET": self._health},
            "/version": {"GET": self._version},
            "/api/v1/auth/login": {"POST": self._login},
            "/api/v1/auth/refresh": {"POST": self._refresh},
            "/api/v1/auth/logout": {"POST": self._logout},
            "/api/v1/auth/logout-all": {"POST": self._auth("", self._logout_all)},
            "/api/v1/auth/validate": {"GET": self._auth("", self._validate)},
            "/api/v1/users/self": {"GET": self._auth("", self._self_user)},
            "/api/v1/users/self/password": {
                "PUT": self._auth(PERM_CHANGE_OWN_PASSWORD, self._change_password)},
            "/api/v1/node-scheduling-policies": {
                "POST": self._auth(PERM_NODE_POLICY_CREATE, self._create_policy),
                "PUT": self._auth(PERM_NODE_POLICY_UPDATE, self._update_policy),
                "DELETE": self._auth(PERM_NODE_POLICY_DELETE, self._delete_policy)},
            "/api/v1/node-scheduling-policies/self": {
                "GET": self._auth(PERM_NODE_POLICY_READ, self._list_policies)},
            "/api/v1/node-scheduling-intents/self": {
                "GET": self._auth(PERM_NODE_INTENT_READ, self._list_intents)},
            "/api/v1/node-scheduling-intents": {
                "DELETE": self._auth(PERM_NODE_INTENT_DELETE, self._delete_intents)},
        }
        not_modelled = self._auth("", self._not_modelled)
        for path, methods in (
                ("/api/v1/users", ("POST", "GET")), ("/api/v1/users/password", ("PUT",)),
                ("/api/v1/users/permissions", ("PUT",)),
                ("/api/v1/roles", ("POST", "PUT", "DELETE", "GET")),
                ("/api/v1/permissions", ("GET",)),
                ("/api/v1/strategies", ("POST", "PUT", "DELETE")),
                ("/api/v1/strategies/self", ("GET",)), ("/api/v1/intents/self", ("GET",)),
                ("/api/v1/intents", ("DELETE",)), ("/api/v1/nodes", ("GET",)),
                ("/api/v1/metrics", ("POST",)),
                ("/api/v1/pod-scheduling-metrics", ("POST", "GET", "PUT", "DELETE"))):
            for method in methods:
                self._routes.setdefault(path, {})[method] = not_modelled

    def start(self) -> FakeManager:
        self._start()
        if self._reconcile_interval:
            threading.Thread(target=self._reconcile_loop, daemon=True).start()
        return self

    def stop(self) -> None:
        self._reconcile_stop.set()
        super().stop()

    # --- helpers for tests --------------------------------------------------------

    def link_decision_maker(self, node: str, spec: DMSpec,
                            client_id: str = "gthulhu-manager") -> None:
        """Let the Manager push `node`'s rules to this DM (a fake, or (url, public PEM))."""
        if isinstance(spec, FakeDecisionMaker):
            client = _DMClient(spec.url, spec.public_key_pem, client_id,
                               ssl._create_unverified_context())
        else:
            client = _DMClient(spec[0], spec[1], client_id, ssl._create_unverified_context())
        with self._cond:
            self._dms[node] = client

    def user_id(self, name: str) -> str:
        return self._users[name].uid

    def policies(self, user: Optional[str] = None) -> List[Dict[str, Any]]:
        """Every stored policy (or only those `user` created), oldest first."""
        with self._cond:
            uid = None if user is None else self._users[user].uid
            return [{"id": p.id, "user": self._user_by_uid(p.creator).name,
                     "nodeNames": list(p.node_names), "nodeSelectors": list(p.node_selectors),
                     "commandRegex": p.command_regex, "priority": p.priority,
                     "executionTime": p.execution_time}
                    for p in sorted(self._policies.values(), key=lambda p: p.id)
                    if uid is None or p.creator == uid]

    def add_policy(self, user: str, node_names: Sequence[str], command_regex: str,
                   priority: int = 1, execution_time: int = 20_000_000) -> str:
        """A policy `user` made by hand (the web UI, say); its id.  Not pushed to DMs."""
        with self._cond:
            policy = _Policy(new_object_id(), self._users[user].uid, [], list(node_names), [],
                             command_regex, priority, execution_time)
            self._policies[policy.id] = policy
            self._cond.notify_all()
        return policy.id

    def edit_policy(self, policy_id: str, command_regex: str, priority: int) -> None:
        """A person changes a policy by hand (the web UI's edit, not pushed to DMs)."""
        with self._cond:
            policy = self._policies[policy_id]
            policy.command_regex, policy.priority = command_regex, priority
            self._cond.notify_all()

    def intents(self, node: Optional[str] = None) -> List[Dict[str, Any]]:
        """The per-node resolutions of the policies (NodeSchedulingIntent CRs)."""
        with self._cond:
            return [{"id": i.id, "policyId": i.policy_id, "nodeId": i.node_id,
                     **i.rule(), "state": i.state}
                    for i in sorted(self._intents.values(), key=lambda i: i.id)
                    if node is None or i.node_id == node]

    def posts(self) -> List[Received]:
        return self.requests("POST", "/api/v1/node-scheduling-policies")

    def expire_access_tokens(self) -> None:
        """Every access token issued so far now gets 401 "invalid or expired token"."""
        with self._cond:
            self._expired_access |= self._issued_access
            self._cond.notify_all()

    def must_change_password(self, user: str) -> bool:
        with self._cond:
            return self._users[user].must_change_password

    def reset_password(self, user: str, new_password: str) -> None:
        """What an admin's PUT /api/v1/users/password does: the user must change it."""
        with self._cond:
            u = self._users[user]
            u.password, u.must_change_password = new_password, True

    def revoke_sessions(self, user: str) -> None:
        """POST /auth/logout-all for `user`: every token of the user is revoked."""
        with self._cond:
            u = self._users[user]
            u.token_version += 1
            u.sessions.clear()

    def restart(self, lose_tokens: bool = False, drop_connections: bool = True) -> None:
        """A Manager restart.  Policies (custom resources), users and refresh sessions
        (MongoDB) and the key (config) all survive, as in the real one; lose_tokens=True
        models a redeploy with a new key: every token is then 401 and refresh sessions
        are gone."""
        with self._cond:
            self.restarts += 1
            if lose_tokens:
                self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                for u in self._users.values():
                    u.sessions.clear()
                self._issued_access.clear()
                self._expired_access.clear()
            self._cond.notify_all()
        if drop_connections:
            self.drop_connections()

    def sync(self) -> Dict[str, str]:
        """One pass of the real reconciler over the linked DMs: {node: what it did}."""
        with self._cond:
            dms = dict(self._dms)
            per_node: Dict[str, List[_Intent]] = {}
            for i in sorted(self._intents.values(), key=lambda i: i.id):
                per_node.setdefault(i.node_id, []).append(i)
        done: Dict[str, str] = {}
        for node, client in dms.items():
            intents = per_node.get(node, [])
            expected = node_policies_root([i.rule() for i in intents]) if intents \
                else EMPTY_ROOT
            try:
                if client.merkle() == expected:
                    done[node] = "in sync"
                    continue
                if not intents:
                    client.delete()
                    done[node] = "deleted all"
                    continue
                client.send([i.rule() for i in intents])
                self._mark_sent(intents)
                done[node] = f"sent {len(intents)}"
            except (OSError, RuntimeError, ValueError, KeyError) as e:
                done[node] = f"error: {e}"
                with self._cond:
                    self.sync_errors.append(f"{node}: {e}")
        return done

    # --- behaviour ------------------------------------------------------------------

    def dispatch(self, request: HTTPRequest) -> HTTPResponse:
        return route(self._routes, request, self._index if self.web_ui else None)

    def fault_401_message(self) -> str:
        return "invalid or expired token"

    def _reconcile_loop(self) -> None:
        assert self._reconcile_interval
        while not self._reconcile_stop.wait(self._reconcile_interval):
            self.sync()

    def _user_by_uid(self, uid: str) -> _User:
        for u in self._users.values():
            if u.uid == uid:
                return u
        raise _HTTPStatusError(401, "user not found")

    def _success(self, data: Any = None) -> HTTPResponse:
        body: Dict[str, Any] = {"success": True}
        if data is not None:
            body["data"] = data
        body["timestamp"] = rfc3339_now()
        return json_response(200, body)

    def _issue_pair(self, user: _User) -> Dict[str, str]:
        """issueTokenPair: caller holds the lock."""
        now = int(time.time())
        common = {"uid": user.uid, "needChangePassword": user.must_change_password,
                  "tokenVersion": user.token_version}
        claims = {**common, "tokenType": "access", "iss": MANAGER_ISSUER, "sub": user.uid,
                  "exp": int(now + self.access_token_lifetime), "nbf": now, "iat": now}
        access = jwt.encode({k: v for k, v in claims.items()
                             if k not in self.access_claims_omitted}, self._key,
                            algorithm="RS256")
        jti = _xid()
        refresh_exp = int(now + self.refresh_token_lifetime)
        refresh = jwt.encode({**common, "tokenType": "refresh", "iss": MANAGER_ISSUER,
                              "sub": user.uid, "exp": refresh_exp, "nbf": now, "iat": now,
                              "jti": jti}, self._key, algorithm="RS256")
        user.sessions = {k: s for k, s in user.sessions.items()
                         if not s.revoked and not (s.expires_at > 0 and now >= s.expires_at)}
        user.sessions[jti] = _Session(hashlib.sha256(refresh.encode()).hexdigest(),
                                      refresh_exp)
        self._issued_access.add(access)
        self.tokens_issued += 1
        self._cond.notify_all()
        return {"token": access, "accessToken": access, "refreshToken": refresh}

    def _parse_token(self, token: str) -> Dict[str, Any]:
        """parseAndValidateToken: caller holds the lock."""
        if token in self._expired_access:
            raise _HTTPStatusError(401, "invalid or expired token")
        try:
            claims = jwt.decode(token, self._key.public_key(),
                                algorithms=["RS256", "RS384", "RS512"],
                                options={"verify_aud": False, "verify_iat": False})
        except jwt.InvalidTokenError:
            raise _HTTPStatusError(401, "invalid or expired token") from None
        return dict(claims)

    def _auth(self, permission: str, handler: UserHandler) -> Callable[[HTTPRequest],
                                                                        HTTPResponse]:
        """GetAuthMiddleware + VerifyJWTToken, in the source's order of checks."""
        def checked(request: HTTPRequest) -> HTTPResponse:
            header = request.authorization
            if header == "":
                return self.error_response(401, "Missing Authorization header")
            prefix = "Bearer "
            if len(header) <= len(prefix) or not header.startswith(prefix):
                return self.error_response(401, "Invalid Authorization header format")
            try:
                with self._cond:
                    claims = self._parse_token(header[len(prefix):])
                    if claims.get("tokenType") != "access":
                        raise _HTTPStatusError(401, "invalid token type")
                    if claims.get("needChangePassword") and \
                            permission not in _ALLOWED_BEFORE_PASSWORD_CHANGE:
                        raise _HTTPStatusError(403, "password change required")
                    user = self._user_by_uid(str(claims.get("uid", "")))
                    if claims.get("tokenVersion") != user.token_version:
                        raise _HTTPStatusError(401, "token revoked")
                    if permission and permission not in user.permissions:
                        raise _HTTPStatusError(403, "permission denied")
                return handler(request, user, claims)
            except _HTTPStatusError as e:
                return self.error_response(e.status, e.message)
        return checked

    def _decode(self, request: HTTPRequest, schema: Dict[str, Kind]) -> Dict[str, Any]:
        try:
            return go_decode(request.raw, schema)
        except GoJSONError:
            raise _HTTPStatusError(400, "Invalid request body") from None

    def _version(self, request: HTTPRequest) -> HTTPResponse:
        return json_response(200, MANAGER_VERSION)

    def _index(self, request: HTTPRequest) -> HTTPResponse:
        return HTTPResponse(200, INDEX_HTML, "text/html; charset=utf-8")

    def _not_modelled(self, request: HTTPRequest, user: _User, claims: Dict[str, Any]
                      ) -> HTTPResponse:
        return self.error_response(501, "not modelled by the fake manager")

    # --- auth and users ----------------------------------------------------------------

    def _login(self, request: HTTPRequest) -> HTTPResponse:
        try:
            body = self._decode(request, LOGIN)
            if body["username"] == "" or body["password"] == "":
                return self.error_response(422, "Username and password are required")
            with self._cond:
                user = self._users.get(body["username"])
                if user is None:
                    raise _HTTPStatusError(401, "user not found")
                if not user.active:
                    raise _HTTPStatusError(401, "user is inactive")
                if not secrets.compare_digest(user.password.encode(),
                                              body["password"].encode()):
                    raise _HTTPStatusError(401, "invalid password")
                return self._success(self._issue_pair(user))
        except _HTTPStatusError as e:
            return self.error_response(e.status, e.message)

    def _refresh_claims(self, request: HTTPRequest) -> Tuple[str, Dict[str, Any]]:
        body = self._decode(request, REFRESH)
        if body["refreshToken"] == "":
            raise _HTTPStatusError(400, "refreshToken is required")
        claims = self._parse_token(body["refreshToken"])
        if claims.get("tokenType") != "refresh" or not claims.get("jti"):
            raise _HTTPStatusError(401, "invalid refresh token")
        return body["refreshToken"], claims

    def _refresh(self, request: HTTPRequest) -> HTTPResponse:
        try:
            with self._cond:
                token, claims = self._refresh_claims(request)
                user = self._user_by_uid(str(claims.get("uid", "")))
                if user.token_version != claims.get("tokenVersion"):
                    raise _HTTPStatusError(401, "refresh token revoked")
                session = user.sessions.get(str(claims["jti"]))
                if session is None:
                    raise _HTTPStatusError(401, "refresh token not found")
                if session.revoked or (session.expires_at > 0
                                       and time.time() >= session.expires_at):
                    raise _HTTPStatusError(401, "refresh token revoked")
                if session.token_hash != hashlib.sha256(token.encode()).hexdigest():
                    raise _HTTPStatusError(401, "refresh token revoked")
                session.revoked = True
                return self._success(self._issue_pair(user))
        except _HTTPStatusError as e:
            return self.error_response(e.status, e.message)

    def _logout(self, request: HTTPRequest) -> HTTPResponse:
        try:
            with self._cond:
                token, claims = self._refresh_claims(request)
                user = self._user_by_uid(str(claims.get("uid", "")))
                session = user.sessions.get(str(claims["jti"]))
                if session is None or \
                        session.token_hash != hashlib.sha256(token.encode()).hexdigest():
                    raise _HTTPStatusError(401, "refresh token not found")
                session.revoked = True
            return self._success()
        except _HTTPStatusError as e:
            return self.error_response(e.status, e.message)

    def _logout_all(self, request: HTTPRequest, user: _User, claims: Dict[str, Any]
                    ) -> HTTPResponse:
        self.revoke_sessions(user.name)
        return self._success()

    def _validate(self, request: HTTPRequest, user: _User, claims: Dict[str, Any]
                  ) -> HTTPResponse:
        return self._success({"valid": True, "uid": user.uid,
                              "needChangePassword": bool(claims.get("needChangePassword"))})

    def _self_user(self, request: HTTPRequest, user: _User, claims: Dict[str, Any]
                   ) -> HTTPResponse:
        return self._success({"id": user.uid, "username": user.name,
                              "roles": list(user.roles) if user.roles else None,
                              "status": user.status})

    def _change_password(self, request: HTTPRequest, user: _User, claims: Dict[str, Any]
                         ) -> HTTPResponse:
        try:
            body = self._decode(request, CHANGE_PASSWORD)
            with self._cond:
                if not secrets.compare_digest(user.password.encode(),
                                              body["oldPassword"].encode()):
                    raise _HTTPStatusError(401, "invalid password")
                user.password = body["newPassword"]
                user.must_change_password = False  # Status = UserStatusActive
                self._cond.notify_all()
            return self._success()
        except _HTTPStatusError as e:
            return self.error_response(e.status, e.message)

    # --- node scheduling policies ---------------------------------------------------

    def _resolve_nodes(self, body: Dict[str, Any]) -> List[str]:
        """resolveNodesForPolicy: caller holds the lock."""
        selectors, names, dra = body["nodeSelectors"], body["nodeNames"], body["draSelectors"]
        if not selectors and not names and not dra:
            return []
        candidates: Optional[Set[str]] = None
        if selectors or names:
            wanted = set(names)
            found = set()
            for node, labels in self.nodes.items():
                if wanted and node not in wanted:
                    continue
                if all(s["key"] == "" or (s["key"] in labels and (
                        s["value"] == "" or labels[s["key"]] == s["value"]))
                       for s in selectors):
                    found.add(node)
            candidates = found
        if dra:
            candidates = set()  # no ResourceSlices in this fake cluster
        return sorted(candidates or ())

    def _push(self, intents: Sequence[_Intent]) -> None:
        """sendNodeIntentsToDMs: per node, only these intents (replacing the DM's list)."""
        by_node: Dict[str, List[_Intent]] = {}
        for i in intents:
            by_node.setdefault(i.node_id, []).append(i)
        for node, node_intents in by_node.items():
            client = self._dms.get(node)
            if client is None:
                continue  # no DM pod on that node: the intents stay "initialized"
            try:
                client.send([i.rule() for i in node_intents])
            except (OSError, RuntimeError, ValueError, KeyError) as e:
                raise _HTTPStatusError(500, "Internal Server Error") from e
            self._mark_sent(node_intents)

    def _mark_sent(self, intents: Sequence[_Intent]) -> None:
        with self._cond:
            for i in intents:
                if i.id in self._intents:
                    self._intents[i.id].state = INTENT_STATE_SENT
            self._cond.notify_all()

    def _notify_delete(self, intents: Sequence[_Intent]) -> None:
        """notifyDMsDeleteNodeIntents: DELETE {"policyId"} per node; errors only logged."""
        done: Set[Tuple[str, str]] = set()
        for i in intents:
            client = self._dms.get(i.node_id)
            if client is None or (i.node_id, i.policy_id) in done:
                continue
            done.add((i.node_id, i.policy_id))
            try:
                client.delete(i.policy_id)
            except (OSError, RuntimeError, ValueError, KeyError) as e:
                with self._cond:
                    self.sync_errors.append(f"{i.node_id}: {e}")

    def _new_intents(self, policy: _Policy, nodes: List[str]) -> List[_Intent]:
        return [_Intent(new_object_id(), policy.id, policy.creator, node,
                        policy.command_regex, policy.priority, policy.execution_time)
                for node in nodes]

    def _owned_policy(self, policy_id: str, user: _User, verb: str) -> _Policy:
        oid = parse_object_id(policy_id)
        if oid is None:  # errors.WithMessagef(err, "invalid node policy ID ..."): a 500
            raise _HTTPStatusError(500, "Internal Server Error")
        policy = self._policies.get(oid)
        if policy is None or policy.creator != user.uid:
            raise _HTTPStatusError(
                404, f"node policy not found or you don't have permission to {verb} it")
        return policy

    def _create_policy(self, request: HTTPRequest, user: _User, claims: Dict[str, Any]
                       ) -> HTTPResponse:
        try:
            body = self._decode(request, CREATE_POLICY)
            with self._cond:
                nodes = self._resolve_nodes(body)
                if not nodes:
                    raise _HTTPStatusError(404, "no nodes match the policy criteria")
                policy = _Policy(new_object_id(), user.uid, body["nodeSelectors"],
                                 body["nodeNames"], body["draSelectors"], body["commandRegex"],
                                 body["priority"], body["executionTime"])
                self._policies[policy.id] = policy
                intents = self._new_intents(policy, nodes)
                for i in intents:
                    self._intents[i.id] = i
                self._cond.notify_all()
            self._push(intents)
            return self._success()
        except _HTTPStatusError as e:
            return self.error_response(e.status, e.message)

    def _update_policy(self, request: HTTPRequest, user: _User, claims: Dict[str, Any]
                       ) -> HTTPResponse:
        try:
            body = self._decode(request, UPDATE_POLICY)
            if body["policyId"] == "":
                raise _HTTPStatusError(400, "Policy ID is required")
            with self._cond:
                policy = self._owned_policy(body["policyId"], user, "update")
                nodes = self._resolve_nodes(body)
                if not nodes:
                    raise _HTTPStatusError(404, "no nodes match the policy criteria")
                policy.node_selectors, policy.node_names = (body["nodeSelectors"],
                                                            body["nodeNames"])
                policy.dra_selectors, policy.command_regex = (body["draSelectors"],
                                                              body["commandRegex"])
                policy.priority, policy.execution_time = body["priority"], body["executionTime"]
                old = [i for i in self._intents.values() if i.policy_id == policy.id]
                for i in old:
                    del self._intents[i.id]
                intents = self._new_intents(policy, nodes)
                for i in intents:
                    self._intents[i.id] = i
                self._cond.notify_all()
            self._notify_delete(old)
            self._push(intents)
            return self._success()
        except _HTTPStatusError as e:
            return self.error_response(e.status, e.message)

    def _delete_policy(self, request: HTTPRequest, user: _User, claims: Dict[str, Any]
                       ) -> HTTPResponse:
        try:
            body = self._decode(request, DELETE_POLICY)
            if body["policyId"] == "":
                raise _HTTPStatusError(400, "Policy ID is required")
            with self._cond:
                policy = self._owned_policy(body["policyId"], user, "delete")
                old = [i for i in self._intents.values() if i.policy_id == policy.id]
                for i in old:
                    del self._intents[i.id]
                del self._policies[policy.id]
                self._cond.notify_all()
            self._notify_delete(old)
            return self._success({})
        except _HTTPStatusError as e:
            return self.error_response(e.status, e.message)

    def _list_policies(self, request: HTTPRequest, user: _User, claims: Dict[str, Any]
                       ) -> HTTPResponse:
        with self._cond:
            mine = sorted((p for p in self._policies.values() if p.creator == user.uid),
                          key=lambda p: p.id)
            out = []
            for p in mine:
                item: Dict[str, Any] = {"id": p.id}  # the rest is omitempty
                for name, value in (("nodeSelectors", p.node_selectors),
                                    ("nodeNames", p.node_names),
                                    ("draSelectors", p.dra_selectors),
                                    ("commandRegex", p.command_regex),
                                    ("priority", p.priority),
                                    ("executionTime", p.execution_time)):
                    if value:
                        item[name] = value
                out.append(item)
        return self._success({"policies": out})

    def _list_intents(self, request: HTTPRequest, user: _User, claims: Dict[str, Any]
                      ) -> HTTPResponse:
        with self._cond:
            out = []
            for i in sorted(self._intents.values(), key=lambda i: i.id):
                if i.creator != user.uid:
                    continue
                item: Dict[str, Any] = {"id": i.id, "policyId": i.policy_id,
                                        "nodeId": i.node_id}
                for name, value in (("commandRegex", i.command_regex),
                                    ("priority", i.priority),
                                    ("executionTime", i.execution_time), ("state", i.state)):
                    if value:
                        item[name] = value
                out.append(item)
        return self._success({"intents": out})

    def _delete_intents(self, request: HTTPRequest, user: _User, claims: Dict[str, Any]
                        ) -> HTTPResponse:
        try:
            body = self._decode(request, DELETE_INTENTS)
            if not body["intentIds"]:
                raise _HTTPStatusError(400, "At least one intent ID is required")
            with self._cond:
                ids = []
                for text in body["intentIds"]:
                    oid = parse_object_id(text)
                    if oid is None:
                        raise _HTTPStatusError(500, "Internal Server Error")
                    ids.append(oid)
                found = [self._intents[i] for i in ids
                         if i in self._intents and self._intents[i].creator == user.uid]
                if not found:
                    raise _HTTPStatusError(404, "one or more node intents not found or you "
                                                "don't have permission to delete them")
                for i in found:
                    del self._intents[i.id]
                self._cond.notify_all()
            self._notify_delete(found)
            return self._success({})
        except _HTTPStatusError as e:
            return self.error_response(e.status, e.message)


def _parse_user(text: str) -> Tuple[str, Dict[str, Any]]:
    name, _, rest = text.partition(":")
    password, _, flag = rest.partition(":")
    return name, {"password": password, "must_change_password": flag == "must-change"}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8081)
    ap.add_argument("--key-dir", required=True, type=Path,
                    help="the Manager's key goes to DIR/manager/jwt_private_key.pem "
                         "(made if missing); DIR/jwt_public_key.pem, if there, is taken "
                         "as the Decision Makers' public key for --dm")
    ap.add_argument("--user", action="append", default=[],
                    help="NAME:PASSWORD[:must-change] (default admin:admin)")
    ap.add_argument("--node", action="append", default=[],
                    help="a Kubernetes node name (default: this host's name)")
    ap.add_argument("--dm", action="append", default=[],
                    help="NODE=URL: push that node's rules to the DM at URL")
    ap.add_argument("--access-token-lifetime", type=float, default=60.0)
    ap.add_argument("--reconcile-interval", type=float, default=30.0)
    ap.add_argument("--no-web-ui", action="store_true")
    a = ap.parse_args()
    key_dir = a.key_dir / "manager"
    private = key_dir / "jwt_private_key.pem"
    if not private.exists():
        key_dir.mkdir(parents=True, exist_ok=True)
        make_keypair(key_dir)
    users = dict(_parse_user(u) for u in a.user) or {"admin": {"password": "admin"}}
    dms: Dict[str, DMSpec] = {}
    if a.dm:
        dm_key = a.key_dir / "jwt_public_key.pem"
        deadline = time.monotonic() + 10  # the DM, started alongside, may still be making it
        while not dm_key.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        dm_public = dm_key.read_bytes()
        for spec in a.dm:
            node, _, url = spec.partition("=")
            dms[node] = (url, dm_public)
    manager = FakeManager(users, a.node or [os.uname().nodename], private.read_bytes(),
                          host=a.host, port=a.port,
                          access_token_lifetime=a.access_token_lifetime,
                          web_ui=not a.no_web_ui, decision_makers=dms,
                          reconcile_interval=a.reconcile_interval if dms else None).start()
    print(f"fake Gthulhu manager on {manager.url} (nodes: {', '.join(manager.nodes)})",
          flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        manager.stop()


if __name__ == "__main__":
    main()
