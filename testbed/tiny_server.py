"""A listening socket on 127.0.0.1 for tests that need a server of odd manners
(answers in odd shapes, a proxy that resets): a subclass says how it serves one
connection."""

from __future__ import annotations

import abc
import contextlib
import socket
import threading


class TinyServer(abc.ABC):
    """Every accepted connection gets `serve`: one after another in the accept thread,
    or each in a thread of its own (`threaded`: when a client holds two at once)."""

    def __init__(self, threaded: bool = False) -> None:
        self.threaded = threaded
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.threaded:
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()
            else:
                self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # the client may give up first
            self.serve(conn)

    @abc.abstractmethod
    def serve(self, conn: socket.socket) -> None:
        """Answer one accepted connection."""

    def close(self) -> None:
        self.sock.close()
