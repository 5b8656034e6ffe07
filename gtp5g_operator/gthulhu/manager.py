"""The Manager writer: a Gthulhu cluster's Manager, which distributes rules to
every node's Decision Maker.

Credentials: POST /api/v1/auth/login with a user name and password gives a
one-minute access token and a single-use refresh token; the access token is
renewed at half-life through /auth/refresh, and a failed refresh logs in
again.  The Manager signs with its own key, so its tokens are only read for
their lifetime, never verified.

State: one node scheduling policy for this host, created (POST answers no
id), then updated (PUT) and deleted by its id.  A policy is changed or
deleted only when it is provably this host's: the id this host stored when it
created or adopted the policy (state directory, `manager-policy.json`), or a
policy that says exactly what this host would write (node, regex, priority,
time slice, no selectors).  Without such proof the writer creates its own
policy and deletes nothing: the user's other policies — hand-made ones, other
hosts' — are never touched.  A policy under the stored id that someone changed
to say what this host never wrote (another regex, added selectors) is theirs
now: the id is dropped and the policy left alone, not reverted and not deleted
(a GET before each PUT or DELETE; what changes between the two is the race left).
A DELETE answered with success is believed once the list no longer holds the
policy (a GET after it): until then the id stays stored.
A stored id the Manager keeps refusing is dropped after a few tries (the log
names the file), and the policy is adopted or created again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    FrozenSet,
    List,
    Optional,
    Sequence,
    Tuple,
)

from ..config import Config
from ..core.readback import Comparison, compare_rule
from ..core.strategy import NodeRule, build_rule, policy_id, rule_priority
from ..core.tracker import ProcessView
from ..core.words import plural
from .answers import OBJECT_ID, Policy, claim_times, manager_policies, manager_tokens
from .auth import REFRESH_MARGIN, refresh_delay, unverified_claims
from .decision_maker import DecisionMakerView
from .errors import ApiError, check_answer, error_text
from .http import Answer, JsonHttp
from .ownership import OwnershipFile
from .writer import STRATEGIES_PATH, Holdings, Login, PublicKeyToken, RuleWriter

if TYPE_CHECKING:
    from .detect import Probe

log = logging.getLogger(__name__)

LOGIN_PATH = "/api/v1/auth/login"
REFRESH_PATH = "/api/v1/auth/refresh"
POLICIES_PATH = "/api/v1/node-scheduling-policies"
SELF_PATH = "/api/v1/node-scheduling-policies/self"
POLICY_FILE = "manager-policy.json"
MAX_LIFETIME = 86400.0  # trust no claimed token lifetime beyond a day: renew at least daily
PERMISSION = {("POST", POLICIES_PATH): "node_scheduling_policy.create",
              ("GET", SELF_PATH): "node_scheduling_policy.read",
              ("PUT", POLICIES_PATH): "node_scheduling_policy.update",
              ("DELETE", POLICIES_PATH): "node_scheduling_policy.delete"}


def without(body: Any, secret: str) -> Any:
    """A JSON answer with `secret` blotted out of its strings: a server or a proxy in
    front of it that echoes the login request in its error put the password into the
    journal, the world-readable state.json and `status` (the error's words are the
    server's).  Blotted before the words are cut short, or a prefix would show.  In
    every form it may take there: a request quoted inside an error string holds it as
    the request's JSON wrote it, so a password with a quote, a backslash or a non-ASCII
    letter showed (\\" or \\u00e4 in its place), whole but for the escapes."""
    if isinstance(body, str) and secret:
        for form in (secret, json.dumps(secret)[1:-1],
                     json.dumps(secret, ensure_ascii=False)[1:-1]):
            body = body.replace(form, "[REDACTED]")
        return body
    if isinstance(body, dict):
        return {k: without(v, secret) for k, v in body.items()}
    if isinstance(body, list):
        return [without(v, secret) for v in body]
    return body


def by_whom(node: str, user: str) -> str:
    """Who changes or deletes this host's policy, most likely: a policy that says exactly
    what a host writes is each such host's to adopt, so two hosts writing for one node
    name (clones of one image share the host name, api.node_name's default) take turns
    deleting and rewriting one policy, and nothing else says so."""
    return (f"another host writing for node {node} as user {user!r} (hosts made from one "
            "image share a host name, api.node_name's default: give each its own "
            "api.node_name), or someone by hand")


def policy_body(rule: NodeRule) -> Dict[str, Any]:
    return {"nodeNames": [rule.node], "commandRegex": rule.command_regex,
            "priority": rule.priority, "executionTime": rule.execution_time_ns}


def same_policy(policy: Policy, rule: NodeRule) -> bool:
    """Does `policy` say exactly what this host writes for `rule`?  Then it is ours
    to adopt (a policy with selectors never is: we do not write selectors)."""
    return (policy.node_names == (rule.node,) and policy.command_regex == rule.command_regex
            and policy.priority == rule.priority
            and policy.execution_time == rule.execution_time_ns and not policy.selectors)


def find_policy(policies: Sequence[Policy], rule: NodeRule,
                exclude: FrozenSet[str] = frozenset()) -> Optional[str]:
    """The id of a policy that says exactly `rule` (never merely the first one)."""
    return next((p.id for p in policies if p.id not in exclude and same_policy(p, rule)), None)


class ManagerLogin(Login):
    """Access and refresh tokens of one Manager user."""

    def __init__(self, http: JsonHttp, user: str, password: str,
                 clock: Callable[[], float],
                 wall_clock: Callable[[], float] = time.time) -> None:
        super().__init__(http, clock, wall_clock)
        self.user = user
        self._password = password  # never logged: not in any message or repr
        self.token: Optional[str] = None  # the access token
        self._refresh: Optional[str] = None

    def __repr__(self) -> str:
        return f"ManagerLogin(user={self.user!r})"

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

    def _post(self, path: str, payload: Dict[str, str], deadline: float) -> Any:
        answer = self.http.request("POST", path, payload, deadline)
        if path == LOGIN_PATH:  # before any of its words reach an error
            answer = dataclasses.replace(answer, body=without(answer.body, self._password))
        what = f"POST {self.http.base_url}{path}"
        if answer.status == 404:
            raise ApiError("wrong-flavor", f"{what} answered 404: the server is not a "
                           "Gthulhu Manager")
        if answer.status in (400, 401, 422) and path == LOGIN_PATH:
            # not the user name itself: until a login succeeds it may be a password
            # pasted into api.username, and this text reaches the journal, the
            # world-readable state.json and `status`
            raise ApiError("unauthorized", "the Manager refused the login of api.username "
                           f"with its password: {error_text(answer.body)}")
        if answer.status == 401:
            raise ApiError("unauthorized", f"{what}: {error_text(answer.body)}")
        check_answer(answer, what)
        return answer.body

    def _accept(self, body: Any) -> None:
        self.token, self._refresh = manager_tokens(body)
        self.obtained += 1
        exp, iat = claim_times(unverified_claims(self.token))
        now = self._wall()
        # on the issuer's clock when the token says when it was issued; else exp on ours
        # (as for a token of our key), never a guess past an exp the token states
        lifetime = (2 * REFRESH_MARGIN if exp is None else
                    exp - iat if iat is not None else exp - now)
        lifetime = min(max(lifetime, 2.0), MAX_LIFETIME)
        self._renew_at = self._clock() + refresh_delay(lifetime)
        self.expires_mono = self._clock() + lifetime
        log.debug("Manager access token for %s, renewing in %.0f s", self.user,
                  refresh_delay(lifetime))


class ManagerWriter(RuleWriter):
    name = "manager"
    display = "Manager"
    summary = "a cluster's Gthulhu Manager: one node scheduling policy for this host"
    credential = "password"
    proof_file = POLICY_FILE
    login: ManagerLogin

    @classmethod
    def credentials(cls, config: Config) -> FrozenSet[str]:
        # a password for the Manager; the node DM's key to read back from it, if asked
        return frozenset({"password", *(("public-key",) if config.api.decision_maker_url
                                        else ())})

    @classmethod
    def config_problem(cls, config: Config) -> str:
        if not config.api.username:
            return ('api.username: required with a Gthulhu Manager (and its password: '
                    "api.password_file or the systemd credential gthulhu-password)")
        return super().config_problem(config)

    @classmethod
    def probe(cls, probe: Probe, deadline: float) -> bool:
        # A Manager answers a login with an empty body 400/401/422, never 404.
        return probe.status("POST", LOGIN_PATH, {}, deadline) in (400, 401, 422)

    def __init__(self, http: JsonHttp, config: Config, state_dir: str,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        super().__init__(http, config, state_dir, clock, wall_clock)
        self.login = ManagerLogin(http, config.api.username, config.password, clock,
                                  wall_clock)
        self.ids = OwnershipFile(state_dir, POLICY_FILE, {
            "api_url": config.api.url, "user": config.api.username, "node": self.node},
            OBJECT_ID)
        self._written: Optional[NodeRule] = None  # what the policy says, as far as we know
        self._cleared = False
        self.view: Optional[DecisionMakerView] = None  # the node's DM, read back from
        if config.api.decision_maker_url:
            dm = JsonHttp(config.api.decision_maker_url, config.api.timeout, config.ca_pem, clock)
            self.view = DecisionMakerView(dm, PublicKeyToken(dm, config, True, clock, wall_clock))
        else:
            log.info("%s", self.verify_problem())

    def place(self, config: Config) -> Tuple[str, ...]:
        # the user's policy for the node
        return (*super().place(config), f"api.username {config.api.username}")

    # --- what status shows ------------------------------------------------------------------

    def describe(self) -> Dict[str, Any]:
        # the user name once the Manager accepted it (before, it may be a pasted password)
        user = self.login.user if self.login.obtained else None
        return {**super().describe(), "node": self.node, "user": user,
                "policy_id": self.ids.object_id,
                "rule": self._written.command_regex if self._written else None,
                "token_expires_mono": self.login.expires_mono,
                "credentials_obtained": self.login.obtained}

    # --- the state -------------------------------------------------------------------------

    def write(self, views: Sequence[ProcessView], deadline: float) -> int:
        rule = build_rule(views, self.strategy, self.node)
        if rule is None:
            if not self._cleared:
                self.clear(deadline)
            return 0
        self._cleared = False
        policies = self._policies(deadline)
        stored = self._stored(policies)
        if rule == self._written and stored is not None and same_policy(stored, rule):
            self.ids.store(stored.id, rule)  # nothing, unless its last write failed
            return 1
        self._put_or_create(rule, deadline, policies)
        return 1

    def clear(self, deadline: float) -> None:
        """Delete this host's policy — only one provably ours, else nothing."""
        policies = self._policies(deadline)
        self._stored(policies)  # drops the id of a policy someone else changed
        policy = self.ids.object_id
        if policy is None:
            # What we wrote (or were writing), then the rules it may not have replaced
            # (a PUT refused until the id was dropped, then a restart): forgetting those
            # would leave a policy of ours boosting old names for good.
            known = (self._written, *self.ids.rules)
            policy = next((p for r in known if r is not None
                           if (p := find_policy(policies, r)) is not None), None)
        if policy is None:
            log.info("no policy of this host is known on the Manager: nothing to remove "
                     "(policies not provably this host's are never deleted)")
        else:
            self._delete(policy, deadline)
            # why (no target, a stop, a move) is the caller's to say
            log.info("policy %s for node %s removed", policy, self.node)
        self.ids.store(None, None)
        self._written, self._cleared = None, True

    def _delete(self, policy: str, deadline: float) -> None:
        """DELETE `policy`; the success answered is believed once GET …/self no longer lists
        the policy: dropping the proof earlier would leave a policy still there that nothing
        ever finds as ours again.  Until then the proof stays and the next push (or the
        journal, on stop) says what is left."""
        self._with_stored_id(policy, lambda: self._call(
            "DELETE", POLICIES_PATH, {"policyId": policy}, deadline, missing_ok=True))
        if any(p.id == policy for p in self._policies(deadline)):
            raise ApiError("bad-answer", f"the Manager at {self.http.base_url} answered the "
                           f"DELETE with success but still lists policy {policy} for node "
                           f"{self.node}: it is still there and still this host's (deleted "
                           "again by the next push without a target, here or after a restart)")

    def left_behind(self) -> str:
        rule = self._written or self.ids.rule
        if rule is None and self.ids.object_id is None:
            return f"no policy of this host is known on the Manager at {self.http.base_url}"
        which = (f"policy {self.ids.object_id}" if self.ids.object_id is not None
                 else "a policy (its id not known yet)")
        says = f" saying {rule.command_regex}" if rule is not None else ""
        return (f"{which} for node {self.node}{says}, of user {self.login.user!r} on the "
                f"Manager at {self.http.base_url}")

    def _own_policy(self, rule: Optional[NodeRule], policies: List[Policy]) -> Optional[Policy]:
        """This host's policy among `policies`: by the stored id, else one that says
        exactly `rule` or what this host last wrote; None when there is none (read-only:
        doctor's holdings)."""
        for p in policies:
            if p.id == self.ids.object_id and self._says_ours(p):  # else someone changed it
                return p
        candidates = [r for r in (rule, *self.ids.rules) if r is not None]
        return next((p for p in policies for r in candidates if same_policy(p, r)), None)

    def read_back(self, views: Sequence[ProcessView], deadline: float,
                  rule: Optional[str] = None) -> Optional[Comparison]:
        if self.view is None:
            return None
        if rule is None:
            built = build_rule(views, self.strategy, self.node)
            rule = built.command_regex if built else None
        # What its errors quote: a reload sets api.timeout on this writer's client only
        # (directly, or through AutoWriter's, which is the same client).
        self.view.http.timeout = self.http.timeout
        return compare_rule(self.view.listed(deadline), rule, views, self.procfs)

    def verify_problem(self) -> str:
        if self.view is not None:
            return ""
        return ("what the scheduler boosts is not verified: the Manager does not resolve "
                "PIDs; set api.decision_maker_url to this node's Decision Maker (and "
                "api.public_key to its key) to read back what it lists")

    @property
    def readback_source(self) -> str:
        return f"{self.view.http.base_url}{STRATEGIES_PATH}" if self.view is not None else ""

    def close(self) -> None:
        super().close()
        if self.view is not None:
            self.view.http.close()

    def holdings(self, deadline: float, last_rule: Optional[str] = None) -> Holdings:
        said = NodeRule(policy_id(self.node), self.node, last_rule, rule_priority(self.strategy),
                        self.strategy.execution_time_ns) if last_rule else None
        policies = self._policies(deadline)
        mine = self._own_policy(said, policies)
        if mine is None:
            return Holdings(f"the Manager holds no policy of this host for node {self.node} "
                            f"({plural(len(policies), 'policy', 'policies')} of user "
                            f"{self.login.user!r} in all)", None)
        why = "its stored id" if mine.id == self.ids.object_id else "what it says"
        return Holdings(f"policy {mine.id} for node {self.node} (this host's, by {why}): "
                        f"{mine.command_regex}", None, mine.command_regex)

    def _stored(self, policies: Sequence[Policy]) -> Optional[Policy]:
        """The policy under the stored id as listed, while it says a rule this host wrote
        (or is writing).  One that says anything else was changed by someone else: it is
        theirs now, and its id is dropped so that nothing reverts or deletes it."""
        listed = next((p for p in policies if p.id == self.ids.object_id), None)
        if listed is None:
            return None
        if self._says_ours(listed):
            return listed
        log.warning("policy %s for node %s was changed on the Manager to something this host "
                    "never wrote (%s), by %s: left alone as theirs; this host writes its own",
                    listed.id, self.node, listed.command_regex,
                    by_whom(self.node, self.login.user))
        self.ids.drop_id()
        self._written = None
        return None

    def _says_ours(self, policy: Policy) -> bool:
        """Does `policy` say a rule this host wrote (or is writing)?  A proof file that
        names an id and no rule (0.1.0's) leaves the id as the only proof there is."""
        known = [r for r in (self._written, *self.ids.rules) if r is not None]
        return not known or any(same_policy(policy, r) for r in known)

    def _put_or_create(self, rule: NodeRule, deadline: float,
                       policies: List[Policy]) -> None:
        stored = self.ids.object_id
        if stored is not None:
            if self._put(stored, rule, deadline):
                return
            log.warning("policy %s for node %s, this host's, is gone from the Manager: "
                        "deleted by %s; this host adopts or creates one", stored, self.node,
                        by_whom(self.node, self.login.user))
            self.ids.drop_id()
        earlier = [r for r in self.ids.rules if r != rule]  # rules this host wrote before
        same = find_policy(policies, rule)
        if same is not None:  # says exactly what we would write: ours to adopt
            # One still saying a rule this host wrote before is ours too; storing only the
            # adopted one would forget it, boosting the old names for good.  It goes first
            # (a failed DELETE fails the push and is tried again: the proof is unchanged).
            for old in [p.id for p in policies
                        if p.id != same and any(same_policy(p, r) for r in earlier)]:
                self._delete(old, deadline)
                log.info("policy %s for node %s removed: it said a rule this host wrote "
                         "before, and policy %s says the current one", old, self.node, same)
            self._done(same, rule, "adopted")
            return
        # One saying a rule this host wrote before (its id dropped after refusals, or a
        # create whose answer was lost): ours, updated rather than left behind for good.
        previous = next((p for r in earlier if (p := find_policy(policies, r)) is not None),
                        None)
        if previous is not None and self._put(previous, rule, deadline):
            return
        before = frozenset(p.id for p in policies)
        self.ids.replacing(None, rule)  # before the POST: proof of what may be there after it
        # not replayed on a stale connection: a second create would be a second policy
        self._call("POST", POLICIES_PATH, policy_body(rule), deadline, replay=False)
        self._written = rule
        created = find_policy(self._policies(deadline), rule, exclude=before)
        if created is None:
            raise ApiError("bad-answer", "the Manager accepted the policy but GET …/self does "
                           "not list it")
        self._done(created, rule, "created")

    def _put(self, policy: str, rule: NodeRule, deadline: float) -> bool:
        """Make the stored `policy` say `rule`; False when the Manager has no such policy."""
        # Recorded before the request: a PUT done whose answer is lost leaves the policy
        # saying `rule`, which must still read as this host's, not as someone's edit.
        self.ids.replacing(policy, rule)
        answer = self._with_stored_id(policy, lambda: self._call(
            "PUT", POLICIES_PATH, {"policyId": policy, **policy_body(rule)}, deadline,
            missing_ok=True))
        if answer.status == 404:
            return False
        self._done(policy, rule, "updated")
        return True

    def _with_stored_id(self, policy: str, call: Callable[[], Answer]) -> Answer:
        """A request naming the stored id; refusals other than "gone" are counted."""
        try:
            answer = call()
        except ApiError as exc:
            if policy == self.ids.object_id and exc.kind in ("http-4xx", "http-5xx",
                                                             "bad-answer"):
                self.ids.refused(exc)
            raise
        self.ids.refusals = 0
        return answer

    def _done(self, policy: str, rule: NodeRule, how: str) -> None:
        self.ids.store(policy, rule)
        self._written = rule
        log.info("policy %s %s for node %s: %s", policy, how, rule.node, rule.command_regex)

    def _policies(self, deadline: float) -> List[Policy]:
        return manager_policies(self._call("GET", SELF_PATH, None, deadline).body)

    def _call(self, method: str, path: str, payload: Any, deadline: float,
              missing_ok: bool = False, replay: bool = True) -> Answer:
        assert self.login.token is not None
        answer = self.http.request(method, path, payload, deadline, self.login.token,
                                   replay=replay)
        if answer.status == 403:
            raise self._forbidden(method, path, answer)
        if answer.status == 404:
            text = error_text(answer.body)
            if "no nodes match" in text:
                raise ApiError("not-found", f"the Manager knows no node {self.node!r}: "
                               "api.node_name must be the node's Kubernetes name")
            if text == "Not Found" or text == "no error message":
                raise ApiError("wrong-flavor", f"{method} {self.http.base_url}{path} answered "
                               "404: the server is not a Gthulhu Manager")
            if missing_ok:
                return answer
        check_answer(answer, f"{method} {self.http.base_url}{path}")
        return answer

    def _forbidden(self, method: str, path: str, answer: Answer) -> ApiError:
        text = error_text(answer.body)
        if "password change required" in text:
            return ApiError("forbidden", f"the Manager requires user {self.login.user!r} to "
                            "change its password before anything else (log in to the Manager "
                            "once, or PUT /api/v1/users/self/password)")
        permission = PERMISSION.get((method, path), "?")
        return ApiError("forbidden", f"the Manager denied user {self.login.user!r} {method} "
                        f"{path}: its role lacks the permission {permission}")
