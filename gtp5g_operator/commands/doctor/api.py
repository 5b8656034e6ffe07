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
from typing import Any, Callable, List, Mapping, Optional, Sequence, Set, Tuple, Type
from urllib.parse import urlsplit

from ...config import AUTO, Config
from ...core.words import duration
from ...gthulhu.detect import Probe, detect
from ...gthulhu.errors import ApiError
from ...gthulhu.http import DeadlineConnection, DeadlinePassed, JsonHttp, Resolver, tls_context
from ...gthulhu.registry import FLAVORS
from ...gthulhu.writer import ApiWriter, PublicKeyToken
from .model import FAIL, Check, fail, ok, warn
from .targets import Target

SECTION_BUDGET = 2.0  # the whole API section, in units of api.timeout
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


def regex_matches(regex: str, name: str) -> bool:
    """Python's re stands in for Go's RE2: the same for the rules this service writes."""
    try:
        return re.search(regex, name) is not None
    except re.error:
        return False


class ApiProbe:
    """One run of the API checks, in order; stops at the first failure.  It speaks to
    the server through the daemon's own code: the registry's detection, the flavor's
    writer (credentials obtained as the service obtains them) and its read-only
    `holdings`."""

    def __init__(self, config: Config, targets: Sequence[Target],
                 state: Optional[Mapping[str, Any]], state_directory: str,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 flavors: Sequence[Type[ApiWriter]] = FLAVORS) -> None:
        self.config = config
        self.api = config.api
        self.targets = targets
        self.state = state or {}
        self.state_dir = state_directory
        self.flavors = flavors
        self._clock = clock
        self._wall = wall_clock
        self.http = JsonHttp(self.api.url, self.api.timeout, config.ca_pem, clock)
        self.end = clock() + SECTION_BUDGET * self.api.timeout
        self.probe = Probe(self.http, config, clock, wall_clock)
        self.flavor: Optional[Type[ApiWriter]] = None
        self.writer: Optional[ApiWriter] = None

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
        tls = tls_context(self.config.ca_pem) if https else None
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
        try:
            self.flavor = detect(self.probe, self.flavors, self.deadline())
        except ApiError as exc:
            return self._identify_failed(exc)
        name = self.flavor.display
        if self.api.flavor in (AUTO, self.flavor.name):
            return ok("api flavor", f"the server is a Gthulhu {name}; api.flavor = "
                                    f"{self.api.flavor}")
        return fail("api flavor", f"api.flavor = {self.api.flavor}, but the server at "
                                  f"{self.api.url} answers like a Gthulhu {name}",
                    f'set api.flavor = "{self.flavor.name}" (or "auto")')

    def _identify_failed(self, exc: ApiError) -> Check:
        login = self.probe.login
        token_step = login is not None and login.token is None and exc.kind in (
            "unauthorized", "bad-answer")
        if exc.kind == "unauthorized":
            return fail("api token", str(exc), f"install the API's public key as "
                        f"{self.api.public_key}: the pair of the private key it signs "
                        "tokens with")
        return fail("api token" if token_step else "api flavor", str(exc), advice_for(exc))

    # --- credentials, as the service obtains them ----------------------------------------

    def credentials(self) -> Check:
        assert self.flavor is not None
        name = "api login" if self.flavor.credential == "password" else "api token"
        problem = (self.flavor.priority_problem(self.config.strategy.priority)
                   or self.flavor.config_problem(self.config))
        if problem:
            return fail(name, f"the server is a Gthulhu {self.flavor.display}, which this "
                              f"configuration does not suit: {problem}", "fix the configuration")
        writer = self.flavor.create(self.http, self.config, self.state_dir, self._clock,
                                    self._wall)
        if isinstance(writer.login, PublicKeyToken) and self.probe.login is not None \
                and self.probe.login.token is not None:
            writer.login = self.probe.login  # the token detection got: the service's too
        try:
            writer.authenticate(self.deadline())
        except ApiError as exc:
            if exc.kind == "unauthorized" and name == "api login":
                return fail(name, str(exc), "check api.username and the password")
            return fail(name, str(exc), advice_for(exc))
        self.writer = writer
        return self._credentials_check(name, writer)

    def _credentials_check(self, name: str, writer: ApiWriter) -> Check:
        expires = writer.describe().get("token_expires_at")
        lifetime = duration(expires - self._wall()) if isinstance(expires, float) else "?"
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
            held = self.writer.holdings(self.deadline(), last if isinstance(last, str) else None)
        except ApiError as exc:
            return fail("api strategies", str(exc), advice_for(exc))
        if held.listed is not None:
            return coverage_check(held.saw, *coverage({e.pid for e in held.listed},
                                                      self.targets))
        live = [t for t in self.targets if t.boosted]
        if held.rule is None:
            return coverage_check(held.saw, [], [t.info.tgid for t in live])
        covered = [t.info.tgid for t in live if regex_matches(held.rule, t.info.comm)]
        return coverage_check(held.saw, covered,
                              [t.info.tgid for t in live if t.info.tgid not in covered])


def api_checks(config: Config, loaded: bool, targets: Sequence[Target],
               state: Optional[Mapping[str, Any]], state_directory: str) -> List[Check]:
    if not loaded:
        return [warn("api", "not checked: the configuration is invalid (see above)",
                     "fix the configuration first")]
    return ApiProbe(config, targets, state, state_directory).run()
