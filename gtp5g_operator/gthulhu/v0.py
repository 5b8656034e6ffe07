"""The v0 writer: Gthulhu's 2025 API (≤ v0.4.4), explicit PIDs.

`POST /api/v1/scheduling/strategies` replaces the server's one list.  In
"overwrite" mode the posted list is exactly this host's set; in "merge" mode
the list is read first and only this host's entries are replaced (merge.py).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence

from ..config import Config
from ..core.readback import Comparison, compare_ids
from ..core.strategy import Strategy, build_strategies, target_ids
from ..core.tracker import ProcessView
from ..core.words import plural
from .answers import listed_strategies, v0_strategy_list
from .errors import ApiError, check_answer
from .http import JsonHttp
from .merge import OwnedIds, merge_strategies
from .writer import ApiWriter, Holdings, PublicKeyToken

if TYPE_CHECKING:
    from .detect import Probe

STRATEGIES_PATH = "/api/v1/scheduling/strategies"


class V0Writer(ApiWriter):
    name = "v0"
    display = "2025 API (v0)"
    summary = "the 2025 API (<= v0.4.4): strategies with explicit PIDs"
    login: PublicKeyToken

    @classmethod
    def probe(cls, probe: Probe, deadline: float) -> bool:
        # Gives a token for our key (so does a Decision Maker, tried first).
        return probe.token(deadline) is not None

    @classmethod
    def create(cls, http: JsonHttp, config: Config, state_dir: str,
               clock: Callable[[], float], wall_clock: Callable[[], float]) -> V0Writer:
        owned = OwnedIds(state_dir, config.api.url) if config.strategy.mode == "merge" else None
        return cls(http, config, owned, clock, wall_clock)

    def __init__(self, http: JsonHttp, config: Config, owned: Optional[OwnedIds],
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        super().__init__(http, config.strategy)
        self.merge = config.strategy.mode == "merge"
        self.owned = owned  # merge mode: the IDs this host pushed (persisted)
        self.login = PublicKeyToken(http, config.public_key_pem, config.api.public_key, None,
                                    clock, wall_clock)

    # --- what status shows ------------------------------------------------------------------

    def describe(self) -> Dict[str, Any]:
        token = self.login.token
        return {**super().describe(), "mode": self.strategy.mode,
                "token_expires_at": token.expires_at if token else None,
                "credentials_obtained": self.login.obtained}

    # --- the state ------------------------------------------------------------------------

    def write(self, views: Sequence[ProcessView], deadline: float) -> int:
        strategies = build_strategies(target_ids(views, self.strategy.targets), self.strategy)
        self._write(strategies, deadline)
        return len(strategies)

    def clear(self, deadline: float) -> None:
        self._write([], deadline)  # merge mode: removes only this host's entries

    def _write(self, strategies: List[Strategy], deadline: float) -> None:
        if not self.merge:
            self._post(strategies, deadline)
            return
        owned = set(self.owned.ids) if self.owned is not None else set()
        ours = {s["pid"] for s in strategies}
        merged = merge_strategies(self.get_strategies(deadline), strategies, owned)
        if self.owned is not None:
            self.owned.replace(owned | ours)  # recorded before the POST: a crash after it
        self._post(merged, deadline)  # must not orphan entries
        if self.owned is not None:
            self.owned.replace(ours)

    def _post(self, strategies: List[Strategy], deadline: float) -> None:
        answer = self.http.request("POST", STRATEGIES_PATH, {"strategies": strategies},
                                   deadline, self.login.header())
        if answer.status == 404:
            raise ApiError("wrong-flavor", f"POST {self.http.base_url}{STRATEGIES_PATH} "
                           "answered 404: the server is not Gthulhu's 2025 API (v0); newer "
                           'Gthulhu runs a Decision Maker or a Manager (api.flavor = "auto")',
                           404)
        check_answer(answer.status, answer.body, f"POST {self.http.base_url}{STRATEGIES_PATH}",
                     answer.location)

    def get_strategies(self, deadline: float) -> List[Mapping[str, Any]]:
        return v0_strategy_list(self._get_strategies(deadline))

    def _get_strategies(self, deadline: float) -> Any:
        answer = self.http.request("GET", STRATEGIES_PATH, None, deadline, self.login.header())
        check_answer(answer.status, answer.body, f"GET {self.http.base_url}{STRATEGIES_PATH}",
                     answer.location)
        return answer.body

    def read_back(self, views: Sequence[ProcessView], deadline: float) -> Optional[Comparison]:
        listed = listed_strategies(self._get_strategies(deadline))
        return compare_ids(listed, target_ids(views, self.strategy.targets))

    @property
    def readback_source(self) -> str:
        return f"{self.http.base_url}{STRATEGIES_PATH}"

    def holdings(self, deadline: float, last_rule: Optional[str] = None) -> Holdings:
        listed = listed_strategies(self._get_strategies(deadline))
        return Holdings(f"the server holds {plural(len(listed), 'strategy', 'strategies')}",
                        listed)
