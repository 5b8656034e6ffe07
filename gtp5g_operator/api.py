"""HTTP client for the Gthulhu API (thin I/O around `auth` and `strategy`).

Calls take a monotonic `deadline`: the daemon gives one push (token request,
post, and the retry after a 401) a single deadline of `api.timeout` seconds,
so the loop is never held longer than that.  Connect and each read get the
remaining time and the body is read in pieces against the deadline and a size
cap, so a server that trickles or floods cannot hold it either.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, List, Optional

from .auth import Token, TokenError, extract_token, verify_token
from .strategy import Strategy

MAX_BODY = 1 << 20  # answers are a few hundred bytes; refuse to buffer more than 1 MiB
TOKEN_PATH = "/api/v1/auth/token"
STRATEGIES_PATH = "/api/v1/scheduling/strategies"


class ApiError(Exception):
    """A failed API call. `kind` groups failures for logging once per change."""

    def __init__(self, kind: str, detail: str, status: Optional[int] = None) -> None:
        super().__init__(detail)
        self.kind = kind  # connect, timeout, http-4xx, http-5xx, unauthorized, bad-answer
        self.status = status

    @property
    def summary(self) -> str:
        return f"{self.kind}: {self}"


class GthulhuClient:
    def __init__(self, base_url: str, public_key_pem: str, public_key_path: str,
                 timeout: float, ca_file: str = "",
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        import requests  # lazy: the import costs ~0.1 s and READY must not wait for it

        self._requests = requests
        self.base_url = base_url
        self.public_key_pem = public_key_pem
        self.public_key_path = public_key_path
        self.timeout = timeout
        self._clock = clock
        self._wall = wall_clock
        self._session = requests.Session()
        self._session.trust_env = False  # no proxies or netrc from the environment
        # https: verify against the system CAs, or the configured CA file.  There
        # is deliberately no switch to turn verification off.
        self._session.verify = ca_file or True
        self._session.headers["User-Agent"] = "gtp5g-operator"

    def close(self) -> None:
        self._session.close()

    # --- calls -----------------------------------------------------------

    def fetch_token(self, deadline: float) -> Token:
        status, body = self._request("POST", TOKEN_PATH, {"public_key": self.public_key_pem},
                                     deadline)
        if status == 401:
            raise ApiError("unauthorized", "the API refused our public key "
                           f"{self.public_key_path} (not the pair of its jwt private key?)", status)
        self._check_status(status, body)
        try:
            value, expired_at = extract_token(body)
            return verify_token(value, self.public_key_pem, self._wall(), expired_at)
        except TokenError as exc:
            raise ApiError("bad-answer", str(exc), status) from None

    def post_strategies(self, token: Token, strategies: List[Strategy], deadline: float) -> None:
        status, body = self._request("POST", STRATEGIES_PATH, {"strategies": strategies},
                                     deadline, token)
        if status == 401:
            raise ApiError("unauthorized", "the API rejected our token", status)
        self._check_status(status, body)

    def get_strategies(self, token: Token, deadline: float) -> List[Strategy]:
        status, body = self._request("GET", STRATEGIES_PATH, None, deadline, token)
        if status == 401:
            raise ApiError("unauthorized", "the API rejected our token", status)
        self._check_status(status, body)
        items = body.get("scheduling") if isinstance(body, dict) else None
        if items is None:  # the 2025 server answers null when nothing resolves to a PID
            return []
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ApiError("bad-answer", "strategies answer: scheduling is not a list of objects")
        return items

    # --- plumbing ----------------------------------------------------------

    @staticmethod
    def _check_status(status: int, body: Any) -> None:
        if 200 <= status < 300:
            if isinstance(body, dict) and body.get("success") is False:
                raise ApiError("bad-answer", f"API said success=false: {_error_text(body)}",
                               status)
            return
        kind = "http-5xx" if status >= 500 else "http-4xx"
        raise ApiError(kind, f"HTTP {status}: {_error_text(body)}", status)

    def _request(self, method: str, path: str, payload: Any, deadline: float,
                 token: Optional[Token] = None) -> tuple[int, Any]:
        requests = self._requests
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise ApiError("timeout", f"{method} {path}: no time left of {self.timeout:g} s")
        headers = {"Authorization": f"Bearer {token.value}"} if token else {}
        try:
            resp = self._session.request(
                method, self.base_url + path, json=payload, headers=headers,
                timeout=(remaining, remaining), stream=True, allow_redirects=False)
            with resp:
                raw = self._read_body(resp, deadline)
        except requests.exceptions.SSLError as exc:
            raise ApiError("tls", f"TLS verification failed for {self.base_url}: "
                           f"{_short(exc)}") from None
        except requests.exceptions.ConnectTimeout:
            raise ApiError("timeout", f"connecting to {self.base_url} timed out "
                           f"after {self.timeout:g} s") from None
        except requests.exceptions.Timeout:
            raise ApiError("timeout", f"{method} {path}: no answer within "
                           f"{self.timeout:g} s") from None
        except requests.exceptions.ConnectionError as exc:
            if "timed out" in str(exc):  # a read timeout while streaming the body
                raise ApiError("timeout", f"{method} {path}: no answer within "
                               f"{self.timeout:g} s") from None
            raise ApiError("connect", f"cannot connect to {self.base_url}: "
                           f"{_short(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise ApiError("connect", f"{method} {path}: {_short(exc)}") from None
        try:
            return resp.status_code, json.loads(raw) if raw.strip() else None
        except ValueError:
            if 200 <= resp.status_code < 300:
                raise ApiError("bad-answer", f"{method} {path}: HTTP {resp.status_code} with "
                               "a body that is not JSON", resp.status_code) from None
            return resp.status_code, None

    def _read_body(self, resp: Any, deadline: float) -> bytes:
        chunks, size = [], 0
        for chunk in resp.iter_content(65536):
            size += len(chunk)
            if size > MAX_BODY:
                raise ApiError("bad-answer", f"answer larger than {MAX_BODY} bytes: ignored",
                               resp.status_code)
            chunks.append(chunk)
            if self._clock() > deadline:
                raise ApiError("timeout", f"answer not complete within {self.timeout:g} s")
        return b"".join(chunks)


def _error_text(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("error", "message"):
            if isinstance(body.get(key), str):
                return _short(body[key])
    return "no error message"


def _short(exc: object, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "…"

