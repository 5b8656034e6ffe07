"""5. The API: reachable, which Gthulhu answers, our credentials, what it holds now, and
what the scheduler will boost of the live gNB (boost.py words the read-back).

Only what the service itself does to log in (a token for our public key, or
the Manager's login) and read-only GETs, all through the daemon's code (the
registry's detection, the flavor's writer, its `holdings` and `read_back`):
nothing is written.  Each exchange has one deadline of api.timeout
(JsonHttp), and the whole section is capped at SECTION_BUDGET x api.timeout,
so a hanging server cannot hold doctor up.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Type

from ...config import AUTO, Config
from ...core.readback import Comparison
from ...core.sched_ext import SchedulerState
from ...core.words import duration
from ...files import FileProblem, read_json_file
from ...gthulhu.decision_maker import RULE_FILE
from ...gthulhu.detect import Probe, detect
from ...gthulhu.errors import ApiError, ErrorKind
from ...gthulhu.http import JsonHttp
from ...gthulhu.manager import POLICY_FILE
from ...gthulhu.merge import OWNED_FILE
from ...gthulhu.ownership import from_another_machine, this_machine
from ...gthulhu.registry import FLAVORS
from ...gthulhu.writer import ApiWriter, Holdings, PublicKeyToken
from .boost import NOT_WRITTEN, boost_checks, not_verified_check
from .model import FAIL, Check, fail, ok, warn
from .targets import Target

SECTION_BUDGET = 2.0  # the whole API section, in units of api.timeout
# One entry per kind (a kind without one fell back to "see the API server's log", which
# the person on call may not have); {server} is api.url's host and port.
ADVICE_BY_KIND: Dict[ErrorKind, str] = {
    "connect": "is the API up at api.url (host name, port), and the port open through any "
               "firewall?",
    "tls": "set api.ca_file to the CA that signed the API's certificate and use a host name "
           "the certificate names; https:// only for a TLS port",
    "cert-dates": "check this host's clock (timedatectl: NTP synchronized), then the dates of "
                  "the API's certificate (openssl s_client -connect {server} </dev/null | "
                  "openssl x509 -noout -dates)",
    "timeout": "the API accepts connections but does not answer within api.timeout: is it "
               "hung or overloaded?",
    "redirect": "set api.url to the address that answers",
    "stopped": "doctor was stopped by a signal during the exchange: run it again",
    "unauthorized": "the API refuses our credentials: api.public_key must be the pair of the "
                    "key the API signs tokens with; for a Manager, api.username and its "
                    "password must be a Manager user's",
    "forbidden": "give this user's role the permission named",
    "not-found": "the API has no such route or object: check api.url's path (a proxy's "
                 "prefix) and api.flavor; for a Manager, api.node_name must be the node's "
                 "Kubernetes name (kubectl get nodes)",
    "busy": "the API or a proxy in front of it is throttling or timing out this host's "
            "requests (HTTP 408/429): the service retries by itself, no sooner than the "
            "server's Retry-After; if it lasts, raise the rate limit for this host or look "
            "at the API's load",
    "http-4xx": "the API rejects what this host sends (its message is above): check that "
                "api.flavor suits the server's release, and that strategy.priority and "
                "strategy.execution_time_ns are values that release takes",
    "http-5xx": "see the API server's log",
    "bad-answer": "is api.url a Gthulhu API? see its log",
    "wrong-flavor": "is api.url a Gthulhu API (host, port, path)?",
    "not-ours": "another writer's rules are in the way (the message says whose): point api.url "
                "at what feeds this node (a Manager: api.flavor = \"manager\"), or remove "
                "the other rules",
}


class ApiProbe:
    """One run of the API checks, in order; stops at the first failure.  It speaks to
    the server through the daemon's own code: the registry's detection, the flavor's
    writer (credentials obtained as the service obtains them), its read-only
    `holdings` and `read_back`.  `comparison` is the read-back, for the CPU-wait line."""

    def __init__(self, config: Config, targets: Sequence[Target],
                 state: Optional[Mapping[str, Any]], state_directory: str,
                 flavors: Sequence[Type[ApiWriter]] = FLAVORS,
                 scheduler: Optional[SchedulerState] = None) -> None:
        self.config = config
        self.api = config.api
        self.targets = targets
        self.state = state or {}
        self.state_dir = state_directory
        self.flavors = flavors
        self.scheduler = scheduler
        self.http = JsonHttp(self.api.url, self.api.timeout, config.ca_pem)
        self.end = time.monotonic() + SECTION_BUDGET * self.api.timeout
        self.probe = Probe(self.http, config)
        self.flavor: Optional[Type[ApiWriter]] = None
        self.writer: Optional[ApiWriter] = None
        self.held: Optional[Holdings] = None
        self.comparison: Optional[Comparison] = None

    def advice(self, exc: ApiError) -> str:
        host = f"[{self.http.host}]" if ":" in self.http.host else self.http.host
        return ADVICE_BY_KIND[exc.kind].replace("{server}", f"{host}:{self.http.port}")

    def deadline(self) -> float:
        return min(time.monotonic() + self.api.timeout, self.end)

    def run(self) -> List[Check]:
        checks: List[Check] = []
        try:
            for step in (self.identify, lambda: [self.credentials()],
                         lambda: [self.holdings()], self.boost):
                checks += step()
                if checks[-1].level == FAIL:
                    break
        finally:
            if self.writer is not None:
                self.writer.close()  # its own connections too (a Manager's Decision Maker)
            self.http.close()
        return checks

    # --- reaching it, and which Gthulhu ------------------------------------------------

    def identify(self) -> List[Check]:
        """Detection's first request reaches the server through the daemon's client:
        its resolver, TLS context (api.ca_file) and classification of what failed."""
        try:
            self.flavor = detect(self.probe, self.flavors, self.deadline())
        except ApiError as exc:
            if exc.kind in ("connect", "tls", "cert-dates"):
                return [fail("api connection", str(exc), self.advice(exc))]
            # a timeout may have been while connecting: its message says which
            reached = [] if exc.kind == "timeout" else [self._reached()]
            return [*reached, self._identify_failed(exc)]
        name = self.flavor.display
        if self.api.flavor in (AUTO, self.flavor.name):
            return [self._reached(), ok("api flavor", f"the server is a Gthulhu {name}; "
                                                      f"api.flavor = {self.api.flavor}")]
        return [self._reached(), fail(
            "api flavor", f"api.flavor = {self.api.flavor}, but the server at {self.api.url} "
                          f"answers like a Gthulhu {name}",
            f'set api.flavor = "{self.flavor.name}" (or "auto")')]

    def _reached(self) -> Check:
        tls = (f"; TLS verified with {self.api.ca_file or 'the system CAs'}"
               if self.api.url.startswith("https:") else "")
        return ok("api connection", f"{self.api.url} answers{tls}")

    def _identify_failed(self, exc: ApiError) -> Check:
        if exc.kind == "unauthorized":
            return fail("api token", str(exc), f"install the API's public key as "
                        f"{self.api.public_key}: the pair of the private key it signs "
                        "tokens with")
        login = self.probe.login
        token_step = exc.kind == "bad-answer" and login is not None and login.token is None
        return fail("api token" if token_step else "api flavor", str(exc), self.advice(exc))

    # --- credentials, as the service obtains them ----------------------------------------

    def credentials(self) -> Check:
        assert self.flavor is not None
        name = "api login" if self.flavor.credential == "password" else "api token"
        problem = (self.flavor.priority_problem(self.config.strategy.priority)
                   or self.flavor.config_problem(self.config))
        if problem:
            return fail(name, f"the server is a Gthulhu {self.flavor.display}, which this "
                              f"configuration does not suit: {problem}", "fix the configuration")
        writer = self.flavor.create(self.http, self.config, self.state_dir, time.monotonic,
                                    time.time)
        if isinstance(writer.login, PublicKeyToken) and self.probe.login is not None \
                and self.probe.login.token is not None:
            writer.login = self.probe.login  # the token detection got: the service's too
        try:
            writer.authenticate(self.deadline())
        except ApiError as exc:
            if exc.kind == "unauthorized" and name == "api login":
                return fail(name, str(exc), "check api.username and the password")
            return fail(name, str(exc), self.advice(exc))
        self.writer = writer
        return self._credentials_check(name, writer)

    def _credentials_check(self, name: str, writer: ApiWriter) -> Check:
        expires = writer.describe().get("token_expires_mono")
        lifetime = duration(expires - time.monotonic()) if isinstance(expires, float) else "?"
        if not isinstance(writer.login, PublicKeyToken):
            return ok(name, f"logged in to the Gthulhu {writer.display} as "
                            f"{self.api.username!r}; access token valid {lifetime}")
        token = writer.login.token
        assert token is not None
        until = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(token.expires_at))
        saw = (f"obtained with our public key {self.api.public_key} and verified (RS256); "
               f"valid {lifetime} (until {until})")
        if token.skew:
            return warn(name, f"{saw}; the API host's clock is {token.skew:+.0f} s off ours",
                        "check NTP on both hosts")
        return ok(name, saw)

    # --- what it holds --------------------------------------------------------------------

    def holdings(self) -> Check:
        assert self.writer is not None
        api = self.state.get("api")
        last = api.get("rule") if isinstance(api, dict) else None
        try:
            self.held = self.writer.holdings(self.deadline(),
                                             last if isinstance(last, str) else None)
        except ApiError as exc:
            return fail("api strategies", str(exc), self.advice(exc))
        live = any(t.boosted for t in self.targets)
        copied = [n for n in (OWNED_FILE, POLICY_FILE, RULE_FILE) if self._copied(n)]
        if copied:  # the service ignores them, saying so in the journal only
            return warn("api strategies", f"{self.held.saw}; {', '.join(copied)} in "
                        f"{self.state_dir}: written on another machine (copied with an image "
                        "of that host), ignored", "remove them, and give every host its own "
                        "machine-id and api.node_name")
        if self.writer.sends_names and self.held.rule is None and live:
            return warn("api strategies", f"{self.held.saw}; no rule of this host while a gNB "
                                          "runs", NOT_WRITTEN)
        return ok("api strategies", self.held.saw)

    def _copied(self, name: str) -> bool:
        path = os.path.join(self.state_dir, name)
        try:
            return from_another_machine(path, read_json_file(path), this_machine())
        except (OSError, FileProblem, ValueError):
            return False

    # --- what the scheduler will boost ------------------------------------------------------

    def boost(self) -> List[Check]:
        """The read-back of every thread of the live targets, against the rule the server
        holds for this host (rule flavors) or the IDs the service would write (v0)."""
        assert self.writer is not None and self.held is not None
        views = [t.view() for t in self.targets if t.boosted]
        if not views:
            return [ok("boost", "no live target would be boosted: nothing to read back")]
        rule = (self.held.rule or "") if self.writer.sends_names else None
        try:
            self.comparison = self.writer.read_back(views, self.deadline(), rule)
        except ApiError as exc:
            return [fail("boost", str(exc), self.advice(exc))]
        if self.comparison is None:
            return [not_verified_check(self.writer.verify_problem())]
        return boost_checks(self.comparison, self.writer.readback_source, self.scheduler)


def not_loaded() -> List[Check]:
    return [warn("api", "not checked: the configuration is invalid (see above)",
                 "fix the configuration first")]
