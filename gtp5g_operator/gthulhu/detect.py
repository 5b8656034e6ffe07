"""api.flavor = "auto": tell the three Gthulhu servers apart, then speak that one.

No version field can be trusted (Gthulhu's `/version` answers a constant),
so the server is asked what it can do:

1. POST /api/v1/auth/token with our public key.  An answer with a token:
   v0 or a Decision Maker — the token is kept, it is the one we need anyway;
   then GET /api/v1/node-intents/merkle: 200 is a Decision Maker (that takes
   rules); anything else is taken for v0, whose first POST then says whether
   it really is one (a Decision Maker from before 2026-08 answers 404 there,
   and cannot take rules either).  A 401 is our key refused: no flavor can be
   told, the error is the key's.
2. 404 to the token route: POST /api/v1/auth/login with an empty body — a
   Manager answers 400/401/422, never 404.

Detection runs before the first push and again after any failure to reach
the server (a reconnect may reach another server); the result is logged
once per change.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Optional, Sequence

from ..config import Config
from ..config.schema import StrategyConfig
from ..core.tracker import ProcessView
from .decision_maker import MERKLE_PATH, DecisionMakerWriter
from .errors import ApiError
from .http import JsonHttp
from .manager import LOGIN_PATH, ManagerWriter
from .merge import OwnedIds
from .v0 import V0Writer
from .writer import ApiWriter, PublicKeyToken

log = logging.getLogger(__name__)

REDETECT_AFTER = ("connect", "timeout", "tls", "wrong-flavor")


def make_flavor_writer(flavor: str, http: JsonHttp, config: Config, state_dir: str,
                       clock: Callable[[], float] = time.monotonic,
                       wall_clock: Callable[[], float] = time.time) -> ApiWriter:
    """The writer of one flavor (announcing what a rule flavor means for this host)."""
    if flavor == "v0":
        owned = OwnedIds(state_dir, config.api.url) if config.strategy.mode == "merge" else None
        return V0Writer(http, config, owned, clock, wall_clock)
    if config.strategy.mode == "merge":
        raise ApiError("wrong-flavor", f'strategy.mode = "merge" needs the v0 API, but the '
                       f"server is a {flavor}: use \"overwrite\"")
    announce_rule_flavor(flavor, config)
    if flavor == "decision-maker":
        return DecisionMakerWriter(http, config, state_dir, clock, wall_clock)
    if not config.api.username:
        raise ApiError("wrong-flavor", "the server is a Gthulhu Manager: set api.username and "
                       "its password (api.password_file or LoadCredential=gthulhu-password)")
    return ManagerWriter(http, config, state_dir, clock)


def announce_rule_flavor(flavor: str, config: Config) -> None:
    log.info("strategy.targets is ignored with the %s flavor: the server picks the tasks "
             "from this host's rule", flavor)
    if config.match.uid or config.match.exe:
        log.warning("the %s matches tasks by name: a process of any user named like a "
                    "tracked thread (%s) is boosted too; match.uid and match.exe only decide "
                    "whether this host publishes the rule", flavor, "/".join(config.match.comm))


def detect(http: JsonHttp, login: Optional[PublicKeyToken], deadline: float) -> str:
    """The flavor of the server at `http` (see the module docstring)."""
    if login is not None:
        answer = login.request(deadline)
        if answer.status != 404:
            token = login.accept(answer)  # raises for a refused key or a broken answer
            if http.request("GET", MERKLE_PATH, None, deadline, token.value).status == 200:
                return "decision-maker"
            return "v0"
    if http.request("POST", LOGIN_PATH, {}, deadline).status in (400, 401, 422):
        return "manager"
    raise ApiError("wrong-flavor", f"{http.base_url} answers none of Gthulhu's login routes: "
                   "is api.url a Gthulhu API (host, port, path)?")


class AutoWriter(ApiWriter):
    """Detects the flavor when needed and delegates to that flavor's writer."""

    def __init__(self, http: JsonHttp, config: Config, state_dir: str,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        super().__init__(http, config.strategy)
        self._config = config
        self._state_dir = state_dir
        self._clock = clock
        self._wall = wall_clock
        self.delegate: Optional[ApiWriter] = None
        self._redetect = True

    @property
    def flavor(self) -> str:  # type: ignore[override]
        return self.delegate.flavor if self.delegate is not None else "auto"

    @property
    def sends_names(self) -> bool:  # type: ignore[override]
        return self.delegate is None or self.delegate.sends_names

    def authenticate(self, deadline: float) -> bool:
        fresh = False
        if self._redetect or self.delegate is None:
            fresh = self._detect(deadline)
        assert self.delegate is not None
        return self.delegate.authenticate(deadline) or fresh

    def _detect(self, deadline: float) -> bool:
        """Detect; True when detecting obtained fresh credentials for the delegate."""
        login = None
        if self._config.public_key_pem:
            login = PublicKeyToken(self.http, self._config.public_key_pem,
                                   self._config.api.public_key,
                                   f"gtp5g-operator@{self._config.node_name}", self._clock,
                                   self._wall)
        flavor = detect(self.http, login, deadline)
        self._redetect = False
        if self.delegate is None or self.delegate.flavor != flavor:
            log.info("the server at %s is a Gthulhu %s (api.flavor = auto)", self.http.base_url,
                     {"v0": "2025 API (v0)", "decision-maker": "Decision Maker",
                      "manager": "Manager"}[flavor])
            self.delegate = make_flavor_writer(flavor, self.http, self._config,
                                               self._state_dir, self._clock, self._wall)
            self.delegate.strategy = self.strategy
        # The token detection obtained is the one v0 and the Decision Maker need.
        if login is None or login.token is None:
            return False
        if isinstance(self.delegate, (V0Writer, DecisionMakerWriter)):
            self.delegate.login = login
            return True
        return False

    def _delegated(self, call: Callable[[ApiWriter], Any]) -> Any:
        if self.delegate is None:
            raise ApiError("wrong-flavor", "the server's flavor is not known yet")
        try:
            return call(self.delegate)
        except ApiError as exc:
            if exc.kind in REDETECT_AFTER:
                self._redetect = True
            raise

    def drop_credentials(self) -> None:
        if self.delegate is not None:
            self.delegate.drop_credentials()

    def write(self, views: Sequence[ProcessView], deadline: float) -> int:
        count: int = self._delegated(lambda w: w.write(views, deadline))
        return count

    def clear(self, deadline: float) -> None:
        self._delegated(lambda w: w.clear(deadline))

    def describe(self) -> Dict[str, Any]:
        if self.delegate is None:
            return {**super().describe(), "flavor": "auto (not detected yet)"}
        return {**self.delegate.describe(), "detected": True}

    @property
    def strategy(self) -> StrategyConfig:
        return self._strategy

    @strategy.setter
    def strategy(self, value: StrategyConfig) -> None:
        self._strategy = value
        if getattr(self, "delegate", None) is not None:
            self.delegate.strategy = value  # type: ignore[union-attr]
