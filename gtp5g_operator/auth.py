"""JWT handling for the Gthulhu API: pure functions over token responses.

The token is RS256-signed by the server's private key, so the public key we
hold verifies it; its real `exp` decides when to refresh (never assume 24 h).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

REFRESH_MARGIN = 300.0  # refresh this long before exp ...
SHORT_LIFETIME = 600.0  # ... unless the token lives less than this: then at half-life
CLOCK_LEEWAY = 60  # seconds of clock skew tolerated between us and the API host


class TokenError(Exception):
    """The API answered, but not with a usable token (message is safe to log)."""


@dataclass(frozen=True)
class Token:
    value: str  # never logged: see Token.__repr__
    expires_at: float  # wall-clock seconds (the JWT's exp)
    refresh_in: float  # seconds from when it was obtained until we renew it

    def __repr__(self) -> str:
        return f"Token(expires_at={self.expires_at}, refresh_in={self.refresh_in})"


def extract_token(body: Any) -> tuple[str, Optional[float]]:
    """Token text and optional expiry from either response shape.

    2025 release: {"success": true, "token": "..."}
    later:        {"success": true, "data": {"token": "...", "expired_at": 1700000000}}
    """
    if not isinstance(body, Mapping):
        raise TokenError("token response is not a JSON object")
    data = body.get("data")
    holder: Mapping[str, Any] = data if isinstance(data, Mapping) else body
    token = holder.get("token")
    if not isinstance(token, str) or not token:
        raise TokenError("token response has no token field")
    expired_at = holder.get("expired_at")
    if isinstance(expired_at, bool) or not isinstance(expired_at, (int, float)):
        expired_at = None
    return token, expired_at


def refresh_delay(lifetime: float) -> float:
    """Seconds after issue to renew a token valid for `lifetime` seconds."""
    if lifetime < SHORT_LIFETIME:
        return max(lifetime / 2.0, 1.0)
    return lifetime - REFRESH_MARGIN


def verify_token(token: str, public_key_pem: str, now: float,
                 expired_at: Optional[float] = None) -> Token:
    """Verify the signature with our public key and read the real expiry."""
    import jwt  # lazy: keeps start-up (exec to READY) short

    try:
        claims = jwt.decode(
            token, public_key_pem, algorithms=["RS256"],
            options={"verify_aud": False}, leeway=CLOCK_LEEWAY,
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("the API issued a token that is already expired "
                         "(check both hosts' clocks)") from None
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"token does not verify with api.public_key: {type(exc).__name__}"
                         ) from None
    exp = claims.get("exp", expired_at)
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        raise TokenError("token has no exp claim and the response no expired_at")
    lifetime = float(exp) - now
    return Token(value=token, expires_at=float(exp), refresh_in=refresh_delay(lifetime))
