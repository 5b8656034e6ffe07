"""The Decision Maker's HTTP surface, fake against real: routes, errors, tokens,
request decoding, merkle roots and DELETE.  Each test sends one scenario to both
servers and compares the transcripts (tests/contract/transcript.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any, Dict, List, Optional, Tuple

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.contract.conftest import MERKLE, NODE_INTENTS, STRATEGIES, DMPair, assert_same
from tests.contract.transcript import Transcript

pytestmark = pytest.mark.contract

RULE = {"policyID": "p1", "nodeID": "node-a", "commandRegex": "^(?:contract-nothing)$",
        "priority": 1, "executionTime": 20_000_000}


def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem_public(key: Any, fmt: serialization.PublicFormat) -> str:
    return str(key.public_key().public_bytes(serialization.Encoding.PEM, fmt).decode())


def test_routes_and_methods(dm_pair: DMPair) -> None:
    def scenario(t: Transcript) -> None:
        token = t.token()
        for method, path, with_token in [
                ("GET", "/health", False), ("HEAD", "/health", False),
                ("POST", "/health", False), ("OPTIONS", "/health", False),
                ("DELETE", "/version", False), ("GET", "/version", False),
                ("GET", "/nonexistent", False), ("OPTIONS", "/nonexistent", False),
                ("GET", "/api", True), ("GET", "/api/", True),
                ("GET", "/api/v1/nonexistent", True), ("GET", "/api/v1/nonexistent", False),
                ("GET", NODE_INTENTS, True), ("PUT", NODE_INTENTS, True),
                ("PATCH", NODE_INTENTS, False), ("OPTIONS", NODE_INTENTS, False),
                ("POST", MERKLE, True), ("DELETE", MERKLE, False),
                ("POST", STRATEGIES, True), ("PUT", STRATEGIES, False),
                ("DELETE", STRATEGIES, True), ("HEAD", STRATEGIES, True),
                ("GET", "/api/v1/auth/token", False), ("PUT", "/api/v1/auth/token", True),
                ("GET", STRATEGIES + "/", True), ("GET", STRATEGIES + "?x=1&y", True),
                ("GET", MERKLE + "/", True), ("GET", "/API/v1/node-intents/merkle", True),
                ("GET", "/health/", False), ("get", "/health", False),
                ("TRACE", "/health", False), ("get", MERKLE, True), ("PROPFIND", STRATEGIES, True),
                ("POST", "/api/v1/intents", False), ("GET", "/api/v1/runtime-config", False),
                ("GET", "/api/v1/pods/pids", False), ("DELETE", "/api/v1/intents", False),
                ("GET", MERKLE, True), ("GET", STRATEGIES, True)]:
            t.call(f"{method} {path} token={with_token}", method, path,
                   token=token if with_token else None)

    assert_same(dm_pair, *dm_pair.run(scenario))


def test_tokens_and_refused_public_keys(dm_pair: DMPair) -> None:
    own = dm_pair.build.public_key()
    stranger = other_rsa_key()
    with_text = "some text before\n" + own + "and after\n"
    keys: List[Tuple[str, Any]] = [
        ("own", own), ("own, CRLF", own.replace("\n", "\r\n")), ("own, surrounded", with_text),
        ("own, no final newline", own.rstrip("\n")),
        ("own, after a byte order mark", "\ufeff" + own),
        ("another key", pem_public(stranger, serialization.PublicFormat.SubjectPublicKeyInfo)),
        ("own as PKCS#1", _pkcs1_of(own)), ("garbage", "garbage"), ("empty", ""),
        ("EC key", pem_public(ec.generate_private_key(ec.SECP256R1()),
                              serialization.PublicFormat.SubjectPublicKeyInfo)),
        ("number", 5), ("null", None), ("list", [own])]

    def scenario(t: Transcript) -> None:
        for label, key in keys:
            t.call(f"key: {label}", "POST", "/api/v1/auth/token",
                   {"public_key": key, "client_id": "op"})
        for label, body in [("no client_id", {"public_key": own}),
                            ("empty client_id", {"public_key": own, "client_id": ""}),
                            ("odd client_id", {"public_key": own, "client_id": "a\u2028<b>&"}),
                            ("expired_at asked", {"public_key": own, "client_id": "x",
                                                  "expired_at": 1}),
                            ("expired_at wrong type", {"public_key": own, "expired_at": "1"}),
                            ("case-folded keys", {"PUBLIC_KEY": own, "Client_Id": "y"}),
                            ("array", [own]), ("null", None)]:
            t.call(f"token body: {label}", "POST", "/api/v1/auth/token", body)
        for label, raw in [("empty body", b""), ("not json", b"{"),
                           ("trailing garbage", _json({"public_key": own}) + b"}{")]:
            t.call(f"token body: {label}", "POST", "/api/v1/auth/token", raw=raw)

    assert_same(dm_pair, *dm_pair.run(scenario))


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _pkcs1_of(pkix_pem: str) -> str:
    key = serialization.load_pem_public_key(pkix_pem.encode())
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.PKCS1).decode()


def _tokens(private_pem: bytes) -> List[Tuple[str, Optional[str], Dict[str, str]]]:
    """(label, Authorization header or None, extra headers) of the auth cases."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    now = int(time.time())
    base = {"client_id": "op", "iss": "decision-maker-service", "sub": "op"}

    def signed(claims: Dict[str, Any], alg: str = "RS256", signer: Any = key) -> str:
        return jwt.encode(claims, signer, algorithm=alg)

    stranger = other_rsa_key()
    public_pem = key.public_key().public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    good = signed({**base, "exp": now + 600, "iat": now, "nbf": now})
    cases: List[Tuple[str, Optional[str]]] = [
        ("no header", None), ("empty header", ""), ("Basic", "Basic " + good),
        ("lower-case bearer", "bearer " + good), ("Bearer alone", "Bearer"),
        ("Bearer and space", "Bearer "), ("two spaces", "Bearer  " + good),
        ("garbage", "Bearer not.a.jwt"), ("two parts", "Bearer a.b"),
        ("expired", "Bearer " + signed({**base, "exp": now - 100, "iat": now - 200})),
        ("not yet valid", "Bearer " + signed({**base, "exp": now + 600, "nbf": now + 300})),
        ("issued in the future", "Bearer " + signed({**base, "exp": now + 600,
                                                     "iat": now + 300})),
        ("no exp", "Bearer " + signed(base)), ("no claims", "Bearer " + signed({})),
        ("exp a string", "Bearer " + signed({**base, "exp": str(now + 600)})),
        ("another issuer", "Bearer " + signed({**base, "iss": "x", "exp": now + 600})),
        ("with an audience", "Bearer " + signed({**base, "aud": "x", "exp": now + 600})),
        ("another key", "Bearer " + signed({**base, "exp": now + 600}, signer=stranger)),
        ("RS384", "Bearer " + signed({**base, "exp": now + 600}, "RS384")),
        ("RS512", "Bearer " + signed({**base, "exp": now + 600}, "RS512")),
        ("PS256", "Bearer " + signed({**base, "exp": now + 600}, "PS256")),
        ("HS256 with the public key", "Bearer " + _hs256(base, now, public_pem)),
        ("alg none", "Bearer " + jwt.encode({**base, "exp": now + 600}, "",  # type: ignore
                                            algorithm="none")),
        ("expired and not yet valid", "Bearer " + signed({**base, "exp": now - 100,
                                                          "nbf": now + 300})),
        ("bad base64 in the header", "Bearer " + "ab=c" + good[good.index("."):]),
        ("one base64 character too many", "Bearer " + "eyJhb" + good[good.index("."):]),
        ("header truncated", "Bearer " + _b64(b'{"alg":') + good[good.index("."):]),
        ("header an array", "Bearer " + _b64(b"[1]") + good[good.index("."):]),
        ("header null", "Bearer " + _b64(b"null") + good[good.index("."):]),
        ("no alg", "Bearer " + _b64(b'{"typ":"JWT"}') + good[good.index("."):]),
        ("unknown alg", "Bearer " + _b64(b'{"alg":"XY1"}') + good[good.index("."):]),
        ("claims truncated", "Bearer " + good.split(".")[0] + "." + _b64(b"{") + ".x"),
        ("claims an array", "Bearer " + good.split(".")[0] + "." + _b64(b"[]") + ".x"),
        ("bad base64 signature", "Bearer " + good.rsplit(".", 1)[0] + ".a+b"),
        ("signature cut", "Bearer " + good[:-10]),
        ("good with spaces around", " Bearer " + good + " \t"),
        ("good", "Bearer " + good)]
    return [(label, header, {}) for label, header in cases]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256(base: Dict[str, Any], now: int, secret: bytes) -> str:
    """An HS256 token keyed with the public key's PEM (the classic algorithm confusion;
    PyJWT refuses to make one)."""
    def part(value: Any) -> str:
        data = json.dumps(value, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = part({"alg": "HS256", "typ": "JWT"}) + "." + part({**base, "exp": now + 600})
    sig = hmac.new(secret, head.encode(), hashlib.sha256).digest()
    return head + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()


def test_authorization_errors_say_which(dm_pair: DMPair) -> None:
    cases = _tokens(dm_pair.build.private_key())

    def scenario(t: Transcript) -> None:
        for label, header, _ in cases:
            headers = {} if header is None else {"Authorization": header}
            t.call(f"auth: {label}", "GET", MERKLE, headers=headers)

    assert_same(dm_pair, *dm_pair.run(scenario))


RAW_BODIES: List[Tuple[str, bytes]] = [
    ("empty", b""), ("spaces", b"  \n"), ("truncated", b'{"policies": ['),
    ("array", b"[]"), ("null", b"null"), ("string", b'"x"'), ("number", b"5"),
    ("policies null", b'{"policies": null}'), ("policies object", b'{"policies": {}}'),
    ("policies string", b'{"policies": "x"}'), ("empty list", b'{"policies": []}'),
    ("null element", b'{"policies": [null]}'),
    ("trailing garbage", b'{"policies": []} trailing'),
    ("second value", b'{"policies": []}{"policies": [{"policyID": "x"}]}'),
    ("unknown fields", b'{"policies": [{"policyID": "u", "surplus": {"x": [1]}}], "o": 1}'),
    ("case-folded keys", b'{"POLICIES": [{"PolicyId": "c", "COMMANDREGEX": "x", "Priority": 3}]}'),
    ("kelvin sign", b'{"policies": [{"policyID": "k", "priority": 2}], "\xe2\x84\xaa": 1}'),
    ("long s folds to s", b'{"policie\xc5\xbf": [{"policyID": "long-s"}]}'),
    ("duplicate key", b'{"policies": [{"policyID": "a", "priority": 5}],'
                      b' "policies": [{"policyID": "b"}]}'),
    ("duplicate field", b'{"policies": [{"policyID": "a", "policyID": "b"}]}'),
    ("null fields", b'{"policies": [{"policyID": null, "priority": null}]}'),
    ("priority true", b'{"policies": [{"priority": true}]}'),
    ("priority string", b'{"policies": [{"priority": "1"}]}'),
    ("priority 1.5", b'{"policies": [{"priority": 1.5}]}'),
    ("priority 1.0", b'{"policies": [{"priority": 1.0}]}'),
    ("priority 1e2", b'{"policies": [{"priority": 1e2}]}'),
    ("priority -0", b'{"policies": [{"policyID": "z", "priority": -0}]}'),
    ("priority -7", b'{"policies": [{"policyID": "neg", "priority": -7}]}'),
    ("priority 2^63-1", b'{"policies": [{"priority": 9223372036854775807}]}'),
    ("priority 2^63", b'{"policies": [{"priority": 9223372036854775808}]}'),
    ("executionTime -1", b'{"policies": [{"policyID": "e", "executionTime": -1}]}'),
    ("executionTime 2^64", b'{"policies": [{"executionTime": 18446744073709551616}]}'),
    ("policyID number", b'{"policies": [{"policyID": 7}]}'),
    ("commandRegex list", b'{"policies": [{"commandRegex": ["x"]}]}'),
    ("escapes", b'{"policies": [{"policyID": "\\u00e9\\ud83d\\ude00\\n\\/", "nodeID": "<&>"}]}'),
    ("lone surrogate", b'{"policies": [{"policyID": "\\ud800"}]}'),
    ("invalid UTF-8", b'{"policies": [{"policyID": "\xff\xfe"}]}'),
    ("NaN", b'{"policies": [{"priority": NaN}]}'),
    ("leading zero", b'{"policies": [{"priority": 01}]}'),
    ("BOM", b'\xef\xbb\xbf{"policies": []}'),
]


def test_node_intents_decoding(dm_pair: DMPair) -> None:
    """Each body, then the merkle root: what was refused and what was stored."""
    def scenario(t: Transcript) -> None:
        token = t.token()
        for label, raw in RAW_BODIES:
            t.call(f"POST {label}", "POST", NODE_INTENTS, raw=raw, token=token)
            t.call(f"root after {label}", "GET", MERKLE, token=token)

    assert_same(dm_pair, *dm_pair.run(scenario))


def test_merkle_roots(dm_pair: DMPair) -> None:
    rules = [{**RULE, "policyID": f"p{i}", "priority": i - 2, "executionTime": i * 1000 - 3}
             for i in range(6)]
    odd = {**RULE, "policyID": "p|x", "nodeID": "n=1|", "commandRegex": "\u00e9\\d"}

    def scenario(t: Transcript) -> None:
        token = t.token()
        t.call("fresh", "GET", MERKLE, token=token)
        for n in range(1, 6):
            t.call(f"post {n}", "POST", NODE_INTENTS, {"policies": rules[:n]}, token=token)
            t.call(f"root of {n}", "GET", MERKLE, token=token)
        t.call("post reversed", "POST", NODE_INTENTS, {"policies": rules[::-1]}, token=token)
        t.call("root of reversed", "GET", MERKLE, token=token)
        t.call("post twice the same", "POST", NODE_INTENTS, {"policies": [RULE, RULE]},
               token=token)
        t.call("root of twice the same", "GET", MERKLE, token=token)
        t.call("post odd characters", "POST", NODE_INTENTS, {"policies": [odd]}, token=token)
        t.call("root of odd characters", "GET", MERKLE, token=token)
        t.call("post empty", "POST", NODE_INTENTS, {"policies": []}, token=token)
        t.call("root of empty", "GET", MERKLE, token=token)

    assert_same(dm_pair, *dm_pair.run(scenario))


def test_delete_semantics(dm_pair: DMPair) -> None:
    rules = [{**RULE, "policyID": name} for name in ("a", "b", "c", "b")]

    def scenario(t: Transcript) -> None:
        token = t.token()
        t.call("delete on a fresh DM", "DELETE", NODE_INTENTS, {"policyId": "a"}, token=token)
        t.call("root", "GET", MERKLE, token=token)
        t.call("post", "POST", NODE_INTENTS, {"policies": rules}, token=token)
        for label, body, raw in [
                ("one (both b)", {"policyId": "b"}, None),
                ("case-folded key", {"POLICYID": "a"}, None),
                ("unknown id", {"policyId": "zzz"}, None), ("neither", {}, None),
                ("all false", {"all": False}, None), ("empty id", {"policyId": ""}, None),
                ("all a string", {"all": "yes"}, None), ("all 1", {"all": 1}, None),
                ("no body", None, b""), ("null", None, b"null"),
                ("id a number", {"policyId": 5}, None),
                ("all and id", {"all": True, "policyId": "c"}, None)]:
            if raw is not None:
                t.call(f"delete {label}", "DELETE", NODE_INTENTS, raw=raw, token=token)
            else:
                t.call(f"delete {label}", "DELETE", NODE_INTENTS, body, token=token)
            t.call(f"root after {label}", "GET", MERKLE, token=token)
        t.call("post again", "POST", NODE_INTENTS, {"policies": rules[:2]}, token=token)
        t.call("delete all", "DELETE", NODE_INTENTS, {"all": True}, token=token)
        t.call("root after all", "GET", MERKLE, token=token)
        t.call("delete all again", "DELETE", NODE_INTENTS, {"all": True}, token=token)
        t.call("delete without token", "DELETE", NODE_INTENTS, {"all": True})

    assert_same(dm_pair, *dm_pair.run(scenario))
