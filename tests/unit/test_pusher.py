"""Push scheduling with a fake clock and a scripted writer (no sleeping)."""

from __future__ import annotations

import logging
from typing import List, Sequence

import pytest

from gtp5g_operator.config import StrategyConfig
from gtp5g_operator.core.backoff import Backoff
from gtp5g_operator.core.tracker import ProcessView
from gtp5g_operator.gthulhu.errors import ApiError
from gtp5g_operator.gthulhu.http import JsonHttp
from gtp5g_operator.gthulhu.writer import ApiWriter
from gtp5g_operator.service.pusher import COALESCE, PACE, Pusher, PushResult
from tests.doubles import Clock


class ScriptedWriter(ApiWriter):
    """A writer whose answers the test scripts; it records every call."""

    name = "scripted"

    def __init__(self, clock: Clock) -> None:
        super().__init__(JsonHttp("http://127.0.0.1:9", 5.0), StrategyConfig())
        self.clock = clock
        self.calls: List[str] = []
        self.write_errors: List[ApiError] = []
        self.token_errors: List[ApiError] = []
        self.token_life = 3600.0
        self.tokens = 0
        self.renew_at = -1.0
        self.token = ""

    def authenticate(self, deadline: float) -> bool:
        if self.token and self.clock.now < self.renew_at:
            return False
        self.calls.append("token")
        if self.token_errors:
            raise self.token_errors.pop(0)
        self.tokens += 1
        self.token = f"tok{self.tokens}"
        life = self.token_life
        self.renew_at = self.clock.now + (life - 300 if life >= 600 else life / 2)
        return True

    def drop_credentials(self) -> None:
        self.token = ""

    def write(self, views: Sequence[ProcessView], deadline: float) -> int:
        n = sum(len(v.tids) for v in views)
        self.calls.append(f"write:{self.token}:{n}")
        if self.write_errors:
            raise self.write_errors.pop(0)
        return n

    def clear(self, deadline: float) -> None:
        self.calls.append(f"clear:{self.token}")


@pytest.fixture
def clock() -> Clock:
    return Clock(1000.0)


@pytest.fixture
def client(clock: Clock) -> ScriptedWriter:
    return ScriptedWriter(clock)


TRACKED: List[ProcessView] = []


def pusher(client: ScriptedWriter, clock: Clock) -> Pusher:
    return Pusher(client, 10.0, lambda: list(TRACKED), clock,
                  Backoff(0.5, 10.0, rand=lambda: 1.0))


def one() -> None:
    TRACKED[:] = [ProcessView(1, "nr-gnb", "", 0, 0.0, (1,), frozenset())]


def none() -> None:
    TRACKED[:] = []


@pytest.fixture(autouse=True)
def _empty() -> None:
    none()


def push_one(p: Pusher) -> PushResult:
    one()
    return p.push()


def push_none(p: Pusher) -> PushResult:
    none()
    return p.push()


def test_first_push_gets_a_token_then_resyncs(client: ScriptedWriter, clock: Clock) -> None:
    p = pusher(client, clock)
    assert clock.now >= p.next_deadline()
    assert push_one(p).ok
    assert client.calls == ["token", "write:tok1:1"]
    assert p.next_deadline() == clock.now + 10.0
    clock.now += 9.9
    assert not clock.now >= p.next_deadline()
    clock.now += 0.1
    assert clock.now >= p.next_deadline()


def test_changes_are_coalesced(client: ScriptedWriter, clock: Clock) -> None:
    p = pusher(client, clock)
    push_none(p)
    clock.now += 1
    p.mark_changed()
    first = p.next_deadline()
    clock.now += 0.01
    p.mark_changed()  # a second change in the window does not postpone the push
    assert p.next_deadline() == first == clock.now - 0.01 + COALESCE


def test_changes_wait_for_a_costly_push_to_be_paid_for(client: ScriptedWriter,
                                                       clock: Clock) -> None:
    """A big host: a push (prune and snapshot of thousands of tasks, the write, the
    read-back) takes 0.3 s.  A new thread every 50 ms must not make the loop push
    back to back: the next change waits PACE times the last push's cost."""
    def costly() -> List[ProcessView]:
        clock.now += 0.3
        return list(TRACKED)

    p = Pusher(client, 10.0, costly, clock, Backoff(0.5, 10.0, rand=lambda: 1.0),
               cpu_clock=lambda: clock.now)  # all of it CPU
    p.push()
    end = clock.now
    clock.now += 0.05
    p.mark_changed()
    assert p.next_deadline() == pytest.approx(end + PACE * 0.3)
    clock.now = p.next_deadline()
    p.push()
    clock.now += 5.0  # long after the last push: a change is pushed as soon as ever
    p.mark_changed()
    assert p.next_deadline() == clock.now + COALESCE


def test_token_refreshed_before_expiry(client: ScriptedWriter, clock: Clock) -> None:
    client.token_life = 120  # < 10 minutes: renew at half-life
    p = pusher(client, clock)
    push_none(p)
    clock.now += 59
    push_none(p)
    assert client.calls[-1] == "write:tok1:0"
    clock.now += 1
    push_none(p)
    assert client.calls[-2:] == ["token", "write:tok2:0"]


def test_401_gets_a_new_token_and_retries_once(client: ScriptedWriter, clock: Clock) -> None:
    p = pusher(client, clock)
    push_none(p)
    client.write_errors = [ApiError("unauthorized", "rejected")]
    assert push_one(p).ok
    assert client.calls[-3:] == ["write:tok1:1", "token", "write:tok2:1"]
    client.write_errors = [ApiError("unauthorized", "x")] * 2
    result = push_one(p)
    assert not result.ok and result.error_kind == "unauthorized"
    assert client.calls[-3:] == ["write:tok2:1", "token", "write:tok3:1"]  # only once


def test_failures_back_off_and_log_once_per_state(client: ScriptedWriter, clock: Clock,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    p = pusher(client, clock)
    delays = []
    for _ in range(6):
        client.write_errors = [ApiError("connect", "refused")]
        start = clock.now
        assert not push_none(p).ok
        delays.append(p.next_deadline() - start)
        p.mark_changed()  # changes during backoff do not bring the retry forward
        assert p.next_deadline() - start == delays[-1]
        clock.now = p.next_deadline()
    assert delays == [0.5, 1, 2, 4, 8, 10]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "connect: refused" in warnings[0].getMessage()
    assert push_none(p).ok
    assert any("API reachable again" in r.getMessage() for r in caplog.records)
    assert p.next_deadline() == clock.now + 10


def test_push_now_ignores_backoff(client: ScriptedWriter, clock: Clock) -> None:
    p = pusher(client, clock)
    client.write_errors = [ApiError("http-5xx", "HTTP 500")]
    push_none(p)
    p.push_now()
    assert clock.now >= p.next_deadline()
