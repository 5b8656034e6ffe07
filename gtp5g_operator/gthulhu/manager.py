"""The Manager writer: a Gthulhu cluster's Manager, which distributes rules to
every node's Decision Maker.

Credentials: POST /api/v1/auth/login with a user name and password gives a
one-minute access token and a single-use refresh token; the access token is
renewed at half-life through /auth/refresh, and a failed refresh logs in
again.  The Manager signs with its own key, so its tokens are only read for
their lifetime, never verified.

State: one node scheduling policy for this host, created (POST answers no
id), then updated (PUT) and deleted by its id.  The id is found with
GET …/self and kept in the state directory, so a restart adopts the policy
instead of creating a duplicate.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..config import Config
from ..core.strategy import NodeRule, build_rule
from ..core.tracker import ProcessView
from ..files import FileProblem, atomic_write, read_json_file
from .auth import REFRESH_MARGIN, refresh_delay, unverified_claims
from .errors import ApiError, check_answer, error_text
from .http import Answer, JsonHttp
from .writer import ApiWriter

log = logging.getLogger(__name__)

LOGIN_PATH = "/api/v1/auth/login"
REFRESH_PATH = "/api/v1/auth/refresh"
POLICIES_PATH = "/api/v1/node-scheduling-policies"
SELF_PATH = "/api/v1/node-scheduling-policies/self"
POLICY_FILE = "manager-policy.json"
PERMISSION = {("POST", POLICIES_PATH): "node_scheduling_policy.create",
              ("GET", SELF_PATH): "node_scheduling_policy.read",
              ("PUT", POLICIES_PATH): "node_scheduling_policy.update",
              ("DELETE", POLICIES_PATH): "node_scheduling_policy.delete"}


def policy_body(rule: NodeRule) -> Dict[str, Any]:
    return {"nodeNames": [rule.node], "commandRegex": rule.command_regex,
            "priority": rule.priority, "executionTime": rule.execution_time_ns}


def same_policy(item: Dict[str, Any], rule: NodeRule) -> bool:
    """Does a policy of GET …/self say what `rule` says?  (Zero fields are omitted.)"""
    return (item.get("nodeNames") == [rule.node]
            and item.get("commandRegex") == rule.command_regex
            and item.get("priority", 0) == rule.priority
            and item.get("executionTime", 0) == rule.execution_time_ns)


class PolicyIdFile:
    """The id of this host's policy, kept across restarts (state directory)."""

    def __init__(self, directory: str, api_url: str, user: str, node: str) -> None:
        self.path = os.path.join(directory, POLICY_FILE)
        self._key = {"api_url": api_url, "user": user, "node": node}
        self.policy_id: Optional[str] = self._load()

    def _load(self) -> Optional[str]:
        try:
            data = read_json_file(self.path)
        except FileNotFoundError:
            return None
        except (OSError, FileProblem, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self.path, exc)
            return None
        if not isinstance(data, dict) or any(data.get(k) != v for k, v in self._key.items()):
            return None  # another Manager, user or node: not ours to adopt
        value = data.get("policy_id")
        return value if isinstance(value, str) and value else None

    def store(self, policy_id: Optional[str]) -> None:
        if policy_id == self.policy_id:
            return
        self.policy_id = policy_id
        try:
            if policy_id is None:
                os.unlink(self.path)
            else:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                data = json.dumps({**self._key, "policy_id": policy_id}) + "\n"
                atomic_write(self.path, data.encode(), 0o600, durable=True)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot record the Manager policy id in %s: %s (a restart may "
                        "create a duplicate policy)", self.path, exc.strerror)


class ManagerLogin:
    """Access and refresh tokens of one Manager user."""

    def __init__(self, http: JsonHttp, user: str, password: str,
                 clock: Callable[[], float]) -> None:
        self.http = http
        self.user = user
        self._password = password  # never logged: not in any message or repr
        self._clock = clock
        self.access: Optional[str] = None
        self._refresh: Optional[str] = None
        self._renew_at = 0.0
        self.expires_at: Optional[float] = None
        self.obtained = 0

    def __repr__(self) -> str:
        return f"ManagerLogin(user={self.user!r})"

    def valid(self) -> bool:
        return self.access is not None and self._clock() < self._renew_at

    def drop(self) -> None:
        self.access = None

    def obtain(self, deadline: float) -> None:
        """Refresh when we hold a refresh token, else (or when that fails) log in."""
        if self._refresh is not None:
            try:
                self._accept(self._post(REFRESH_PATH, {"refreshToken": self._refresh},
                                        deadline))
                return
            except ApiError as exc:
                if exc.kind != "unauthorized":
                    raise
                log.info("the Manager refused our refresh token: logging in again")
        self._refresh = None
        self._accept(self._post(LOGIN_PATH, {"username": self.user,
                                             "password": self._password}, deadline))

    def _post(self, path: str, payload: Dict[str, str], deadline: float) -> Dict[str, Any]:
        answer = self.http.request("POST", path, payload, deadline)
        what = f"POST {self.http.base_url}{path}"
        if answer.status == 404:
            raise ApiError("wrong-flavor", f"{what} answered 404: the server is not a "
                           "Gthulhu Manager", 404)
        if answer.status in (400, 401, 422) and path == LOGIN_PATH:
            raise ApiError("unauthorized", f"the Manager refused the login of user "
                           f"{self.user!r}: {error_text(answer.body)}", answer.status)
        if answer.status == 401:
            raise ApiError("unauthorized", f"{what}: {error_text(answer.body)}", 401)
        check_answer(answer.status, answer.body, what, answer.location)
        data = answer.body.get("data") if isinstance(answer.body, dict) else None
        if not isinstance(data, dict):
            raise ApiError("bad-answer", f"{what}: the answer has no data object")
        return data

    def _accept(self, data: Dict[str, Any]) -> None:
        access = data.get("accessToken") or data.get("token")
        refresh = data.get("refreshToken")
        if not isinstance(access, str) or not access:
            raise ApiError("bad-answer", "the Manager's login answer has no access token")
        self.access = access
        self._refresh = refresh if isinstance(refresh, str) and refresh else None
        self.obtained += 1
        claims = unverified_claims(access)
        exp, iat = claims.get("exp"), claims.get("iat")
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                      for v in (exp, iat))
        lifetime = float(exp) - float(iat) if numbers else 2 * REFRESH_MARGIN  # type: ignore
        self._renew_at = self._clock() + refresh_delay(max(lifetime, 2.0))
        self.expires_at = time.time() + lifetime
        log.debug("Manager access token for %s, renewing in %.0f s", self.user,
                  refresh_delay(max(lifetime, 2.0)))


class ManagerWriter(ApiWriter):
    flavor = "manager"
    sends_names = True
    login: ManagerLogin

    def __init__(self, http: JsonHttp, config: Config, state_dir: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(http, config.strategy)
        self.node = config.node_name
        self.login = ManagerLogin(http, config.api.username, config.password, clock)
        self.ids = PolicyIdFile(state_dir, config.api.url, config.api.username, self.node)
        self._written: Optional[NodeRule] = None  # what the policy says, as far as we know
        self._cleared = False

    # --- what status shows ------------------------------------------------------------------

    def describe(self) -> Dict[str, Any]:
        return {**super().describe(), "node": self.node, "user": self.login.user,
                "policy_id": self.ids.policy_id,
                "rule": self._written.command_regex if self._written else None,
                "token_expires_at": self.login.expires_at,
                "credentials_obtained": self.login.obtained}

    # --- the state -------------------------------------------------------------------------

    def write(self, views: Sequence[ProcessView], deadline: float) -> int:
        rule = build_rule(views, self.strategy, self.node)
        if rule is None:
            if not self._cleared:
                self.clear(deadline)
            return 0
        self._cleared = False
        if rule == self._written and self._still_there(rule, deadline):
            return 1
        self._put_or_create(rule, deadline)
        return 1

    def clear(self, deadline: float) -> None:
        policy = self.ids.policy_id or self._find(None, deadline)
        if policy is not None:
            self._call("DELETE", POLICIES_PATH, {"policyId": policy}, deadline,
                       missing_ok=True)
            log.info("policy %s for node %s removed (no target is live)", policy, self.node)
        self.ids.store(None)
        self._written, self._cleared = None, True

    def _still_there(self, rule: NodeRule, deadline: float) -> bool:
        mine = [p for p in self._policies(deadline) if p.get("id") == self.ids.policy_id]
        return bool(mine) and same_policy(mine[0], rule)

    def _put_or_create(self, rule: NodeRule, deadline: float) -> None:
        policy = self.ids.policy_id or self._find(rule, deadline)
        if policy is not None:
            answer = self._call("PUT", POLICIES_PATH, {"policyId": policy, **policy_body(rule)},
                                deadline, missing_ok=True)
            if answer.status != 404:
                self._done(policy, rule, "updated")
                return
            log.info("policy %s is gone from the Manager: creating a new one", policy)
        before = {p.get("id") for p in self._policies(deadline)}
        self._call("POST", POLICIES_PATH, policy_body(rule), deadline)
        created = self._find(rule, deadline, exclude=before)
        if created is None:
            raise ApiError("bad-answer", "the Manager accepted the policy but GET …/self does "
                           "not list it")
        self._done(created, rule, "created")

    def _done(self, policy: str, rule: NodeRule, how: str) -> None:
        self.ids.store(policy)
        self._written = rule
        log.info("policy %s %s for node %s: %s", policy, how, rule.node, rule.command_regex)

    def _find(self, rule: Optional[NodeRule], deadline: float,
              exclude: Optional[set[Any]] = None) -> Optional[str]:
        """The id of this host's policy among the user's: by what it says, never the first."""
        for item in self._policies(deadline):
            ident = item.get("id")
            if not isinstance(ident, str) or (exclude and ident in exclude):
                continue
            if item.get("nodeNames") == [self.node] and (rule is None
                                                        or same_policy(item, rule)):
                return ident
        return None

    def _policies(self, deadline: float) -> List[Dict[str, Any]]:
        answer = self._call("GET", SELF_PATH, None, deadline)
        data = answer.body.get("data") if isinstance(answer.body, dict) else None
        items = data.get("policies") if isinstance(data, dict) else None
        if items is None:
            return []
        if not isinstance(items, list):
            raise ApiError("bad-answer", "GET …/self: policies is not a list")
        return [i for i in items if isinstance(i, dict)]

    def _call(self, method: str, path: str, payload: Any, deadline: float,
              missing_ok: bool = False) -> Answer:
        assert self.login.access is not None
        answer = self.http.request(method, path, payload, deadline, self.login.access)
        if answer.status == 403:
            raise self._forbidden(method, path, answer)
        if answer.status == 404:
            text = error_text(answer.body)
            if "no nodes match" in text:
                raise ApiError("not-found", f"the Manager knows no node {self.node!r}: "
                               "api.node_name must be the node's Kubernetes name", 404)
            if text == "Not Found" or text == "no error message":
                raise ApiError("wrong-flavor", f"{method} {self.http.base_url}{path} answered "
                               "404: the server is not a Gthulhu Manager", 404)
            if missing_ok:
                return answer
        check_answer(answer.status, answer.body, f"{method} {self.http.base_url}{path}",
                     answer.location)
        return answer

    def _forbidden(self, method: str, path: str, answer: Answer) -> ApiError:
        text = error_text(answer.body)
        if "password change required" in text:
            return ApiError("forbidden", f"the Manager requires user {self.login.user!r} to "
                            "change its password before anything else (log in to the Manager "
                            "once, or PUT /api/v1/users/self/password)", 403)
        permission = PERMISSION.get((method, path), "?")
        return ApiError("forbidden", f"the Manager denied user {self.login.user!r} {method} "
                        f"{path}: its role lacks the permission {permission}", 403)
