"""JWT handling: pure functions over token answers.

v0 and the Decision Maker sign their tokens (RS256) with the private key
whose public half we hold, so we verify the signature before using one.
Time is judged separately from the signature, so that a problem with the
clocks is never blamed on the key:

* `nbf`/`iat` are not checked against our clock: when the API host's clock
  is ahead they would lie in our future and every token would be refused.
  A skew is reported instead (`Token.skew`).
* The lifetime is `exp - iat` on the issuer's clock, and the token is renewed
  after that lifetime (minus a margin) on ours; `exp` is compared with our
  clock only to refuse a token that is already expired by more than the skew
  we tolerate.

The Manager signs with a key we do not have: its tokens are only decoded, to
read their lifetime.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from ..files import decode_json
from .answers import claim_times, time_value

REFRESH_MARGIN = 300.0  # refresh this long before exp ...
SHORT_LIFETIME = 600.0  # ... unless the token lives less than this: then at half-life
CLOCK_LEEWAY = 60  # seconds of clock difference considered normal
MAX_SKEW_REPORTED = 30.0  # below this a clock difference is not worth a log line
MAX_CLAIMS = 64 * 1024  # characters of a token's claims part we are willing to decode


class TokenError(Exception):
    """The API answered, but not with a usable token (message is safe to log)."""


@dataclass(frozen=True)
class Token:
    value: str  # never logged: see Token.__repr__
    expires_at: float  # wall-clock seconds on our clock
    refresh_in: float  # seconds from when it was obtained until we renew it
    skew: float = 0.0  # issuer's clock minus ours, when the token says (iat)

    def __repr__(self) -> str:
        return (f"Token(expires_at={self.expires_at}, refresh_in={self.refresh_in}, "
                f"skew={self.skew})")


def refresh_delay(lifetime: float) -> float:
    """Seconds after issue to renew a token valid for `lifetime` seconds."""
    if lifetime < SHORT_LIFETIME:
        return max(lifetime / 2.0, 1.0)
    return lifetime - REFRESH_MARGIN


def token_from_claims(value: str, claims: Mapping[str, Any], now: float,
                      expired_at: Optional[float] = None) -> Token:
    """Lifetime and skew from the claims; refuses a token expired on both clocks."""
    exp, iat = claim_times(claims)
    if exp is None:
        exp = time_value(expired_at)
    if exp is None:
        raise TokenError("token has no usable exp claim and the answer no expired_at")
    skew = (iat - now) if iat is not None and abs(iat - now) > MAX_SKEW_REPORTED else 0.0
    lifetime = exp - iat if iat is not None else exp - now
    if lifetime <= 0 or exp - skew <= now - CLOCK_LEEWAY:
        raise TokenError("the API issued a token that is already expired (lifetime "
                         f"{lifetime:.0f} s; check both hosts' clocks)")
    return Token(value=value, expires_at=now + lifetime, refresh_in=refresh_delay(lifetime),
                 skew=skew)


def verify_token(token: str, public_key_pem: str, now: float,
                 expired_at: Optional[float] = None) -> Token:
    """Verify the signature with our public key, then judge the times."""
    import jwt  # lazy: keeps start-up (exec to READY) short

    try:
        claims = jwt.decode(
            token, public_key_pem, algorithms=["RS256"],
            options={"verify_aud": False, "verify_exp": False, "verify_nbf": False,
                     "verify_iat": False},
        )
    except jwt.InvalidSignatureError:
        raise TokenError("the token's signature does not verify with api.public_key "
                         "(the API's JWT key is not the pair of our public key)") from None
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"the token cannot be read: {type(exc).__name__}") from None
    except RecursionError:  # its JSON nested deeper than the parser follows
        raise TokenError("the token cannot be read: its claims are nested too deeply") from None
    return token_from_claims(token, claims, now, expired_at)


def unverified_claims(token: str) -> Mapping[str, Any]:
    """The claims of a JWT we cannot verify (the Manager's), {} if unreadable.

    Total: whatever the token holds (not base64, not JSON, nested too deeply for
    the parser, not an object) the answer is a mapping."""
    parts = token.split(".")
    if len(parts) != 3 or len(parts[1]) > MAX_CLAIMS:
        return {}
    try:
        data = decode_json(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:  # binascii.Error is one
        return {}
    return data if isinstance(data, dict) else {}
