"""Push scheduling with a fake clock and a scripted client (no sleeping)."""

from __future__ import annotations

import logging
from typing import List

import pytest

from gtp5g_operator.api import ApiError
from gtp5g_operator.auth import Token
from gtp5g_operator.backoff import Backoff
from gtp5g_operator.push import COALESCE, Pusher


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedClient:
    timeout = 5.0

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: List[str] = []
        self.post_errors: List[ApiError] = []
        self.token_errors: List[ApiError] = []
        self.token_life = 3600.0
        self.tokens = 0

    def fetch_token(self, deadline: float) -> Token:
        self.calls.append("token")
        if self.token_errors:
            raise self.token_errors.pop(0)
        self.tokens += 1
        return Token(f"tok{self.tokens}", self.clock.now + self.token_life,
                     refresh_in=self.token_life - 300 if self.token_life >= 600
                     else self.token_life / 2)

    def post_strategies(self, token: Token, strategies: list, deadline: float) -> None:
        self.calls.append(f"post:{token.value}:{len(strategies)}")
        if self.post_errors:
            raise self.post_errors.pop(0)

    def close(self) -> None:
        pass


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(clock: Clock) -> ScriptedClient:
    return ScriptedClient(clock)


def pusher(client: ScriptedClient, clock: Clock) -> Pusher:
    return Pusher(client, 10.0, clock, clock, Backoff(0.5, 10.0, rand=lambda: 1.0))


def test_first_push_gets_a_token_then_resyncs(client: ScriptedClient, clock: Clock) -> None:
    p = pusher(client, clock)
    assert p.is_due(clock.now)
    assert p.push([{}]).ok
    assert client.calls == ["token", "post:tok1:1"]
    assert p.next_deadline() == clock.now + 10.0
    clock.now += 9.9
    assert not p.is_due(clock.now)
    clock.now += 0.1
    assert p.is_due(clock.now)


def test_changes_are_coalesced(client: ScriptedClient, clock: Clock) -> None:
    p = pusher(client, clock)
    p.push([])
    clock.now += 1
    p.mark_changed()
    first = p.next_deadline()
    clock.now += 0.01
    p.mark_changed()  # a second change in the window does not postpone the push
    assert p.next_deadline() == first == clock.now - 0.01 + COALESCE


def test_token_refreshed_before_expiry(client: ScriptedClient, clock: Clock) -> None:
    client.token_life = 120  # < 10 minutes: renew at half-life
    p = pusher(client, clock)
    p.push([])
    clock.now += 59
    p.push([])
    assert client.calls[-1] == "post:tok1:0"
    clock.now += 1
    p.push([])
    assert client.calls[-2:] == ["token", "post:tok2:0"]


def test_401_gets_a_new_token_and_retries_once(client: ScriptedClient, clock: Clock) -> None:
    p = pusher(client, clock)
    p.push([])
    client.post_errors = [ApiError("unauthorized", "rejected", 401)]
    assert p.push([{}]).ok
    assert client.calls[-3:] == ["post:tok1:1", "token", "post:tok2:1"]
    client.post_errors = [ApiError("unauthorized", "x", 401)] * 2
    result = p.push([{}])
    assert not result.ok and result.error_kind == "unauthorized"
    assert client.calls[-3:] == ["post:tok2:1", "token", "post:tok3:1"]  # only once


def test_failures_back_off_and_log_once_per_state(client: ScriptedClient, clock: Clock,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    p = pusher(client, clock)
    delays = []
    for _ in range(6):
        client.post_errors = [ApiError("connect", "refused")]
        start = clock.now
        assert not p.push([]).ok
        delays.append(p.next_deadline() - start)
        p.mark_changed()  # changes during backoff do not bring the retry forward
        assert p.next_deadline() - start == delays[-1]
        clock.now = p.next_deadline()
    assert delays == [0.5, 1, 2, 4, 8, 10]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "connect: refused" in warnings[0].getMessage()
    assert p.push([]).ok
    assert any("API reachable again" in r.getMessage() for r in caplog.records)
    assert p.next_deadline() == clock.now + 10


def test_push_now_ignores_backoff(client: ScriptedClient, clock: Clock) -> None:
    p = pusher(client, clock)
    client.post_errors = [ApiError("http-5xx", "HTTP 500")]
    p.push([])
    p.push_now()
    assert p.is_due(clock.now)
