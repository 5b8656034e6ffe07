"""What every fake Gthulhu server's request handler shares: connection tracking
(so that `stop()` can cut open connections like a killed server), a quiet log,
and the faults a test can switch on at run time (`server.fault = ...`).

The server object a handler serves (`FaultyServer`) has `_cond`,
`connections`, `fault`, `fault_delay` and `_stop_hang`; each fake answers
errors in its own shape through `error_answer` and `raw_answer`.
"""

from __future__ import annotations

import abc
import contextlib
import socket
import ssl
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, ClassVar, Dict, List, Optional, Protocol, Set, Tuple, Union

# The faults and what they do ("slow" delays, then lets the request through).
FAULTS = ("hang", "slow", "trickle", "reset", "refuse", "500", "400", "401", "429", "503",
          "badjson", "huge")


def wait_on(cond: threading.Condition, predicate: Callable[[], Any], timeout: float) -> Any:
    """Wait until predicate() (checked under `cond`, which the server notifies on each
    request) is truthy; return its value, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    with cond:
        while True:
            value = predicate()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("condition not met in time")
            cond.wait(min(left, 0.05))


# What a client's hang-up looks like to the server thread: the daemon cuts an exchange
# when it is stopped (a stop ends every network wait) or its deadline passes.
HUNG_UP = (ConnectionError, ssl.SSLEOFError, ssl.SSLZeroReturnError)


class QuietOnHangUpServer(ThreadingHTTPServer):
    """A client that hangs up mid-exchange is no error of the server: a real one logs
    a line at most.  socketserver prints a traceback for it, which reads as a crash in
    the demo and the tests' output; any other exception is still printed whole."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], HUNG_UP):
            return
        super().handle_error(request, client_address)


class FakeServerBase:
    """A threaded HTTP(S) server with the test conveniences every fake shares:
    requests recorded with monotonic timestamps, wait_for(), run-time faults,
    and stop() like a kill (listening socket and open connections closed)."""

    def __init__(self, handler: type, host: str = "127.0.0.1", port: int = 0,
                 tls: Optional[ssl.SSLContext] = None) -> None:
        self.received: List[Any] = []
        # see FakeServerHandler.play_fault for the names; a callable: one per request
        self.fault: Union[str, Callable[[], Optional[str]], None] = None
        self.fault_delay = 0.0
        # Hostile answers a test plants: (method, path) -> (status, body bytes), answered
        # instead of the route's own; and interim (1xx) answers sent before every answer.
        self.answers: Dict[Tuple[str, str], Tuple[int, bytes]] = {}
        self.answered: Dict[Tuple[str, str], int] = {}  # planted answers served, per route
        self.interim: List[bytes] = []
        # Header fields sent with every answer of a status, e.g. {503: [("Retry-After", "5")]}
        self.status_headers: Dict[int, List[Tuple[str, str]]] = {}
        self._cond = threading.Condition()
        self.connections: Set[socket.socket] = set()
        self._stop_hang = threading.Event()
        self._server = QuietOnHangUpServer((host, port), handler)
        self._server.daemon_threads = True
        self._scheme = "http"
        if tls is not None:  # https: the handshake happens when a connection is accepted
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
            self._scheme = "https"
        # a short poll interval: stop() (every test's teardown) returns in 50 ms, not 500
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def fault_now(self) -> Optional[str]:
        """This request's fault: `fault`, or what it gives when it is a callable."""
        return self.fault() if callable(self.fault) else self.fault

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host!s}:{port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def _start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop like a killed server: listening socket and open connections closed."""
        self._stop_hang.set()
        self._server.shutdown()
        self._server.server_close()
        self.drop_connections()

    def drop_connections(self) -> None:
        """Shut every open connection down (keep-alive clients see it on their next call)."""
        with self._cond:
            for conn in list(self.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def record(self, item: Any) -> None:
        with self._cond:
            self.received.append(item)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Wait until predicate() is truthy; return its value (or raise TimeoutError)."""
        return wait_on(self._cond, predicate, timeout)


class FaultyServer(Protocol):
    _cond: threading.Condition
    connections: Set[socket.socket]
    fault: Any
    fault_delay: float
    _stop_hang: threading.Event
    answers: Dict[Tuple[str, str], Tuple[int, bytes]]
    answered: Dict[Tuple[str, str], int]
    interim: List[bytes]
    status_headers: Dict[int, List[Tuple[str, str]]]


class FakeServerHandler(BaseHTTPRequestHandler, abc.ABC):
    protocol_version = "HTTP/1.1"
    api: FaultyServer  # set on the subclass each fake makes
    error_messages: ClassVar[Dict[int, str]] = {500: "Internal Server Error",
                                      400: "Invalid request payload",
                                      401: "Public key verification failed"}

    def setup(self) -> None:
        super().setup()
        with self.api._cond:
            self.api.connections.add(self.request)

    def finish(self) -> None:
        with self.api._cond:
            self.api.connections.discard(self.request)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def send_response(self, code: int, message: Optional[str] = None) -> None:
        super().send_response(code, message)
        for name, value in self.api.status_headers.get(code, ()):
            self.send_header(name, value)

    def parse_request(self) -> bool:
        """After the request line and headers: interim answers first, and a planted
        answer instead of the route's own (returning False ends the request here)."""
        if not super().parse_request():
            return False
        for interim in list(self.api.interim):
            self.wfile.write(interim)
        route = (self.command, self.path.split("?", 1)[0])
        planted = self.api.answers.get(route)
        if planted is None:
            return True
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        # Counted before it is sent: a client that refuses a body by its Content-Length
        # (over 1 MiB) closes at once, and the send then fails with a broken pipe.
        with self.api._cond:
            self.api.answered[route] = self.api.answered.get(route, 0) + 1
            self.api._cond.notify_all()
        self.raw_answer(*planted)
        return False

    # --- each fake's own answer shapes --------------------------------------------------

    @abc.abstractmethod
    def error_answer(self, status: int, message: str) -> None:
        """Answer an error in this fake's JSON shape."""

    @abc.abstractmethod
    def raw_answer(self, status: int, data: bytes) -> None:
        """Answer these bytes as the body."""

    # --- faults ------------------------------------------------------------------------

    def play_fault(self, fault: str) -> bool:
        """Act out `fault`; True if the request was answered (or dropped) by it."""
        if fault == "hang":
            self.api._stop_hang.wait(60)
            self.close_connection = True
            return True
        if fault == "slow":
            time.sleep(self.api.fault_delay)
            return False
        if fault in ("reset", "refuse"):
            self._reset()
        elif fault == "trickle":
            self._trickle()
        elif fault in ("500", "400", "401", "429", "503"):
            self.error_answer(int(fault), self.error_messages.get(int(fault), "try later"))
        elif fault == "badjson":
            self.raw_answer(200, b"{not json")
        elif fault == "huge":
            self.raw_answer(200, b"[" + b" " * (8 << 20) + b"]")
        else:
            raise ValueError(f"unknown fault {fault}")
        return True

    def _reset(self) -> None:
        """Drop the connection with a RST, answering nothing."""
        with contextlib.suppress(OSError):
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.request.close()  # really closed (RST) when rfile is closed
        self.close_connection = True

    def _trickle(self) -> None:
        """Headers one byte every 0.1 s, never finishing in time."""
        for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" * 4:
            if self.api._stop_hang.wait(0.1):
                break
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:
                break
        self.close_connection = True
