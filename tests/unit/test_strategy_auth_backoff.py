"""Pure pieces: strategy builder, token handling, backoff."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from gtp5g_operator.config import StrategyConfig
from gtp5g_operator.core.backoff import Backoff
from gtp5g_operator.core.strategy import build_strategies, target_ids
from gtp5g_operator.core.tracker import ProcessView
from gtp5g_operator.gthulhu.answers import token_answer
from gtp5g_operator.gthulhu.auth import (
    TokenError,
    refresh_delay,
    verify_token,
)
from gtp5g_operator.gthulhu.errors import ApiError


def view(tgid: int, tids: tuple[int, ...], comm: str = "nr-gnb",
         names: frozenset[str] = frozenset()) -> ProcessView:
    return ProcessView(tgid, comm, "/usr/bin/nr-gnb", 0, 0.0, tids, names)


SNAP = [view(100, (100, 103, 104)), view(200, (205,))]


@pytest.mark.parametrize("targets,ids", [
    ("tgid", [100, 200]),
    ("tid", [100, 103, 104, 205]),
    ("both", [100, 103, 104, 200, 205]),
])
def test_target_ids(targets: str, ids: list[int]) -> None:
    assert target_ids(SNAP, targets) == ids


def test_build_strategies_uses_configured_values() -> None:
    out = build_strategies([7, 9], StrategyConfig(priority=5, execution_time_ns=123))
    assert out == [{"pid": 7, "priority": 5, "execution_time": 123},
                   {"pid": 9, "priority": 5, "execution_time": 123}]
    assert build_strategies([], StrategyConfig()) == []


# --- tokens ---------------------------------------------------------------------


def make_token(private: Path, lifetime: float, **extra: object) -> str:
    key = serialization.load_pem_private_key(private.read_bytes(), None)
    now = int(time.time())
    return jwt.encode({"iat": now, "exp": now + int(lifetime), **extra}, key,  # type: ignore
                      algorithm="RS256")


def test_extract_both_shapes() -> None:
    assert token_answer({"success": True, "token": "abc"}) == ("abc", None)
    assert token_answer({"success": True, "data": {"token": "t", "expired_at": 17}}) == ("t", 17)
    # an expiry that is not a usable time is left out, never trusted
    for odd in (1e400, -5, 10**40, True, "17", float("nan")):
        assert token_answer({"data": {"token": "t", "expired_at": odd}}) == ("t", None)
    bads: List[Any] = [None, [], {"success": True}, {"data": {"token": 5}}]
    for bad in bads:
        with pytest.raises(ApiError) as info:
            token_answer(bad)
        assert info.value.kind == "bad-answer"


@pytest.mark.parametrize("lifetime,delay", [
    (86400, 86100), (3600, 3300), (600, 300), (599, 299.5), (60, 30), (1, 1.0),
])
def test_refresh_delay(lifetime: float, delay: float) -> None:
    assert refresh_delay(lifetime) == pytest.approx(delay)


def test_verify_token_reads_real_exp(keys: Dict[str, Path]) -> None:
    token = make_token(keys["private"], 120)
    parsed = verify_token(token, keys["public"].read_text(), time.time())
    assert parsed.expires_at == pytest.approx(time.time() + 120, abs=2)
    assert parsed.refresh_in == pytest.approx(60, abs=2)  # half-life: lives < 10 min
    assert token not in repr(parsed)


def test_verify_token_rejects_wrong_key(keys: Dict[str, Path]) -> None:
    token = make_token(keys["private"], 3600)
    with pytest.raises(TokenError, match="does not verify"):
        verify_token(token, keys["wrong_public"].read_text(), time.time())


def test_verify_token_rejects_expired(keys: Dict[str, Path]) -> None:
    token = make_token(keys["private"], -3600)
    with pytest.raises(TokenError, match="already expired"):
        verify_token(token, keys["public"].read_text(), time.time())


# --- backoff --------------------------------------------------------------------


def test_backoff_grows_exponentially_is_capped_and_resets() -> None:
    b = Backoff(0.5, 10.0, rand=lambda: 1.0)
    assert [b.next_delay() for _ in range(7)] == [0.5, 1, 2, 4, 8, 10, 10]
    b.reset()
    assert b.next_delay() == 0.5


def test_backoff_jitter_stays_within_half_to_full() -> None:
    lows = Backoff(1.0, 10.0, rand=lambda: 0.0)
    assert [lows.next_delay() for _ in range(3)] == [0.5, 1.0, 2.0]


@pytest.mark.parametrize("password", ["plain-Passw0rd", 'qu"ote\\slash', "pässwörd-ünï"])
def test_a_login_error_quoting_the_request_shows_no_form_of_the_password(
        password: str) -> None:
    # The request's JSON escapes a quote, a backslash and (ensure_ascii) every non-ASCII
    # letter: quoted inside the server's error string, that is the form it comes back in.
    from gtp5g_operator.gthulhu.manager import without

    for ascii_only in (True, False):
        request = json.dumps({"username": "operator", "password": password},
                             ensure_ascii=ascii_only)
        answer = json.loads(json.dumps({"error": "invalid request " + request}))
        error = without(answer, password)["error"]
        assert error.endswith('"password": "[REDACTED]"}')
