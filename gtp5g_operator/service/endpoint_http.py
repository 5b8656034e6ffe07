"""The little HTTP/1.1 the endpoint process speaks, as pure functions.

One request per connection, answered with `Connection: close`, and no
request body is ever read: a request is its head — the request line and the
header lines up to the first empty line.  No header field is interpreted
(/metrics and /health depend on none).  Whatever a client sends is hostile:
a head is refused beyond MAX_HEAD bytes, and only a well-formed request line
is answered with anything but 400.
"""

from __future__ import annotations

import time

TYPE_CHECKING = False  # the endpoint process does without `typing` (its memory)
if TYPE_CHECKING:
    from typing import Tuple

MAX_HEAD = 8192  # bytes of request line and headers; a probe sends about 100
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found",
           431: "Request Header Fields Too Large", 503: "Service Unavailable"}
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789"
                   b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class BadRequest(ValueError):
    """A request that is answered with `status` and closed."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def head_length(data: bytes | bytearray, searched: int = 0) -> int:
    """The length of the complete head at the start of `data` (through its
    empty line), or 0 while it is incomplete.  Raises BadRequest (431) once
    the head is longer than MAX_HEAD.  `searched`: the length of `data` at
    the previous call, which found no end (a head trickled in byte by byte is
    then searched once, not once per byte)."""
    start = max(0, searched - 2)
    end = min((i + len(blank) for blank in (b"\n\r\n", b"\n\n")
               if (i := data.find(blank, start)) >= 0), default=0)
    if end > MAX_HEAD or (not end and len(data) > MAX_HEAD):
        raise BadRequest(431, f"request head longer than {MAX_HEAD} bytes")
    return end


def parse_request_line(head: bytes | bytearray) -> Tuple[str, str]:
    """(method, path without query) of a head; raises BadRequest (400)."""
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split(b" ")
    if len(parts) != 3:
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    if not method or not set(method) <= _TOKEN:
        raise BadRequest(400, "malformed method")
    if len(version) != 8 or not version.startswith(b"HTTP/1.") or not version[7:].isdigit():
        raise BadRequest(400, "not HTTP/1.x")
    if not target or any(b <= 0x20 or b >= 0x7F for b in target):
        raise BadRequest(400, "malformed request target")
    return method.decode("ascii"), target.split(b"?", 1)[0].decode("ascii")


def http_date(wall: float) -> str:
    """RFC 9110's IMF-fixdate, without the locale strftime would consult."""
    t = time.gmtime(wall)
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")


def response(status: int, content_type: str, body: bytes, with_body: bool,
             wall: float) -> Tuple[bytes, ...]:
    """The answer as buffers for one sendmsg(): the head, then the body itself
    (not copied: /metrics' body is shared by every connection sending it)."""
    head = (f"HTTP/1.1 {status} {REASONS[status]}\r\n"
            f"Date: {http_date(wall)}\r\n"
            "Server: gtp5g-operator\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n\r\n").encode("ascii")
    return (head, body) if with_body and body else (head,)
