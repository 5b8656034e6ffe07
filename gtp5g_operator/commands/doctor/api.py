"""5. The API: reachable, which Gthulhu answers, our credentials, what it holds now.

Only what the service itself does to log in (a token for our public key, or
the Manager's login) and read-only GETs: nothing is written.  Each exchange
has one deadline of api.timeout (JsonHttp), and the whole section is capped
at SECTION_BUDGET x api.timeout, so a hanging server cannot hold doctor up.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from typing import Any, Callable, List, Mapping, Optional, Sequence, Set, Tuple
from urllib.parse import urlsplit

from ...config import Config
from ...core.strategy import NodeRule, rule_priority
from ...gthulhu.decision_maker import EMPTY_ROOTS, MERKLE_PATH, rule_root
from ...gthulhu.detect import detect
from ...gthulhu.errors import ApiError, check_answer
from ...gthulhu.http import DeadlineConnection, DeadlinePassed, JsonHttp, Resolver
from ...gthulhu.manager import SELF_PATH, ManagerLogin
from ...gthulhu.v0 import STRATEGIES_PATH
from ...gthulhu.writer import PublicKeyToken
from .model import FAIL, Check, duration, fail, ok, plural, warn
from .targets import Target

SECTION_BUDGET = 2.0  # the whole API section, in units of api.timeout
FLAVOR_NAMES = {"v0": "2025 API (v0)", "decision-maker": "Decision Maker",
                "manager": "Manager"}
NOT_PUSHED = ("the service writes a gNB once its tasks show up in the trace (GTP-U "
              "traffic): see the trace events and service checks")
ADVICE_BY_KIND = {
    "timeout": "the API accepts connections but does not answer within api.timeout: is it "
               "hung or overloaded?",
    "redirect": "set api.url to the address that answers",
    "wrong-flavor": "is api.url a Gthulhu API (host, port, path)?",
    "bad-answer": "is api.url a Gthulhu API? see its log",
    "http-5xx": "see the API server's log",
    "forbidden": "give this user's role the permission named",
}


def advice_for(exc: ApiError) -> str:
    return ADVICE_BY_KIND.get(exc.kind, "see the API server's log")


# --- reaching it --------------------------------------------------------------------------


def connection_failure(exc: BaseException, url: str, host: str, port: int,
                       timeout: float) -> Check:
    """The check for a failed resolve, connect or handshake, by what failed."""
    name = "api connection"
    if isinstance(exc, socket.gaierror):
        return fail(name, f"cannot resolve {host}: {exc.strerror}",
                    "check the host name in api.url and the resolver (/etc/resolv.conf)")
    if isinstance(exc, (DeadlinePassed, TimeoutError)):
        detail = str(exc) if isinstance(exc, DeadlinePassed) else "no answer in time (connecting)"
        return fail(name, f"{url}: {detail} (api.timeout {timeout:g} s)",
                    "is the API host up, and the port open through any firewall?")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return fail(name, f"TLS with {host}: its certificate was refused: {exc.verify_message}",
                    "set api.ca_file to the CA that signed the API's certificate, and use a "
                    "host name the certificate names")
    if isinstance(exc, ssl.SSLError):
        return fail(name, f"TLS with {host}:{port} failed: {exc.reason or exc}",
                    "does that port speak TLS? (https:// or http:// in api.url)")
    if isinstance(exc, ConnectionRefusedError):
        return fail(name, f"nothing listens at {host}:{port} (connection refused)",
                    "start the Gthulhu API, or correct the port in api.url")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
    return fail(name, f"cannot reach {host}:{port}: {reason}",
                "check the network route to the API and api.url")


def coverage(pids: Set[int], targets: Sequence[Target]) -> Tuple[List[int], List[int]]:
    """(covered, missing) TGIDs of the live targets: a target counts when its process
    or any of its threads is in the server's list."""
    live = [t for t in targets if t.boosted]
    covered = [t.info.tgid for t in live if t.info.tgid in pids or pids & set(t.tids)]
    return covered, [t.info.tgid for t in live if t.info.tgid not in covered]


def coverage_check(saw: str, covered: Sequence[int], missing: Sequence[int],
                   advice: str = NOT_PUSHED) -> Check:
    if missing:
        return warn("api strategies", f"{saw}; they do not include the live target(s) "
                                      f"{', '.join(map(str, missing))}", advice)
    if covered:
        return ok("api strategies", f"{saw}; they include this host's live target(s) "
                                    f"{', '.join(map(str, covered))}")
    return ok("api strategies", f"{saw}; no live target on this host to look for")


def strategy_pids(body: Any) -> Set[int]:
    """PIDs of a strategies answer (`scheduling` is null when empty on the 2025 server)."""
    items = body.get("scheduling") if isinstance(body, dict) else None
    if items is None:
        return set()
    if not isinstance(items, list):
        raise ApiError("bad-answer", "strategies answer: scheduling is not a list")
    return {i["pid"] for i in items if isinstance(i, dict) and isinstance(i.get("pid"), int)}


def regex_matches(regex: str, name: str) -> bool:
    """Python's re stands in for Go's RE2: the same for the rules this service writes."""
    try:
        return re.search(regex, name) is not None
    except re.error:
        return False


class ApiProbe:
    """One run of the API checks, in order; stops at the first failure."""

    def __init__(self, config: Config, targets: Sequence[Target],
                 state: Optional[Mapping[str, Any]],
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.api = config.api
        self.targets = targets
        self.state = state or {}
        self._clock = clock
        self._wall = wall_clock
        self.http = JsonHttp(self.api.url, self.api.timeout, config.ca_pem, clock)
        self.end = clock() + SECTION_BUDGET * self.api.timeout
        self.login: Optional[PublicKeyToken] = None
        self.flavor = ""
        self.bearer = ""

    def deadline(self) -> float:
        return min(self._clock() + self.api.timeout, self.end)

    def run(self) -> List[Check]:
        checks: List[Check] = []
        try:
            for step in (self.connection, self.identify, self.credentials, self.holdings):
                checks.append(step())
                if checks[-1].level == FAIL:
                    break
        finally:
            self.http.close()
        return checks

    # --- DNS, TCP, TLS --------------------------------------------------------------------

    def connection(self) -> Check:
        parts = urlsplit(self.api.url)
        https = parts.scheme == "https"
        host, port = parts.hostname or "", parts.port or (443 if https else 80)
        tls = ssl.create_default_context(cadata=self.config.ca_pem or None) if https else None
        conn = DeadlineConnection(host, port, Resolver(), tls, self._clock)
        conn.deadline = self.deadline()
        try:
            conn.connect()
            peer = str(conn.sock.getpeername()[0])
        except (OSError, ValueError) as exc:
            return connection_failure(exc, self.api.url, host, port, self.api.timeout)
        finally:
            conn.close()
        steps = [] if host == peer else [f"{host} resolved to {peer}"]
        steps.append(f"TCP {peer}:{port} connected")
        if https:
            steps.append(f"TLS verified with {self.api.ca_file or 'the system CAs'}")
        return ok("api connection", f"{self.api.url}: {'; '.join(steps)}")

    # --- which Gthulhu --------------------------------------------------------------------

    def identify(self) -> Check:
        if self.config.public_key_pem:
            self.login = PublicKeyToken(self.http, self.config.public_key_pem,
                                        self.api.public_key,
                                        f"gtp5g-operator@{self.config.node_name}",
                                        self._clock, self._wall)
        try:
            self.flavor = detect(self.http, self.login, self.deadline())
        except ApiError as exc:
            return self._identify_failed(exc)
        name = FLAVOR_NAMES[self.flavor]
        if self.api.flavor in ("auto", self.flavor):
            return ok("api flavor", f"the server is a Gthulhu {name}; api.flavor = "
                                    f"{self.api.flavor}")
        return fail("api flavor", f"api.flavor = {self.api.flavor}, but the server at "
                                  f"{self.api.url} answers like a Gthulhu {name}",
                    f'set api.flavor = "{self.flavor}" (or "auto")')

    def _identify_failed(self, exc: ApiError) -> Check:
        token_step = self.login is not None and self.login.token is None and exc.kind in (
            "unauthorized", "bad-answer")
        if exc.kind == "unauthorized":
            return fail("api token", str(exc), f"install the API's public key as "
                        f"{self.api.public_key}: the pair of the private key it signs "
                        "tokens with")
        return fail("api token" if token_step else "api flavor", str(exc), advice_for(exc))

    # --- credentials ----------------------------------------------------------------------

    def credentials(self) -> Check:
        if self.flavor == "manager":
            return self._manager_login()
        assert self.login is not None and self.login.token is not None  # detect() got it
        token = self.login.token
        self.bearer = token.value
        until = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(token.expires_at))
        saw = (f"obtained with our public key {self.api.public_key} and verified (RS256); "
               f"valid {duration(token.expires_at - self._wall())} (until {until})")
        if token.skew:
            return warn("api token", f"{saw}; the API host's clock is {token.skew:+.0f} s off "
                                     "ours", "check NTP on both hosts")
        return ok("api token", saw)

    def _manager_login(self) -> Check:
        if not self.api.username:
            return fail("api login", "the server is a Gthulhu Manager, but api.username is not "
                                     "set", "set api.username and its password "
                                            "(api.password_file or LoadCredential=)")
        login = ManagerLogin(self.http, self.api.username, self.config.password, self._clock)
        try:
            login.obtain(self.deadline())
        except ApiError as exc:
            return fail("api login", str(exc), advice_for(exc) if exc.kind != "unauthorized"
                        else "check api.username and the password file")
        self.bearer = login.access or ""
        lifetime = (login.expires_at or self._wall()) - self._wall()
        return ok("api login", f"logged in to the Manager as {self.api.username!r}; access "
                               f"token valid {duration(lifetime)}")

    # --- what it holds --------------------------------------------------------------------

    def _get(self, path: str) -> Any:
        answer = self.http.request("GET", path, None, self.deadline(), self.bearer)
        check_answer(answer.status, answer.body, f"GET {self.http.base_url}{path}",
                     answer.location)
        return answer.body

    def holdings(self) -> Check:
        try:
            if self.flavor == "manager":
                return self._manager_policy()
            pids = strategy_pids(self._get(STRATEGIES_PATH))
            saw = f"the server holds {plural(len(pids), 'strategy', 'strategies')}"
            if self.flavor == "decision-maker":
                saw = (f"the Decision Maker resolves {plural(len(pids), 'strategy', 'strategies')}"
                       f" for the scheduler; {self._rules()}")
            return coverage_check(saw, *coverage(pids, self.targets))
        except ApiError as exc:
            return fail("api strategies", str(exc), advice_for(exc))

    def _expected_root(self) -> str:
        """The merkle root of the rule the running service last wrote (its state.json)."""
        api = self.state.get("api")
        regex = api.get("rule") if isinstance(api, dict) else None
        if not isinstance(regex, str):
            return ""
        node = self.config.node_name
        return rule_root(NodeRule(f"gtp5g-operator@{node}", node, regex,
                                  rule_priority(self.config.strategy),
                                  self.config.strategy.execution_time_ns))

    def _rules(self) -> str:
        answer = self.http.request("GET", MERKLE_PATH, None, self.deadline(), self.bearer)
        if answer.status == 404:
            return "it has no merkle route (a Decision Maker from before 2026-08)"
        check_answer(answer.status, answer.body, f"GET {self.http.base_url}{MERKLE_PATH}")
        data = answer.body.get("data") if isinstance(answer.body, dict) else None
        root = data.get("rootHash") if isinstance(data, dict) else None
        if root in EMPTY_ROOTS:
            return "it holds no node rule"
        if root == self._expected_root():
            return "it holds exactly the rule this service last wrote"
        return f"it holds node rules (merkle root {str(root)[:12]}…)"

    def _manager_policy(self) -> Check:
        body = self._get(SELF_PATH)
        data = body.get("data") if isinstance(body, dict) else None
        policies = data.get("policies") if isinstance(data, dict) else None
        items = [p for p in policies if isinstance(p, dict)] if isinstance(policies, list) else []
        node = self.config.node_name
        mine = [p for p in items if p.get("nodeNames") == [node]]
        if not mine:
            saw = (f"the Manager holds no policy of {self.api.username!r} for node {node} "
                   f"({plural(len(items), 'policy', 'policies')} of this user in all)")
            return coverage_check(saw, [], [t.info.tgid for t in self.targets if t.boosted])
        regex = str(mine[0].get("commandRegex", ""))
        saw = f"policy {mine[0].get('id')} for node {node}: {regex}"
        live = [t for t in self.targets if t.boosted]
        covered = [t.info.tgid for t in live if regex_matches(regex, t.info.comm)]
        return coverage_check(saw, covered, [t.info.tgid for t in live
                                             if t.info.tgid not in covered])


def api_checks(config: Config, loaded: bool, targets: Sequence[Target],
               state: Optional[Mapping[str, Any]]) -> List[Check]:
    if not loaded:
        return [warn("api", "not checked: the configuration is invalid (see above)",
                     "fix the configuration first")]
    return ApiProbe(config, targets, state).run()
