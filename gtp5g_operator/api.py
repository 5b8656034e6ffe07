"""HTTP client for the Gthulhu API (thin I/O around `auth` and `strategy`).

Calls take a monotonic `deadline`: the daemon gives one push (token request,
post, and the retry after a 401) a single deadline of `api.timeout` seconds,
so the loop is never held longer than that.  Connect and each read get the
remaining time, every read of the answer (status line, headers, body) checks
the deadline (httpdeadline), and the body has a size cap, so a server that
trickles or floods cannot hold it either.

It speaks HTTP with the standard library's http.client rather than requests:
importing requests alone costs 4.5 MB of resident memory under Debian's
python3, which would put the daemon over its 32 MB budget (see README,
Performance); the exchange is two JSON POSTs on one kept-alive connection.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from typing import Any, Callable, List, Optional
from urllib.parse import urlsplit

from .auth import Token, TokenError, extract_token, verify_token
from .httpdeadline import DeadlineHTTPConnection, DeadlineHTTPSConnection
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
        self.base_url = base_url
        self.public_key_pem = public_key_pem
        self.public_key_path = public_key_path
        self.timeout = timeout
        self._clock = clock
        self._wall = wall_clock
        self.ca_file = ca_file
        parts = urlsplit(base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._path = parts.path.rstrip("/")
        self._conn: Optional[http.client.HTTPConnection] = None
        self._deadline = 0.0

    def close(self) -> None:
        self._drop_connection()

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

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = DeadlineHTTPSConnection(
                    self._host, self._port, self._remaining, timeout=timeout,
                    context=self._tls_context())
            else:
                self._conn = DeadlineHTTPConnection(self._host, self._port, self._remaining,
                                                    timeout=timeout)
        self._conn.timeout = timeout  # used when it (re)connects
        if self._conn.sock is not None:
            self._conn.sock.settimeout(timeout)  # bounds sending; reads check the deadline
        return self._conn

    def _remaining(self) -> float:
        return self._deadline - self._clock()

    def _tls_context(self) -> ssl.SSLContext:
        # Certificate and host name are verified against the system CAs or the
        # configured CA file; there is deliberately no switch to turn that off.
        return ssl.create_default_context(cafile=self.ca_file or None)

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _request(self, method: str, path: str, payload: Any, deadline: float,
                 token: Optional[Token] = None) -> tuple[int, Any]:
        body = json.dumps(payload).encode() if payload is not None else None
        headers = {"User-Agent": "gtp5g-operator", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if token is not None:
            headers["Authorization"] = f"Bearer {token.value}"
        what = f"{method} {self.base_url}{path}"
        self._deadline = deadline  # every read of the answer checks it
        for attempt in (1, 2):
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise ApiError("timeout", f"{what}: no answer within {self.timeout:g} s")
            reused = self._conn is not None and self._conn.sock is not None
            conn = self._connection(remaining)
            try:
                conn.request(method, self._path + path, body=body, headers=headers)
                resp = conn.getresponse()
                raw = self._read_body(resp)
            except ApiError:
                self._drop_connection()
                raise
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._drop_connection()
                if reused and attempt == 1:
                    continue  # the server closed our kept-alive connection: once more, fresh
                raise ApiError("connect", f"{what}: connection closed by the server") from None
            except (TimeoutError, socket.timeout):  # the same class from Python 3.10 on
                self._drop_connection()
                raise ApiError("timeout", f"{what}: no answer within {self.timeout:g} s"
                               ) from None
            except ssl.SSLError as exc:
                self._drop_connection()
                raise ApiError("tls", f"TLS with {self.base_url} failed: {_short(exc)}"
                               ) from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise ApiError("connect", f"cannot reach {self.base_url}: {_short(reason)}"
                               ) from None
            if resp.will_close:
                self._drop_connection()
            break
        try:
            return resp.status, json.loads(raw) if raw.strip() else None
        except ValueError:
            if 200 <= resp.status < 300:
                raise ApiError("bad-answer", f"{what}: HTTP {resp.status} with a body that is "
                               "not JSON", resp.status) from None
            return resp.status, None

    def _read_body(self, resp: http.client.HTTPResponse) -> bytes:
        length = resp.getheader("Content-Length")
        if length and length.isdigit() and int(length) > MAX_BODY:
            raise ApiError("bad-answer", f"answer of {length} bytes is larger than {MAX_BODY}: "
                           "ignored", resp.status)
        chunks: List[bytes] = []
        size = 0
        while True:
            chunk = resp.read1(65536)  # each read is bounded by the deadline (httpdeadline)
            if not chunk:
                resp.close()  # marks it done so the kept-alive connection can be reused
                return b"".join(chunks)
            size += len(chunk)
            if size > MAX_BODY:
                raise ApiError("bad-answer", f"answer larger than {MAX_BODY} bytes: ignored",
                               resp.status)
            chunks.append(chunk)


def _error_text(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("error", "message"):
            if isinstance(body.get(key), str):
                return _short(body[key])
    return "no error message"


def _short(exc: object, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "…"

