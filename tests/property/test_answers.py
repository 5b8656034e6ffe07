"""Properties of everything that reads a Gthulhu server's answers (gthulhu/): the
HTTP client's decoding, the token answer and the token's claims, and the
per-flavor answer decoders (one table, one line per decoder).

Whatever a server sends is hostile data: a decoder returns a value of its type
or raises the writer's error (ApiError, kind "bad-answer"; TokenError inside
auth), within the bounds of tests/property/bounds.py.

Each property of a defect found and fixed keeps its failing example
(@example), so the example runs on every run, random or not.
"""

from __future__ import annotations

import base64
import json
import math
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from gtp5g_operator.core.strategy import NodeRule
from gtp5g_operator.gthulhu import answers
from gtp5g_operator.gthulhu.auth import Token, TokenError, token_from_claims, unverified_claims
from gtp5g_operator.gthulhu.errors import ApiError, check_answer, error_text
from gtp5g_operator.gthulhu.http import Answer, JsonHttp, retry_after
from gtp5g_operator.gthulhu.manager import same_policy
from gtp5g_operator.gthulhu.merge import merge_strategies
from tests.property.bounds import Errors, Types, check_total
from tests.property.strategies import (
    deep_text,
    finite_numbers,
    json_answers,
    json_objects,
    json_texts,
    json_values,
    keys,
    mutated_bytes,
    scalars,
    shallow,
)

NOW = 1_780_000_000.0  # a wall-clock time (2026)

# --- HTTP answers, through the real client from a real socket -------------------------------


class RawServer:
    """A 127.0.0.1 server that answers every request with the bytes it is given."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.reply = b""
        self._thread = threading.Thread(target=self._serve, name="raw answers", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with conn:
                conn.settimeout(10)
                try:
                    request = b""
                    while b"\r\n\r\n" not in request:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        request += chunk
                    conn.sendall(self.reply)
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass  # the client gave up first: its side is what is tested

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        self.sock.close()
        self._thread.join(10)


@pytest.fixture(scope="module")
def raw_server() -> Iterator[RawServer]:
    server = RawServer()
    yield server
    server.close()


def http_answer(status: int, body: bytes, framing: str) -> bytes:
    head = f"HTTP/1.1 {status} Whatever\r\nContent-Type: application/json\r\n"
    if framing == "length":
        return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    if framing == "chunked":
        chunk = f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b""
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + chunk + b"0\r\n\r\n"
    return (head + "Connection: close\r\n\r\n").encode() + body


statuses = st.one_of(st.sampled_from([200, 201, 204, 301, 400, 401, 403, 404, 500, 503]),
                     st.integers(100, 599))
framings = st.sampled_from(["length", "chunked", "close"])
# Not nested deep enough to reach the recursion limit: the deep ones have their own property.
ordinary_bodies = st.one_of(json_values().map(lambda v: json.dumps(v).encode(
    "utf-8", "surrogatepass")), mutated_bytes(json_texts.filter(shallow)).filter(shallow))


def exchange(server: RawServer, wire: bytes) -> Any:
    """One GET through JsonHttp against a server that answers `wire`."""
    server.reply = wire
    client = JsonHttp(f"http://127.0.0.1:{server.port}", 5.0)
    try:
        return client.request("GET", "/api/v1/anything", None, time.monotonic() + 5.0)
    finally:
        client.close()


def judge_answer(result: Any) -> None:
    if isinstance(result, ApiError):
        assert result.kind in ("bad-answer", "connect", "timeout"), result.kind
        return
    assert isinstance(result, Answer) and isinstance(result.status, int)
    # A JSON value that can be sent on as JSON (merge mode sends others' entries back):
    # no NaN or infinity, which json.dumps would write as tokens JSON does not have.
    json.dumps(result.body, allow_nan=False)


@given(statuses, ordinary_bodies, framings)
@example(200, b'{"data":[{"priority":1e999}]}', "length")
def test_any_answer_is_an_answer_or_an_api_error(raw_server: RawServer, status: int,
                                                 body: bytes, framing: str) -> None:
    judge_answer(check_total(lambda: exchange(raw_server, http_answer(status, body, framing)),
                             returns=Answer, raises=(ApiError,)))


@given(st.binary(max_size=300))
def test_any_bytes_on_the_wire_are_an_answer_or_an_api_error(raw_server: RawServer,
                                                              wire: bytes) -> None:
    judge_answer(check_total(lambda: exchange(raw_server, wire), returns=Answer,
                             raises=(ApiError,)))


@settings(report_multiple_bugs=False)
@given(st.one_of(st.binary(min_size=1, max_size=300), mutated_bytes(st.builds(
    http_answer, statuses, ordinary_bodies, framings))).filter(bool))
@example(b"garbage\r\n\r\n")
@example(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n{}")
@example(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
def test_a_malformed_answer_is_a_bad_answer(raw_server: RawServer, wire: bytes) -> None:
    result = check_total(lambda: exchange(raw_server, wire), returns=Answer, raises=(ApiError,))
    if isinstance(result, ApiError):
        assert result.kind in ("bad-answer", "timeout"), result.summary


@given(statuses, st.builds(deep_text, st.integers(1, 100_000),
                           st.sampled_from(["list", "object", "inside"])), framings)
@example(200, deep_text(100_000, "list"), "length")
def test_deeply_nested_answer_is_an_answer_or_an_api_error(raw_server: RawServer, status: int,
                                                           body: bytes, framing: str) -> None:
    judge_answer(check_total(lambda: exchange(raw_server, http_answer(status, body, framing)),
                             returns=Answer, raises=(ApiError,)))


# --- the token answer and the token's claims -------------------------------------------------

numbers_of_time = st.one_of(st.none(), finite_numbers.filter(lambda n: abs(n) < 1e11))


def judge_token(token: Any) -> None:
    """A Token the writer can schedule its renewal by (and log: time.localtime)."""
    if isinstance(token, Token):
        assert math.isfinite(token.expires_at) and math.isfinite(token.refresh_in)
        assert math.isfinite(token.skew)
        assert token.refresh_in > 0
        time.localtime(token.expires_at)


@given(json_values())
def test_the_token_answer_is_total(body: Any) -> None:
    result = check_total(lambda: answers.token_answer(body), returns=tuple, raises=(ApiError,))
    if isinstance(result, tuple):
        value, expired_at = result
        assert isinstance(value, str) and value
        assert expired_at is None or isinstance(expired_at, (int, float))


claims_of_time = st.fixed_dictionaries({}, optional={
    "exp": numbers_of_time, "iat": numbers_of_time, "nbf": numbers_of_time})


@given(st.one_of(claims_of_time, json_objects()), numbers_of_time)
def test_token_from_claims_of_ordinary_times(claims: Mapping[str, Any],
                                             expired_at: Optional[float]) -> None:
    """Claims whose times are numbers a clock can show (|t| < 1e11 s)."""
    assume(not any(isinstance(claims.get(k), (int, float)) and not abs(claims[k]) < 1e11
                   for k in ("exp", "iat", "nbf")))  # hostile times: the next property
    judge_token(check_total(lambda: token_from_claims("t", claims, NOW, expired_at),
                            returns=Token, raises=(TokenError,)))


hostile_times = st.one_of(st.sampled_from([10**400, 1e308, -1e308, math.inf, math.nan,
                                           2**63, 1e19]), st.floats())


@settings(report_multiple_bugs=False)  # one AssertionError, not a group of each kind
@given(st.dictionaries(st.sampled_from(["exp", "iat", "nbf"]), hostile_times, min_size=1),
       st.one_of(st.none(), hostile_times))
@example({"exp": 10**400}, None)
@example({"exp": math.nan}, None)
@example({"exp": 1e308}, None)
@example({}, 10**400)
def test_token_from_claims_of_hostile_times(claims: Mapping[str, Any],
                                            expired_at: Optional[float]) -> None:
    judge_token(check_total(lambda: token_from_claims("t", claims, NOW, expired_at),
                            returns=Token, raises=(TokenError,)))


def jwt_of(payload: bytes) -> str:
    return "eyJhbGciOiJSUzI1NiJ9." + base64.urlsafe_b64encode(payload).decode().rstrip("=") \
        + ".c2ln"


tokens = st.one_of(st.text(max_size=100),
                   json_answers.filter(shallow).map(jwt_of),  # deep ones: their own property
                   json_objects().map(lambda v: jwt_of(json.dumps(v).encode(
                       "utf-8", "surrogatepass"))))


@given(tokens)
def test_unverified_claims_is_total(token: str) -> None:
    claims = check_total(lambda: unverified_claims(token), returns=dict)
    assert isinstance(claims, dict)


@given(st.builds(deep_text, st.integers(1, 100_000), st.sampled_from(["list", "object"])))
@example(deep_text(100_000, "list"))
def test_unverified_claims_of_deep_payloads(payload: bytes) -> None:
    check_total(lambda: unverified_claims(jwt_of(payload)), returns=dict)


# --- the per-flavor answer decoders: ONE LINE EACH ---------------------------------------------
#
# A decoder takes what JsonHttp.request returned as Answer.body (any JSON value:
# json.loads accepts NaN and Infinity, integers of up to 4,300 digits, lone
# surrogates) and returns a value of its type or raises ApiError "bad-answer".
# Add each new decoder of gthulhu/ here in one line:
#     Decoder("dm: merkle root", decision_maker.decode_merkle, bodies, str, API_ERRORS),
# `bodies` is any JSON value; `objects` any JSON object; give a narrower strategy
# only to reach deeper (an answer of the right shape with hostile values inside).

API_ERRORS: Errors = (ApiError,)
bodies = json_values()
objects = json_objects()
RULE = NodeRule("gtp5g-operator@node-1", "node-1", "^nr-gnb$", 1, 20_000_000)
strategy_lists = st.lists(st.dictionaries(keys, st.one_of(scalars, json_values(4)), max_size=6),
                          max_size=5)


@dataclass(frozen=True)
class Decoder:
    name: str
    decode: Callable[[Any], Any]
    answers: st.SearchStrategy[Any]
    returns: Types
    raises: Errors = ()


DECODERS = [
    Decoder("token answer", answers.token_answer, bodies, tuple, API_ERRORS),
    Decoder("token claims' times", lambda b: answers.claim_times(b if isinstance(b, dict)
                                                                 else {}), bodies, tuple),
    Decoder("manager: login answer", answers.manager_tokens, bodies, tuple, API_ERRORS),
    Decoder("manager: its policies", answers.manager_policies, bodies, list, API_ERRORS),
    Decoder("dm: merkle root", answers.merkle_root, bodies, str, API_ERRORS),
    Decoder("v0 and dm: what the scheduler reads", answers.listed_strategies, bodies, list,
            API_ERRORS),
    Decoder("v0: the list for merge mode", answers.v0_strategy_list, bodies, list, API_ERRORS),
    Decoder("error text", error_text, bodies, str),
    Decoder("2xx answer check", lambda b: check_answer(Answer(200, b), "GET /x"), bodies,
            type(None), API_ERRORS),
    Decoder("error answer check", lambda b: check_answer(Answer(503, b), "GET /x"), bodies,
            type(None), API_ERRORS),
    Decoder("Retry-After", retry_after, st.one_of(st.none(), st.text()), (float, type(None))),
    Decoder("v0: merge with the server's list", lambda b: merge_strategies(
        b, [{"pid": 7, "priority": True}], {1: (True, 1), 2: (False, 2)}), strategy_lists,
        list, API_ERRORS),
    Decoder("manager: same policy", lambda b: [same_policy(p, RULE) for p in
                                               answers.manager_policies(b)], bodies, list,
            API_ERRORS),
]


@pytest.mark.parametrize("decoder", DECODERS, ids=[d.name for d in DECODERS])
@given(data=st.data())
def test_answer_decoder_is_total(decoder: Decoder, data: st.DataObject) -> None:
    body = data.draw(decoder.answers, label="answer body")
    result = check_total(lambda: decoder.decode(body), returns=decoder.returns,
                         raises=decoder.raises)
    if isinstance(result, ApiError):
        assert result.kind in ("bad-answer", "http-5xx"), result.summary

