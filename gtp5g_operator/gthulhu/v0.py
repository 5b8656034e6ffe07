"""The v0 writer: Gthulhu's 2025 API (≤ v0.4.4), explicit PIDs.

`POST /api/v1/scheduling/strategies` replaces the server's one list.  In
"overwrite" mode the posted list is exactly this host's set; in "merge" mode
the list is read first and only this host's entries are replaced (merge.py).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

from ..config import Config
from ..core.readback import Comparison, compare_ids
from ..core.strategy import Strategy, build_strategies, target_ids
from ..core.tracker import ProcessView
from ..core.words import plural
from .answers import listed_strategies, v0_strategy_list
from .errors import ApiError, check_answer, error_text
from .http import JsonHttp
from .merge import OWNED_FILE, OwnedIds, merge_strategies, written
from .writer import STRATEGIES_PATH, ApiWriter, Holdings, PublicKeyToken

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .detect import Probe


class V0Writer(ApiWriter):
    name = "v0"
    display = "2025 API (v0)"
    summary = "the 2025 API (<= v0.4.4): strategies with explicit PIDs"
    readback_path = STRATEGIES_PATH
    proof_file = OWNED_FILE  # (merge mode's)
    login: PublicKeyToken

    @classmethod
    def probe(cls, probe: Probe, deadline: float) -> bool:
        # Gives a token for our key (so does a Decision Maker, tried first).
        return probe.token(deadline) is not None

    @classmethod
    def create(cls, http: JsonHttp, config: Config, state_dir: str,
               clock: Callable[[], float], wall_clock: Callable[[], float]) -> V0Writer:
        return cls(http, config, state_dir, clock, wall_clock)

    def __init__(self, http: JsonHttp, config: Config, state_dir: str,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        super().__init__(http, config.strategy)
        # merge mode only: the IDs this host pushed (persisted); None in overwrite mode
        self.owned = (OwnedIds(state_dir, config.api.url,
                               (config.strategy.priority, config.strategy.execution_time_ns))
                      if config.strategy.mode == "merge" else None)
        self.login = PublicKeyToken(http, config, False, clock, wall_clock)

    # --- what status shows ------------------------------------------------------------------

    def describe(self) -> Dict[str, Any]:
        return {**super().describe(), "mode": self.strategy.mode,
                "token_expires_mono": self.login.expires_mono,
                "credentials_obtained": self.login.obtained}

    # --- the state ------------------------------------------------------------------------

    def write(self, views: Sequence[ProcessView], deadline: float) -> int:
        strategies = build_strategies(target_ids(views, self.strategy.targets), self.strategy)
        self._write(strategies, deadline)
        return len(strategies)

    def clear(self, deadline: float) -> None:
        self._write([], deadline)  # merge mode: removes only this host's entries
        log.info("this host's strategies removed from %s%s", self.http.base_url,
                 "" if self.owned is not None else " (overwrite mode: the whole list)")

    def _write(self, strategies: List[Strategy], deadline: float) -> None:
        if self.owned is None:
            self._call("POST", {"strategies": strategies}, deadline)
            return
        owned = dict(self.owned.ids)
        ours = {s["pid"]: written(s) for s in strategies}
        merged = merge_strategies(v0_strategy_list(self._call("GET", None, deadline)),
                                  strategies, owned)
        self.owned.replace({**owned, **ours})  # recorded before the POST: a crash after it
        self._call("POST", {"strategies": merged}, deadline)  # must not orphan entries
        self.owned.replace(ours)

    def _call(self, method: str, payload: Any, deadline: float) -> Any:
        """One request to the one route of the v0 API; the body of its answer."""
        answer = self.http.request(method, STRATEGIES_PATH, payload, deadline,
                                   self.login.header())
        what = f"{method} {self.http.base_url}{STRATEGIES_PATH}"
        if answer.status == 404 and method == "POST":
            raise ApiError("wrong-flavor", f"{what} answered 404: the server is not Gthulhu's "
                           "2025 API (v0); newer Gthulhu runs a Decision Maker or a Manager "
                           '(api.flavor = "auto")')
        # The ERROR says what to change: an integer priority, which the 2025 release
        # refuses (true or false are what it takes: no advice for a 400 to those).
        if answer.status == 400 and method == "POST" and not isinstance(
                self.strategy.priority, bool):
            raise ApiError("http-4xx", f"{what}: HTTP 400: {error_text(answer.body)}: the "
                           "server refuses what this host writes; the 2025 release (<= v0.4.4) "
                           "takes strategy.priority = true or false, later ones an integer")
        check_answer(answer, what)
        return answer.body

    def read_back(self, views: Sequence[ProcessView], deadline: float,
                  rule: Optional[str] = None) -> Optional[Comparison]:
        # explicit IDs: this host's are those it writes for `views`; there is no rule
        listed = listed_strategies(self._call("GET", None, deadline))
        return compare_ids(listed, target_ids(views, self.strategy.targets))

    def holdings(self, deadline: float, last_rule: Optional[str] = None) -> Holdings:
        listed = listed_strategies(self._call("GET", None, deadline))
        return Holdings(f"the server holds {plural(len(listed), 'strategy', 'strategies')}",
                        listed)
