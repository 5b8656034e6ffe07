"""The one exception every API call raises, and the HTTP status it maps from."""

from __future__ import annotations

from typing import Any, Optional


class ApiError(Exception):
    """A failed API call.  `kind` groups failures so each is logged once per
    change of state: connect, timeout, tls, redirect, unauthorized, forbidden,
    not-found, http-4xx, http-5xx, bad-answer, wrong-flavor."""

    def __init__(self, kind: str, detail: str, status: Optional[int] = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.status = status

    @property
    def summary(self) -> str:
        return f"{self.kind}: {self}"


def error_text(body: Any) -> str:
    """The server's own error message from a JSON answer."""
    if isinstance(body, dict):
        for key in ("error", "message"):
            if isinstance(body.get(key), str):
                return short(body[key])
    return "no error message"


def short(text: object, limit: int = 200) -> str:
    one_line = " ".join(str(text).split())
    return one_line if len(one_line) <= limit else one_line[:limit] + "…"


def status_error(status: int, body: Any, what: str, location: str = "") -> ApiError:
    """The ApiError for a non-2xx answer."""
    if 300 <= status < 400:
        where = f" to {short(location, 120)}" if location else ""
        return ApiError("redirect", f"{what}: HTTP {status} redirect{where}, not followed: "
                        "set api.url to the address that answers", status)
    kinds = {401: "unauthorized", 403: "forbidden", 404: "not-found"}
    kind = kinds.get(status) or ("http-5xx" if status >= 500 else "http-4xx")
    return ApiError(kind, f"{what}: HTTP {status}: {error_text(body)}", status)


def check_answer(status: int, body: Any, what: str, location: str = "") -> None:
    """Raise for anything but a 2xx answer that does not say success=false."""
    if not 200 <= status < 300:
        raise status_error(status, body, what, location)
    if isinstance(body, dict) and body.get("success") is False:
        raise ApiError("bad-answer", f"{what}: the API said success=false: {error_text(body)}",
                       status)
