"""The HTTP endpoint for /metrics and /health: a small process of its own.

It must answer while the daemon's loop is stalled — that is what /health is
for — and a thread of the daemon cannot: a stopped or hung process answers
nothing.  So `metrics.listen` starts this module as a child process that
serves only what the loop last published in the runtime directory
(metrics.prom, health.json, and the heartbeat the loop updates every turn).
It never calls into the daemon, holds no capability, dies with its parent,
and answers GET and HEAD; anything else is 404.

`Endpoint` is the daemon's side: a loop component that starts the child,
watches its status pipe, restarts it with backoff when it cannot listen
(a port taken, say) and replaces it when `metrics.listen` changes.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Collection, List, Optional, Tuple

from ..core.backoff import Backoff
from ..core.component import NEVER, Component
from ..core.once import StateLog
from ..files import FileProblem, read_regular_file
from .health import health_answer
from .runtime_files import HEALTH_FILE, METRICS_FILE, read_heartbeat, read_json

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)

STOP_WAIT = 1.0
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
PR_SET_PDEATHSIG, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, PR_SET_NO_NEW_PRIVS = 1, 47, 4, 38


# --- the daemon's side --------------------------------------------------------------------


class Endpoint(Component):
    name = "metrics endpoint"

    def __init__(self, listen: str, directory: str, clock: Callable[[], float]) -> None:
        self.listen = listen
        self._dir = directory
        self._clock = clock
        self._child: Optional[subprocess.Popen[bytes]] = None
        self._backoff = Backoff(1.0, 60.0)
        self._retry_at: Optional[float] = clock() if listen else None
        self._state = StateLog(log)
        self._partial = b""
        self._fds: Tuple[int, ...] = ()  # the child's status pipe; a new tuple per child

    def watched_fds(self) -> Collection[int]:
        return self._fds

    def next_deadline(self) -> float:
        return self._retry_at if self._retry_at is not None else NEVER

    def run_due(self, now: float) -> None:
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            self._start()

    def on_readable(self, fd: int) -> None:
        assert self._child is not None and self._child.stdout is not None
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        if data:
            self._partial += data
            while b"\n" in self._partial:
                line, self._partial = self._partial.split(b"\n", 1)
                self._child_says(line.decode("utf-8", "replace"))
            return
        code = self._reap()  # EOF: the child has exited
        self._failed(f"the endpoint process for {self.listen} exited (status {code})")

    def _child_says(self, line: str) -> None:
        if line.startswith("listening"):
            self._backoff.reset()
            if not self._state.recovered("metrics and health on http://%s/ again", self.listen):
                log.info("metrics and health on http://%s/ (/metrics, /health)", self.listen)
        elif line.startswith("error: "):
            self._reap()
            self._failed(line[len("error: "):])

    def _start(self) -> None:
        # The unit grants the daemon ambient capabilities, which exec() would pass
        # on to the child's effective set, and its system call filter forbids the
        # child's capset(): clearing the ambient set here (it only affects what
        # exec'd programs get) starts the child without any capability.
        _libc().prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
        cmd = [sys.executable, "-m", "gtp5g_operator.service.endpoint", "--listen",
               self.listen, "--dir", self._dir, "--parent", str(os.getpid())]
        try:
            self._child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                           close_fds=True, env=_child_env())
        except OSError as exc:
            self._failed(f"cannot start the endpoint process: {exc.strerror or exc}")
            return
        assert self._child.stdout is not None
        os.set_blocking(self._child.stdout.fileno(), False)
        self._fds = (self._child.stdout.fileno(),)

    def _failed(self, why: str) -> None:
        delay = self._backoff.next_delay()
        self._state.problem(why, logging.ERROR, "metrics endpoint: %s; retrying with backoff "
                            "(next in %.0f s)", why, delay)
        self._retry_at = self._clock() + delay

    def _reap(self) -> Optional[int]:
        child, self._child, self._partial, self._fds = self._child, None, b"", ()
        if child is None:
            return None
        if child.stdout is not None:
            child.stdout.close()
        try:
            return child.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            child.kill()
            return child.wait()

    def reconfigure(self, old: Config, new: Config) -> bool:
        if new.metrics.listen != self.listen:
            self.close()
            self.listen = new.metrics.listen
            self._backoff.reset()
            self._state.recovered()
            self._retry_at = self._clock() if self.listen else None
            if not self.listen:
                log.info("metrics endpoint turned off")
        return False

    def close(self) -> None:
        if self._child is not None:
            self._child.terminate()
            self._reap()
        self._retry_at = None


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (
        "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "CREDENTIALS_DIRECTORY")}
    # The parent may run from a checkout (tests): the child must import the same package.
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


# --- the child process --------------------------------------------------------------------



def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def drop_privileges() -> None:
    """No capability is needed to serve two files: drop them all, for good."""
    libc = _libc()
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable (x2): all empty
    libc.capset(header, data)


def _handler_class(directory: str) -> type:
    """The request handler (imported only by the endpoint process: the daemon
    itself has no use for http.server).  Longer and more branched than the
    package's other functions because it holds the class: its methods are small."""
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        served = directory  # the runtime directory whose files are served
        timeout = 5  # a client that does not send its request in time is dropped
        server_version = "gtp5g-operator"
        sys_version = ""

        def log_message(self, *args: Any) -> None:  # a probe every few seconds is not news
            pass

        def do_GET(self) -> None:
            self._answer(with_body=True)

        def do_HEAD(self) -> None:
            self._answer(with_body=False)

        def _not_found(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_found

        def _answer(self, with_body: bool) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                code, ctype, body = self._metrics()
            elif path == "/health":
                code, doc = health_answer(self._health_doc(), read_heartbeat(self.served),
                                          time.monotonic())
                ctype, body = "application/json", (json.dumps(doc, sort_keys=True) + "\n").encode()
            else:
                code, ctype, body = 404, "text/plain", b"not found\n"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def _metrics(self) -> Tuple[int, str, bytes]:
            try:
                data, _ = read_regular_file(os.path.join(self.served, METRICS_FILE), 4 << 20)
            except FileProblem:
                return 503, "text/plain", b"no metrics published yet\n"
            return 200, PROMETHEUS_TEXT, data

        def _health_doc(self) -> Optional[dict[str, Any]]:
            try:
                return read_json(self.served, HEALTH_FILE)
            except (OSError, FileProblem, ValueError):
                return None

    return Handler


def serve(listen: str, directory: str, parent: int) -> int:
    from ..config.values import split_listen

    libc = _libc()
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        return 0  # the daemon is already gone
    drop_privileges()
    from http.server import ThreadingHTTPServer

    host, port = split_listen(listen)
    handler = _handler_class(directory)
    server_class = type("Server", (ThreadingHTTPServer,), {
        "address_family": socket.AF_INET6 if ":" in host else socket.AF_INET,
        "daemon_threads": True})
    try:
        server = server_class((host, port), handler)
    except OSError as exc:
        print(f"error: cannot listen on {listen}: {exc.strerror or exc}", flush=True)
        return 2
    print("listening", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever(poll_interval=3600)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="serve /metrics and /health for gtp5g-operator")
    ap.add_argument("--listen", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--parent", type=int, required=True)
    a = ap.parse_args(argv)
    return serve(a.listen, a.dir, a.parent)


if __name__ == "__main__":
    sys.exit(main())
