"""api.flavor = "auto": ask the server what it can do, then speak that flavor.

No version field can be trusted (Gthulhu's `/version` answers a constant), so
each flavor of the registry, in its order, looks at the server through one
`Probe` — which trades our public key for a token at most once (a 401 there
is our key refused: no flavor can be told, the error is the key's) and
remembers the answers — until one says "that is me".  Today: a token and the
node-rule merkle route are a Decision Maker; a token alone is v0 (whose
first POST then says whether it really is one); a login route answering
400/401/422 is a Manager.

Detection runs before the first push and again after any failure to reach
the server (a reconnect may reach another server); the result is logged
once per change.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Type, TypeVar

from ..config import Config
from ..config.schema import StrategyConfig
from ..core.readback import Comparison
from ..core.tracker import ProcessView
from .auth import Token
from .errors import ApiError, ErrorKind, check_answer
from .http import Answer, JsonHttp
from .ownership import recorded
from .writer import ApiWriter, PublicKeyToken

log = logging.getLogger(__name__)

REDETECT_AFTER: Sequence[ErrorKind] = ("connect", "timeout", "tls", "cert-dates",
                                       "wrong-flavor")
_NOT_ASKED = object()
T = TypeVar("T")


class Probe:
    """What detection has learnt of the server so far (each question asked once)."""

    def __init__(self, http: JsonHttp, config: Config,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.http = http
        self.login: Optional[PublicKeyToken] = None
        if config.public_key_pem:
            self.login = PublicKeyToken(http, config, True, clock, wall_clock)
        self._token: Any = _NOT_ASKED

    def token(self, deadline: float) -> Optional[Token]:
        """A verified token for our public key, None when the server has no such route
        (or we have no key); raises ApiError when the key is refused or the answer bad."""
        if self._token is _NOT_ASKED:
            self._token = None
            if self.login is not None:
                answer: Answer = self.login.request(deadline)
                if answer.status != 404:
                    self._token = self.login.accept(answer)
        return self._token  # type: ignore[no-any-return]

    def status(self, method: str, path: str, payload: Any, deadline: float,
               authorized: bool = False) -> int:
        """The HTTP status of one request (with our token when `authorized`).  Raises
        for a 408, 429 or 5xx: a server busy or failing says nothing of its flavor (a
        throttled Decision Maker was taken for v0), and its Retry-After is kept."""
        bearer = self.login.header() if authorized and self.login is not None else None
        answer = self.http.request(method, path, payload, deadline, bearer)
        if answer.status in (408, 429) or answer.status >= 500:
            check_answer(answer, f"{method} {self.http.base_url}{path} (detecting the flavor)")
        return answer.status


def detect(probe: Probe, flavors: Sequence[Type[ApiWriter]], deadline: float
           ) -> Type[ApiWriter]:
    """The first flavor of `flavors` (the registry's order) that recognises the server."""
    for flavor in flavors:
        if flavor.probe(probe, deadline):
            return flavor
    raise ApiError("wrong-flavor", f"{probe.http.base_url} answers none of Gthulhu's login "
                   "routes: is api.url a Gthulhu API (host, port, path)?")


class AutoWriter(ApiWriter):
    """Detects the flavor when needed and delegates to that flavor's writer."""

    name = "auto"

    def __init__(self, http: JsonHttp, config: Config, state_dir: str,
                 flavors: Sequence[Type[ApiWriter]],
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        super().__init__(http, config.strategy)
        self._config = config
        self._state_dir = state_dir
        self._flavors = flavors
        self._clock = clock
        self._wall = wall_clock
        self.delegate: Optional[ApiWriter] = None
        self._redetect = True
        # Credentials obtained by the logins detection replaced (a new token, or another
        # flavor at the same address): credentials_obtained is a counter, never back.
        self._retired = 0
        # The login of a first detection that failed after its token (a timeout on the
        # route after it): the retry carries on from it as from a delegate's, or every
        # retry said its token at INFO (and the clock skew) while the server hung.
        self._undetected: Optional[PublicKeyToken] = None

    def names_tasks(self) -> bool:
        return self.delegate is None or self.delegate.names_tasks()

    def place(self, config: Config) -> Tuple[str, ...]:
        # not detected yet: nothing was written anywhere
        return self.delegate.place(config) if self.delegate is not None else ()

    def unsuited(self, config: Config) -> str:
        # not detected yet: nothing was written anywhere
        return self.delegate.unsuited(config) if self.delegate is not None else ""

    def authenticate(self, deadline: float) -> bool:
        fresh = False
        if self._redetect or self.delegate is None:
            fresh = self._detect(deadline)
        assert self.delegate is not None
        return self.delegate.authenticate(deadline) or fresh

    def _detect(self, deadline: float) -> bool:
        """Detect; True when detecting obtained fresh credentials for the delegate."""
        probe = Probe(self.http, self._config, self._clock, self._wall)
        before = self.delegate.login if self.delegate is not None else self._undetected
        if probe.login is not None and isinstance(before, PublicKeyToken):
            probe.login.carry_on_from(before)  # detecting again, after a reconnect
        try:
            flavor = detect(probe, self._flavors, deadline)
            # Inside the try: a flavor this configuration does not suit failed every retry
            # after its token and its "is a" line, both at INFO each time (with the backoff
            # at resync_interval: ~17,000 lines a day) and the tokens not counted.
            problem = flavor.priority_problem(self.strategy.priority) or flavor.config_problem(
                self._config)
            if problem:
                raise ApiError("wrong-flavor", f"the server is a Gthulhu {flavor.display}, "
                               f"which this configuration does not suit: {problem}")
        except ApiError:
            if probe.login is not None and probe.login.obtained:
                self._retired += probe.login.obtained  # issued all the same: counted
                if self.delegate is None:
                    self._undetected = probe.login
            raise
        self._redetect = False
        if self.delegate is None or self.delegate.name != flavor.name:
            log.info("the server at %s is a Gthulhu %s (api.flavor = auto)", self.http.base_url,
                     flavor.display)
            if self.delegate is not None:
                self._retired += self.delegate.login.obtained
                self.delegate.close()
            self.delegate = flavor.create(self.http, self._config, self._state_dir,
                                          self._clock, self._wall)
            self.delegate.strategy = self.strategy
        # The token detection obtained is the one a public-key flavor needs.
        token = probe.login if probe.login is not None and probe.login.token else None
        if token is not None and isinstance(self.delegate.login, PublicKeyToken):
            self._retired += self.delegate.login.obtained
            self.delegate.login = token
            return True
        return False

    def _delegated(self, call: Callable[[ApiWriter], T]) -> T:
        if self.delegate is None:
            raise ApiError("wrong-flavor", "the server's flavor is not known yet")
        try:
            return call(self.delegate)
        except ApiError as exc:
            # Not after a stop that cut the exchange short ("stopped", not in the
            # list): the clear on stop would detect again (a token, a probe) within
            # its 1.5 s, and a slow server's clear ran out of time.
            if exc.kind in REDETECT_AFTER:
                self._redetect = True
            raise

    def close(self) -> None:
        # The delegate may hold clients of its own (a Manager's of the node's Decision
        # Maker): closing only the shared one left a connection open per replaced writer.
        if self.delegate is not None:
            self.delegate.close()
        super().close()

    def drop_credentials(self) -> None:
        if self.delegate is not None:
            self.delegate.drop_credentials()

    def write(self, views: Sequence[ProcessView], deadline: float) -> int:
        return self._delegated(lambda w: w.write(views, deadline))

    def clear(self, deadline: float) -> None:
        self._delegated(lambda w: w.clear(deadline))

    def left_behind(self) -> str:
        if self.delegate is not None:
            return self.delegate.left_behind()
        # Not detected in this run (the server unreachable since the start): nothing
        # written by this run, but a run before may have, and its proof says what.
        # "nothing written yet" sent an admin away from a policy left on the server.
        said = [w for f in self._flavors if f.proof_file
                if (w := recorded(os.path.join(self._state_dir, f.proof_file),
                                  self._config.api.url))]
        return (f"at {self.http.base_url} (its flavor not found in this run), what the state "
                f"directory names: {'; '.join(said)}" if said
                else f"nothing this host knows of at {self.http.base_url}")

    def read_back(self, views: Sequence[ProcessView], deadline: float,
                  rule: Optional[str] = None) -> Optional[Comparison]:
        return self._delegated(lambda w: w.read_back(views, deadline, rule))

    def verify_problem(self) -> str:
        if self.delegate is None:
            return "the server's flavor is not known yet"
        return self.delegate.verify_problem()

    @property
    def readback_source(self) -> str:
        return self.delegate.readback_source if self.delegate is not None else ""

    def describe(self) -> Dict[str, Any]:
        if self.delegate is None:
            return {**super().describe(), "flavor": "auto (not detected yet)"}
        return {**self.delegate.describe(), "detected": True,
                "credentials_obtained": self._retired + self.delegate.login.obtained}

    @property
    def strategy(self) -> StrategyConfig:
        return self._strategy

    @strategy.setter
    def strategy(self, value: StrategyConfig) -> None:
        self._strategy = value
        if getattr(self, "delegate", None) is not None:
            self.delegate.strategy = value  # type: ignore[union-attr]
