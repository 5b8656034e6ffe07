"""When and how to push the strategy set: coalescing, resync, token, backoff.

Pure scheduling decisions over an injected clock plus one call into the
client per push.  The loop asks `next_deadline()` for its select timeout and
calls `push()` when `is_due()`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Protocol

from .api import ApiError
from .auth import Token
from .backoff import Backoff
from .merge import merge_strategies
from .state import OwnedIds
from .strategy import Strategy

log = logging.getLogger(__name__)

COALESCE = 0.02  # a change waits this long for more changes (bursts of new threads)
FIRST_RETRY = 0.5  # first retry delay after a failed push


class Client(Protocol):
    timeout: float

    def fetch_token(self, deadline: float) -> Token: ...

    def close(self) -> None: ...

    def post_strategies(self, token: Token, strategies: List[Strategy],
                        deadline: float) -> None: ...

    def get_strategies(self, token: Token, deadline: float) -> List[Strategy]: ...


@dataclass
class PushResult:
    ok: bool
    count: int  # strategies posted (or attempted)
    at_wall: float
    at_mono: float
    duration: float
    error: str = ""
    error_kind: str = ""


class Pusher:
    def __init__(self, client: Client, resync_interval: float,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 backoff: Optional[Backoff] = None, first_push_delay: float = 0.0,
                 mode: str = "overwrite", owned: Optional[OwnedIds] = None) -> None:
        self.client = client
        self.mode = mode
        self.owned = owned  # merge mode: the IDs this host pushed (persisted)
        self.resync_interval = resync_interval
        self._clock = clock
        self._wall = wall_clock
        self._backoff = backoff or Backoff(FIRST_RETRY, resync_interval)
        self.token: Optional[Token] = None
        self.tokens_obtained = 0
        self._token_renew_at = 0.0
        # Push once soon after start, even an empty set: the API may hold stale strategies.
        self._next = clock() + first_push_delay
        self._failing = False
        self._fail_kind = ""
        self.last: Optional[PushResult] = None

    # --- scheduling ---------------------------------------------------------

    def next_deadline(self) -> float:
        return self._next

    def is_due(self, now: float) -> bool:
        return now >= self._next

    def mark_changed(self) -> None:
        """The set changed: push soon, unless we are backing off after a failure."""
        if not self._failing:
            self._next = min(self._next, self._clock() + COALESCE)

    def push_now(self) -> None:
        """Strategy values changed: push at the next turn, backoff or not."""
        self._next = self._clock()

    def set_client(self, client: Client) -> None:
        """New URL or key: forget the token and push with the new client now."""
        self.client = client
        self.token = None
        self._backoff.reset()
        self._failing = False
        self._next = self._clock()

    def set_resync_interval(self, seconds: float) -> None:
        self.resync_interval = seconds
        self._backoff.cap = seconds
        self._next = min(self._next, self._clock() + seconds)

    # --- the push -------------------------------------------------------------

    def push(self, strategies: List[Strategy], budget: Optional[float] = None) -> PushResult:
        """Token (if due), post, and one retry after a 401, all within one budget
        (`api.timeout` unless a shorter one is given, as on stop)."""
        start = self._clock()
        limit = self.client.timeout if budget is None else min(budget, self.client.timeout)
        deadline = start + limit
        refreshed = False
        try:
            refreshed = self._ensure_token(start, deadline)
            try:
                self._write(strategies, deadline)
            except ApiError as exc:
                if exc.kind != "unauthorized" or refreshed:
                    raise
                log.info("API rejected the token (HTTP 401): getting a new one")
                self.token = None
                refreshed = self._ensure_token(self._clock(), deadline)
                self._write(strategies, deadline)
        except ApiError as exc:
            return self._failed(exc, len(strategies), start)
        return self._succeeded(len(strategies), start)

    def _write(self, strategies: List[Strategy], deadline: float) -> None:
        assert self.token is not None
        if self.mode != "merge":
            self.client.post_strategies(self.token, strategies, deadline)
            return
        owned = set(self.owned.ids) if self.owned is not None else set()
        ours = {s["pid"] for s in strategies}
        current = self.client.get_strategies(self.token, deadline)
        merged = merge_strategies(current, strategies, owned)
        if self.owned is not None:
            self.owned.replace(owned | ours)  # recorded before the POST: a crash after it
        self.client.post_strategies(self.token, merged, deadline)  # must not orphan entries
        if self.owned is not None:
            self.owned.replace(ours)

    def _ensure_token(self, now: float, deadline: float) -> bool:
        if self.token is not None and now < self._token_renew_at:
            return False
        token = self.client.fetch_token(deadline)
        self.token = token
        self.tokens_obtained += 1
        self._token_renew_at = now + token.refresh_in
        log.info("got an API token, valid until %s (renewing in %.0f s)",
                 time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(token.expires_at)),
                 token.refresh_in)
        return True

    def _succeeded(self, count: int, start: float) -> PushResult:
        now = self._clock()
        if self._failing:
            log.info("API reachable again: pushed %d strategies", count)
        else:
            log.debug("pushed %d strategies in %.1f ms", count, (now - start) * 1e3)
        self._failing, self._fail_kind = False, ""
        self._backoff.reset()
        self._next = now + self.resync_interval
        self.last = PushResult(True, count, self._wall(), now, now - start)
        return self.last

    def _failed(self, exc: ApiError, count: int, start: float) -> PushResult:
        now = self._clock()
        delay = self._backoff.next_delay()
        if exc.kind != self._fail_kind:  # once per change of state, not per retry
            log.warning("push of %d strategies failed: %s (retrying with backoff, "
                        "first in %.1f s)", count, exc.summary, delay)
        else:
            log.debug("push still failing: %s; next try in %.1f s", exc.summary, delay)
        if exc.kind in ("unauthorized", "bad-answer"):
            self.token = None
        self._failing, self._fail_kind = True, exc.kind
        self._next = now + delay
        self.last = PushResult(False, count, self._wall(), now, now - start,
                               error=str(exc), error_kind=exc.kind)
        return self.last
