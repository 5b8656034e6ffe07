"""The endpoint's loop in-process, with real sockets on 127.0.0.1: the connection
cap, the one deadline per exchange, the close that does not lose the answer."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from gtp5g_operator.service.endpoint_server import Published, Server


class Running:
    """A Server on a thread; `stop()` closes the 'daemon' pipe, as the daemon's exit does."""

    def __init__(self, run: Path, max_connections: int, deadline: float) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self._parent_r, self._parent_w = os.pipe()
        self.server = Server(self.listener, Published(str(run)), parent_fd=self._parent_r,
                             max_connections=max_connections, deadline=deadline)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def stop(self) -> None:
        os.close(self._parent_w)
        self.thread.join(5)
        assert not self.thread.is_alive(), "the server did not end with its daemon's pipe"
        os.close(self._parent_r)
        self.listener.close()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    (tmp_path / "metrics.prom").write_bytes(b"m 1\n" * 50_000)  # 200 KB: more than buffers
    return tmp_path


@pytest.fixture
def server(run_dir: Path) -> Iterator[Running]:
    s = Running(run_dir, max_connections=4, deadline=1.0)
    yield s
    s.stop()


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> Tuple[bytes, float]:
    """Everything the server sent until it closed (FIN or reset), and when it closed."""
    sock.settimeout(timeout)
    chunks: List[bytes] = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return b"".join(chunks), time.monotonic()
        chunks.append(chunk)


def test_one_more_connection_than_the_cap_closes_the_oldest(server: Running) -> None:
    held = [server.connect() for _ in range(4)]  # accepted in this order (the queue is FIFO)
    newest = server.connect()
    data, _ = read_until_closed(held[0], timeout=2)
    assert data == b"", "the oldest connection is closed without an answer"
    newest.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    data, _ = read_until_closed(newest)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"m 1\n")
    for sock in held[1:]:  # still open (until their deadline)
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(1)
        sock.close()


def test_a_request_trickled_a_byte_at_a_time_is_dropped_at_the_deadline(
        server: Running) -> None:
    sock = server.connect()
    t0 = time.monotonic()
    request = b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 1000
    closed_at = None
    for byte in request:  # each byte well within any per-read timeout
        try:
            sock.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            closed_at = time.monotonic()
            break
        time.sleep(0.05)
    assert closed_at is not None, "the trickler was never dropped"
    assert 0.9 <= closed_at - t0 <= 3.0, f"dropped after {closed_at - t0:.2f} s, deadline 1 s"


def test_a_client_that_never_reads_its_answer_is_dropped_at_the_deadline(
        server: Running) -> None:
    """Neither reading nor closing: the server's side ends at the deadline (the
    answer may have fitted in the kernel's buffers, or not: either way)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
    time.sleep(1.5)  # the scenario: 1.5 s without reading, past the 1 s deadline
    t0 = time.monotonic()
    data, closed_at = read_until_closed(sock, timeout=3)  # times out if never closed
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert closed_at - t0 < 1.0, "closed at the deadline, not when the client read"


def test_a_request_with_a_body_gets_its_whole_answer(server: Running) -> None:
    """The body is never read: closing at once would reset the connection and
    could destroy the answer in the client's buffer."""
    sock = server.connect()
    body = b"x" * 200_000
    sock.sendall(b"POST /health HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body))
    sender = threading.Thread(target=lambda: sock.sendall(body), daemon=True)
    sender.start()  # the server reads and drops it after answering
    data, _ = read_until_closed(sock)
    sender.join(5)
    assert data.startswith(b"HTTP/1.1 404 Not Found\r\n") and data.endswith(b"not found\n")


def test_pipelined_requests_get_one_answer(server: Running) -> None:
    sock = server.connect()
    sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\nGET /nothing HTTP/1.1\r\n\r\n")
    data, _ = read_until_closed(sock)
    assert data.count(b"HTTP/1.1 ") == 1 and data.startswith(b"HTTP/1.1 200 OK")


@pytest.mark.parametrize("before", [b"\r\n", b"\n", b"\r\n\r\n"])
def test_empty_lines_before_a_request_are_ignored(server: Running, before: bytes) -> None:
    """RFC 9112 2.2: a server SHOULD ignore at least one empty line received before the
    request line (a client may send one after a POST body, some probes do)."""
    for parts in ([before + b"GET /metrics HTTP/1.1\r\n\r\n"],
                  [before, b"GET /metrics HTTP/1.1\r\n\r\n"]):  # in its own segment too
        sock = server.connect()
        for part in parts:
            sock.sendall(part)
            time.sleep(0.05)  # not needed for the answer: gives each part its own recv
        data, _ = read_until_closed(sock)
        assert data.startswith(b"HTTP/1.1 200 OK"), data[:40]


def test_bad_requests_are_answered_and_closed(server: Running) -> None:
    for request, status in ((b"hello\r\n\r\n", b"400"), (b"G" * 9000, b"431"),
                            (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 2000, b"431")):
        sock = server.connect()
        with contextlib.suppress(ConnectionResetError):  # answered before all was sent
            sock.sendall(request)
        data, _ = read_until_closed(sock)
        assert data.startswith(b"HTTP/1.1 " + status), (request[:20], data[:40])
