"""The one exception every API call raises, and the HTTP status it maps from."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, FrozenSet, Literal, Optional

from ..core.words import one_line

# What went wrong, in groups: each is logged once per change of state.
ErrorKind = Literal["connect", "timeout", "tls", "cert-dates", "redirect", "unauthorized",
                    "forbidden",
                    "not-found", "busy", "http-4xx", "http-5xx", "bad-answer",
                    "wrong-flavor", "not-ours", "stopped"]
# "stopped": a stop signal cut the exchange short (http.py's StopRequested).  It says
# nothing of the server: no retry follows, no re-detection, and it is no fault.
# What only a person can fix (a key or password refused, a missing permission, an
# unknown node, the wrong server or address, a certificate, a request the server
# rejects, rules of someone else in the way): logged at ERROR, so that
# `journalctl -p err` lists exactly what needs a person.  The rest passes by itself
# (a server down, slow or failing for a while, a garbled answer) and is a WARNING.
NEEDS_PERSON: FrozenSet[ErrorKind] = frozenset({
    "unauthorized", "forbidden", "not-found", "wrong-flavor", "redirect", "tls", "cert-dates",
    "http-4xx", "not-ours"})


@dataclass
class Answer:
    status: int
    body: Any  # decoded JSON, or None
    location: str = ""  # of a redirect
    retry_after: Optional[float] = None  # seconds a 429 or 503 asked us to wait


class ApiError(Exception):
    """A failed API call, with its `kind` (ErrorKind), and the seconds the server asked
    us to wait before trying again (Retry-After) if it did."""

    def __init__(self, kind: ErrorKind, detail: str, *,
                 retry_after: Optional[float] = None) -> None:
        super().__init__(detail)
        self.kind: ErrorKind = kind
        self.retry_after = retry_after

    @property
    def summary(self) -> str:
        return f"{self.kind}: {self}"

    @property
    def level(self) -> int:
        """The log level of this failure (see NEEDS_PERSON)."""
        return logging.ERROR if self.kind in NEEDS_PERSON else logging.WARNING


def error_text(body: Any) -> str:
    """The server's own error message from a JSON answer."""
    if isinstance(body, dict):
        for key in ("error", "message"):
            if isinstance(body.get(key), str):
                return one_line(body[key])
    return "no error message"


def check_answer(answer: Answer, what: str) -> None:
    """Raise for anything but a 2xx answer that does not say success=false."""
    status, body = answer.status, answer.body
    if 300 <= status < 400:
        where = f" to {one_line(answer.location, 120)}" if answer.location else ""
        raise ApiError("redirect", f"{what}: HTTP {status} redirect{where}, not followed: "
                       "set api.url to the address that answers")
    if not 200 <= status < 300:
        # 408 and 429 are "later", not "wrong" (a slow or throttling server or proxy):
        # they pass by themselves, unlike the rest of 4xx.
        kinds: dict[int, ErrorKind] = {401: "unauthorized", 403: "forbidden", 404: "not-found",
                                       408: "busy", 429: "busy"}
        kind: ErrorKind = kinds.get(status) or ("http-5xx" if status >= 500 else "http-4xx")
        raise ApiError(kind, f"{what}: HTTP {status}: {error_text(body)}",
                       retry_after=answer.retry_after)
    if isinstance(body, dict) and body.get("success") is False:
        raise ApiError("bad-answer", f"{what}: the API said success=false: {error_text(body)}")
