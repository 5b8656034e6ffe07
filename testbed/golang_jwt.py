"""golang-jwt/v5 (v5.3.0) as Gthulhu's Decision Maker uses it, for the fake: which
error ParseWithClaims returns for a token, in the library's order of checks, given
the DM's key function (any RSA PKCS#1 v1.5 method, the DM's public key).

Checked against the real Decision Maker by tests/contract/test_dm_api.py.
"""

from __future__ import annotations

import base64
from typing import Any, Callable, Dict, List, Optional

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from testbed.go_json import go_unmarshal_object

__all__ = ["go_b64_raw_url", "golang_jwt_error"]


_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_GO_ALGS = {"ES256", "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512", "none",
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}  # RegisterSigningMethod
_RSA_HASHES: Dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "RS256": hashes.SHA256, "RS384": hashes.SHA384, "RS512": hashes.SHA512}


def go_b64_raw_url(segment: str) -> bytes:
    """base64.RawURLEncoding.DecodeString; ValueError with Go's text on bad input."""
    values = []
    for i, char in enumerate(segment):
        if char in "\r\n":
            continue  # the Go decoder skips new lines
        if char not in _B64URL:
            raise ValueError(f"illegal base64 data at input byte {i}")
        values.append(char)
    if len(values) % 4 == 1:
        raise ValueError(f"illegal base64 data at input byte {len(segment) - 1}")
    text = "".join(values)
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _numeric_date(value: Any) -> Optional[float]:
    """NumericDate.UnmarshalJSON: a number, or a string holding one (json.Number)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("could not parse NumericData")
    try:
        return float(int(float(value)))  # truncated to jwt.TimePrecision (1 s)
    except ValueError:
        raise ValueError("could not parse NumericData") from None


def golang_jwt_error(token: str, key: rsa.RSAPublicKey, now: float) -> Optional[str]:
    """The error golang-jwt's ParseWithClaims gives for `token` with the DM's key
    function (any RSA PKCS#1 v1.5 method; anything else is "unexpected signing method"),
    checked in the library's order; None for a valid token."""
    parts = token.split(".")
    if len(parts) != 3:
        return "token is malformed: token contains an invalid number of segments"
    decoded: List[Any] = []
    # the header into map[string]interface {}, the claims into the middleware's Claims
    for part, what, go_type in ((parts[0], "header", "map[string]interface {}"),
                                (parts[1], "claim", "rest.Claims")):
        try:
            raw = go_b64_raw_url(part)
        except ValueError as e:
            return f"token is malformed: could not base64 decode {what}: {e}"
        try:
            decoded.append(go_unmarshal_object(raw, go_type))
        except ValueError as e:
            return f"token is malformed: could not JSON decode {what}: {e}"
    header, claims = decoded
    try:
        exp, nbf = (_numeric_date(claims.get(name)) for name in ("exp", "nbf"))
    except ValueError as e:
        return f"token is malformed: could not JSON decode claim: {e}"
    alg = header.get("alg")
    if not isinstance(alg, str):
        return "token is unverifiable: signing method (alg) is unspecified"
    if alg not in _GO_ALGS:
        return "token is unverifiable: signing method (alg) is unavailable"
    try:
        signature = go_b64_raw_url(parts[2])
    except ValueError as e:
        return f"token is malformed: could not base64 decode signature: {e}"
    if alg not in _RSA_HASHES:
        return ("token is unverifiable: error while executing keyfunc: "
                f"unexpected signing method: {alg}")
    try:
        key.verify(signature, f"{parts[0]}.{parts[1]}".encode("latin-1"), padding.PKCS1v15(),
                   _RSA_HASHES[alg]())
    except (InvalidSignature, ValueError):
        return "token signature is invalid: crypto/rsa: verification error"
    problems = []
    if exp is not None and not now < exp:
        problems.append("token is expired")
    if nbf is not None and now < nbf:
        problems.append("token is not valid yet")
    return "token has invalid claims: " + ", ".join(problems) if problems else None


