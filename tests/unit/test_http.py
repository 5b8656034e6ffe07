"""JsonHttp against tiny real servers on 127.0.0.1: answers in odd shapes."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Iterator, List

import pytest

from gtp5g_operator.gthulhu.errors import ApiError
from gtp5g_operator.gthulhu.http import JsonHttp


class OneShotServer:
    """Answers each connection with `answer`, sent in `parts` with a pause between."""

    def __init__(self, parts: List[bytes], pause: float = 0.05) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.parts, self.pause = parts, pause
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):  # the client may give up first
                conn.recv(65536)
                for part in self.parts:
                    conn.sendall(part)
                    time.sleep(self.pause)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def closing_server() -> Iterator[OneShotServer]:
    body = b'{"success": true, "data": {"x": 1}}'
    head = (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    server = OneShotServer([head, body[:10], body[10:]])  # the body comes after the head
    yield server
    server.close()


def test_an_answer_that_closes_the_connection_is_read_whole(
        closing_server: OneShotServer) -> None:
    # http.client closes the connection when the answer says "Connection: close" and
    # leaves the socket to the response: the body must still be readable then.
    http = JsonHttp(closing_server.url, 2.0)
    for _ in range(3):  # and the next request opens a new connection
        answer = http.request("POST", "/x", {"a": 1}, time.monotonic() + 2)
        assert (answer.status, answer.body) == (200, {"success": True, "data": {"x": 1}})


def test_a_body_that_trickles_past_the_deadline_times_out() -> None:
    body = b'{"success": true}'
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    server = OneShotServer([head] + [bytes([c]) for c in body], pause=0.1)
    try:
        t0 = time.monotonic()
        with pytest.raises(ApiError) as err:
            JsonHttp(server.url, 0.5).request("GET", "/x", None, time.monotonic() + 0.5)
        assert err.value.kind == "timeout" and time.monotonic() - t0 < 0.8
    finally:
        server.close()
