"""A request is sent again on a fresh connection only when a kept-alive one turned out
stale before the server answered anything, and never a Manager's create: the server may
have acted on it before the connection broke, and a replay made a second policy that
nothing removed (not the gNB's exit, not clear_on_stop)."""

from __future__ import annotations

import select
import socket
import struct
from pathlib import Path
from typing import Callable, Dict, Iterator

import pytest

from testbed.fake_manager import FakeManager
from testbed.harness import GnbProcess
from testbed.tiny_server import TinyServer
from tests.conftest import Env
from tests.integration.test_flavors import lines, manager_for, my_policies, start_manager

pytestmark = pytest.mark.faults


class ResetAfterProcessing(TinyServer):
    """Forwards to upstream_port; the first request holding `trigger` reaches the server,
    then the client gets `keep` bytes of the answer and a reset."""

    def __init__(self, upstream_port: int,
                 trigger: bytes = b"POST /api/v1/node-scheduling-policies ",
                 keep: int = 12) -> None:
        self.upstream = upstream_port
        self.trigger = trigger
        self.keep = keep
        self.armed = True
        super().__init__(threaded=True)  # the daemon may hold two connections at once

    def serve(self, c: socket.socket) -> None:
        u = socket.create_connection(("127.0.0.1", self.upstream))
        cut = False
        try:
            while True:
                r, _, _ = select.select([c, u], [], [], 30)
                if c in r:
                    d = c.recv(65536)
                    if not d:
                        return
                    if self.armed and self.trigger in d:
                        self.armed, cut = False, True
                    u.sendall(d)
                if u in r:
                    d = u.recv(65536)
                    if not d:
                        return
                    if cut:
                        c.sendall(d[:self.keep])
                        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        return
                    c.sendall(d)
        except OSError:
            pass
        finally:
            c.close()
            u.close()

    def stop(self) -> None:
        self.close()


@pytest.fixture
def manager(keys: Dict[str, Path]) -> Iterator[FakeManager]:
    server = manager_for(keys)
    yield server
    server.stop()


@pytest.mark.parametrize("keep", [0, 12])  # nothing of the answer; its status line
def test_a_connection_reset_after_the_create_leaves_one_policy(
        env: Env, manager: FakeManager, gnb: Callable[..., GnbProcess], keep: int) -> None:
    proxy = ResetAfterProcessing(int(manager.url.rsplit(":", 1)[1]), keep=keep)
    try:
        d = start_manager(env, manager, api={"url": proxy.url})
        g = gnb(threads=())
        env.writer.write(lines(g))
        # a replay would have been sent within the same request, before this line
        d.wait_log("for node node-a: ^(?:nr-gnb)$", timeout=30)
        assert len(my_policies(manager)) == 1, my_policies(manager)
        g.stop()
        manager.wait_for(lambda: my_policies(manager) == [], 15)
    finally:
        proxy.stop()
