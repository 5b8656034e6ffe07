"""http.client connections whose every read respects one deadline.

A socket timeout bounds each recv(), not a response: a server that trickles
its status line and headers a byte at a time could hold a plain
http.client request for ever.  Here the response is read through a reader
that, before every recv(), sets the socket's timeout to the time left until
the caller's deadline and fails once it has passed.
"""

from __future__ import annotations

import http.client
import io
import socket
from typing import Any, Callable

Remaining = Callable[[], float]  # seconds left until the deadline


class _DeadlineRaw(io.RawIOBase):
    def __init__(self, sock: socket.socket, remaining: Remaining) -> None:
        super().__init__()
        self._sock = sock
        self._remaining = remaining

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._remaining()
        if left <= 0:
            raise TimeoutError("deadline passed while reading the answer")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


class _DeadlineSocket:
    """The connected socket, except that the response is read via _DeadlineRaw."""

    def __init__(self, sock: socket.socket, remaining: Remaining) -> None:
        self._sock = sock
        self._remaining = remaining

    def makefile(self, mode: str = "r", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineRaw(self._sock, self._remaining))

    def __getattr__(self, name: str) -> Any:  # sendall, settimeout, close, ...
        return getattr(self._sock, name)


class DeadlineHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: Any, remaining: Remaining, **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)
        self._remaining = remaining

    def connect(self) -> None:
        super().connect()
        self.sock = _DeadlineSocket(self.sock, self._remaining)


class DeadlineHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: Any, remaining: Remaining, **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)
        self._remaining = remaining

    def connect(self) -> None:
        super().connect()  # TCP, then TLS (handshake bounded by the connect timeout)
        self.sock = _DeadlineSocket(self.sock, self._remaining)
