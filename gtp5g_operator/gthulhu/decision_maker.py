"""The Decision Maker writer: Gthulhu's per-node rule server since late 2025.

The scheduler polls its node's Decision Maker (DM), which turns *rules* — a
regular expression on task names — into PIDs by scanning /proc itself.  This
host owns exactly one rule (`policyID` gtp5g-operator@<node>); POST
/api/v1/node-intents replaces the DM's whole list, DELETE removes one rule.

The DM keeps rules in memory only, so a restart loses them.  Its merkle root
(`GET /api/v1/node-intents/merkle`) is, with exactly one rule, the SHA-256 of
that rule's fields: a resync compares it with the root of the rule we wrote
and rewrites the rule only when they differ.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any, Callable, Dict, Sequence

from ..config import Config
from ..core.strategy import NodeRule, build_rule, policy_id
from ..core.tracker import ProcessView
from .errors import ApiError, check_answer
from .http import Answer, JsonHttp
from .writer import ApiWriter, PublicKeyToken

log = logging.getLogger(__name__)

RULES_PATH = "/api/v1/node-intents"
MERKLE_PATH = "/api/v1/node-intents/merkle"
EMPTY_ROOTS = ("", hashlib.sha256(b"").hexdigest())  # a fresh DM; one emptied since
_GONE = object()  # the last write removed our rule
NO_SUCH_ROUTE = (404, 405, 501)  # Go routers: 404 (or 405); Python's http.server: 501


def rule_body(rule: NodeRule) -> Dict[str, Any]:
    return {"policyID": rule.policy_id, "nodeID": rule.node,
            "commandRegex": rule.command_regex, "priority": rule.priority,
            "executionTime": rule.execution_time_ns}


def rule_root(rule: NodeRule) -> str:
    """The DM's merkle root when it holds exactly this rule (hashNodePolicy)."""
    leaf = (f"policyID={rule.policy_id}|nodeID={rule.node}|commandRegex={rule.command_regex}"
            f"|priority={rule.priority}|executionTime={rule.execution_time_ns}")
    return hashlib.sha256(leaf.encode()).hexdigest()


class DecisionMakerWriter(ApiWriter):
    flavor = "decision-maker"
    sends_names = True
    login: PublicKeyToken

    def __init__(self, http: JsonHttp, config: Config,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        super().__init__(http, config.strategy)
        self.node = config.node_name
        self.login = PublicKeyToken(http, config.public_key_pem, config.api.public_key,
                                    f"gtp5g-operator@{self.node}", clock, wall_clock)
        self._written: object = None  # the NodeRule on the DM, _GONE, or None: unknown
        self._merkle = True  # the DM has the merkle route (DMs from 2026-08 on)

    # --- what status shows ------------------------------------------------------------------

    def describe(self) -> Dict[str, Any]:
        token = self.login.token
        rule = self._written if isinstance(self._written, NodeRule) else None
        return {**super().describe(), "node": self.node, "policy_id": policy_id(self.node),
                "rule": rule.command_regex if rule else None,
                "token_expires_at": token.expires_at if token else None,
                "credentials_obtained": self.login.obtained}

    # --- the state -------------------------------------------------------------------------

    def write(self, views: Sequence[ProcessView], deadline: float) -> int:
        rule = build_rule(views, self.strategy, self.node)
        if rule is None:
            if self._written is not _GONE:
                self._delete(deadline)
            return 0
        if rule != self._written or not self._holds(rule, deadline):
            self._post(rule, deadline)
        return 1

    def clear(self, deadline: float) -> None:
        self._delete(deadline)

    def _holds(self, rule: NodeRule, deadline: float) -> bool:
        """Does the DM still hold exactly our rule?  (It forgets on restart.)"""
        if not self._merkle:
            return False  # no way to tell: write it again
        answer = self._call("GET", MERKLE_PATH, None, deadline)
        if answer.status == 404:
            self._merkle = False
            log.info("the Decision Maker has no merkle route: each resync rewrites the rule")
            return False
        data = answer.body.get("data") if isinstance(answer.body, dict) else None
        root = data.get("rootHash") if isinstance(data, dict) else None
        if root == rule_root(rule):
            return True
        log.info("the Decision Maker no longer holds this host's rule (restarted?): "
                 "writing it again")
        return False

    def _post(self, rule: NodeRule, deadline: float) -> None:
        self._written = None  # unknown until the DM confirms
        self._call("POST", RULES_PATH, {"policies": [rule_body(rule)]}, deadline)
        self._written = rule
        log.info("rule %s for node %s: %s", rule.policy_id, rule.node, rule.command_regex)

    def _delete(self, deadline: float) -> None:
        self._call("DELETE", RULES_PATH, {"policyId": policy_id(self.node)}, deadline)
        if self._written is not None:
            log.info("rule %s removed (no target is live)", policy_id(self.node))
        self._written = _GONE

    def _call(self, method: str, path: str, payload: Any, deadline: float) -> Answer:
        answer = self.http.request(method, path, payload, deadline, self.login.header())
        what = f"{method} {self.http.base_url}{path}"
        if answer.status in NO_SUCH_ROUTE and path == RULES_PATH:
            raise ApiError("wrong-flavor", f"{what} answered {answer.status}: the server is not "
                           "a Gthulhu Decision Maker that takes node rules (from 2026-08 on)",
                           answer.status)
        if not (answer.status == 404 and path == MERKLE_PATH):
            check_answer(answer.status, answer.body, what, answer.location)
        return answer

