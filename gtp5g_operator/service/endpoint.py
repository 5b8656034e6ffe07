"""The daemon's side of the /metrics and /health endpoint.

The endpoint must answer while the daemon's loop is stalled — that is what
/health is for — and a thread of a stopped or hung daemon answers nothing.
So `metrics.listen` runs a small process of its own (endpoint_server.py)
that serves only what the loop publishes.  This component:

* binds the listening socket itself, in `open()` before READY=1, so that a
  probe right after start waits in the backlog instead of being refused, and
  keeps it while the address stays: a restarted child gets the same socket;
* starts the child with it (`pass_fds`), a pipe on stdin that ends when the
  daemon does and a status pipe on stdout, and restarts it with backoff;
* on a reload to another `metrics.listen`, binds the new address first and
  swaps only then (until then the old one serves);
* turns a bind that fails (a port taken) into one error line and a retry
  with backoff.

Why a plain child and not systemd socket activation, and how no capability
reaches it (the ambient set cleared before each start, see
clear_ambient_capabilities): the README's "The endpoint process".
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import sys
from typing import TYPE_CHECKING, Callable, Collection, Dict, List, Optional, Tuple

from ..config.values import split_listen
from ..core.backoff import Backoff
from ..core.component import NEVER, Component
from ..core.once import StateLog
from .endpoint_server import DEADLINE, held_capabilities
from .signals import HANDLED

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)

BACKLOG = 128  # connections the kernel queues while the child is busy or restarting
STOP_WAIT = 1.0
STABLE_AFTER = 60.0  # a child that served this long is restarted after the first delay again
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
CHILD_MODULE = "gtp5g_operator.service.endpoint_server"


# --- system calls, each checked --------------------------------------------------------------


def bind_listener(listen: str) -> socket.socket:
    """A socket listening on "address:port" (an IP literal: the config checked it)."""
    host, port = split_listen(listen)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebind despite TIME_WAIT
        # Every accepted connection inherits this.  A client that asks for an answer and
        # never reads it (its window stays 0) keeps the answer in the kernel after the
        # endpoint closes the connection at its deadline: an orphan socket the kernel
        # probes for as long as the client lives, its buffers charged to the unit's
        # memory (cgroup v2).  With it, the kernel aborts a connection whose data has
        # waited DEADLINE for the client, open or orphaned.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(DEADLINE * 1000))
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def ambient_capabilities() -> int:
    """The calling thread's ambient set (0 on a kernel without ambient sets)."""
    with open("/proc/thread-self/status", encoding="ascii", errors="replace") as status:
        return held_capabilities(status.read()).get("CapAmb", 0)


def clear_ambient_capabilities() -> None:
    """Empty this thread's ambient set, which exec() would make the child's
    effective one (the daemon keeps its own capabilities); raises OSError.  No
    capset() (the unit's filter forbids it): a non-root process exec'd with an
    empty ambient set holds no capability, which the child checks itself."""
    if not ambient_capabilities():
        return
    import ctypes  # only here: nothing else in the daemon needs it

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    libc.prctl.restype = ctypes.c_int
    if libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_CAP_AMBIENT_CLEAR_ALL): {os.strerror(err)}")
    left = ambient_capabilities()
    if left:
        raise OSError(errno.EPERM, f"ambient capabilities {left:#x} still set after prctl()")


def child_command(fd: int, directory: str) -> List[str]:
    # -S: no site module (less memory); the package is found through PYTHONPATH.
    return [sys.executable, "-S", "-m", CHILD_MODULE, "--fd", str(fd), "--dir", directory]


def child_env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (
        "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "CREDENTIALS_DIRECTORY")}
    # The package's own directory (a checkout in tests, dist-packages when installed).
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


def describe_exit(code: Optional[int]) -> str:
    if code is not None and code < 0:
        return f"killed by signal {-code}"
    return f"status {code}"


# --- the component -----------------------------------------------------------------------------


class Endpoint(Component):
    name = "metrics endpoint"

    def __init__(self, listen: str, directory: str, clock: Callable[[], float]) -> None:
        self.listen = listen  # the configured address
        self._dir = directory
        self._clock = clock
        self._listener: Optional[socket.socket] = None
        self._bound = ""  # the address self._listener listens on
        self._child: Optional[subprocess.Popen[bytes]] = None
        self._serving_since: Optional[float] = None
        self._backoff = Backoff(1.0, 60.0)
        self._retry_at: Optional[float] = None
        self._state = StateLog(log)
        self._partial = b""
        self._fds: Tuple[int, ...] = ()  # the child's status pipe; a new tuple per child

    def open(self) -> None:
        """Bind and start serving: called before READY=1."""
        if self.listen:
            self._establish()

    def watched_fds(self) -> Collection[int]:
        return self._fds

    def next_deadline(self) -> float:
        return self._retry_at if self._retry_at is not None else NEVER

    def run_due(self, now: float) -> None:
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            self._establish()

    def _establish(self) -> None:
        if self._bound != self.listen and not self._bind():
            return
        if self._child is None:
            self._spawn()

    # --- the listening socket ---------------------------------------------------------

    def _bind(self) -> bool:
        try:
            try:
                sock = bind_listener(self.listen)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or self._listener is None or \
                        split_listen(self._bound)[1] != split_listen(self.listen)[1]:
                    raise
                # Our own socket holds the port (127.0.0.1:P -> 0.0.0.0:P): free it, bind.
                self._close_listener()
                sock = bind_listener(self.listen)
        except OSError as exc:
            still = f"; still serving on {self._bound}" if self._listener is not None else ""
            self._failed(f"cannot listen on {self.listen}: {exc.strerror or exc}{still}")
            return False
        self._close_listener()
        self._listener, self._bound = sock, self.listen
        self._backoff.reset()
        return True

    def _close_listener(self) -> None:
        self._end_child(terminate=True)
        if self._listener is not None:
            self._listener.close()
        self._listener, self._bound = None, ""

    # --- the child ----------------------------------------------------------------------

    def _spawn(self) -> None:
        assert self._listener is not None
        fd = self._listener.fileno()
        # systemd sends a stop, and `systemctl kill -s HUP|USR1|USR2`, to every process of
        # the unit: those signals are the daemon's.  The child ends when its stdin does
        # (the daemon gone or done with it), so it starts with them blocked (the mask
        # survives exec): else each stop was logged as its death, at ERROR.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        try:
            clear_ambient_capabilities()
            child = subprocess.Popen(
                child_command(fd, self._dir), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                pass_fds=(fd,), cwd="/", env=child_env())
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            self._failed(f"cannot start the endpoint process: {exc.strerror or exc}{where}")
            return
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        assert child.stdout is not None
        os.set_blocking(child.stdout.fileno(), False)
        self._child, self._fds = child, (child.stdout.fileno(),)

    def on_readable(self, fd: int) -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # EOF: the child has exited
            self._child_ended(lambda code: f"the endpoint process for {self._bound} exited "
                              f"({describe_exit(code)})")
            return
        self._partial = (self._partial + data)[-4096:]  # its lines are short: bounded anyway
        while b"\n" in self._partial:
            line, self._partial = self._partial.split(b"\n", 1)
            self._child_says(line.decode("utf-8", "replace"))

    def _child_says(self, line: str) -> None:
        if line == "serving":
            self._serving_since = self._clock()
            if not self._state.recovered("metrics and health on http://%s/ again", self._bound):
                log.info("metrics and health on http://%s/ (/metrics, /health)", self._bound)
        elif line.startswith("error: "):
            self._child_ended(lambda _: line[len("error: "):])

    def _child_ended(self, why: Callable[[Optional[int]], str]) -> None:
        """Reap the child that ended and retry; `why` says why from its exit status."""
        served = self._serving_since
        code = self._end_child(terminate=False)
        if served is not None and self._clock() - served >= STABLE_AFTER:
            self._backoff.reset()  # not a crash loop: restart after the first delay
        self._failed(why(code))

    def _end_child(self, terminate: bool) -> Optional[int]:
        """Stop (if `terminate`) and reap the child; its exit status.

        Stopped, it is killed at once: the loop must not wait on it.  It holds the
        signals a stop sends (SIGTERM: blocked, see _spawn), so only its stdin's EOF
        or SIGKILL ends it, and a child that did not see that EOF (stopped, busy) held
        the reload or stop that moved it for STOP_WAIT, 1 s beyond api.timeout:
        watchdog pings 1.3 s apart under WatchdogSec=1s.  It serves nothing that a
        kill could leave half done.  Ending by itself (its EOF, its "error:" line),
        it is left the time to exit with its own status, which the log line says."""
        child, self._child, self._partial, self._fds, self._serving_since = (
            self._child, None, b"", (), None)
        if child is None:
            return None
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()  # stdin's end: the child sees EOF and exits by itself
        if terminate and child.poll() is None:
            child.kill()
        try:
            return child.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            child.kill()
            return child.wait()

    def _failed(self, why: str) -> None:
        delay = self._backoff.next_delay()
        self._state.problem(why, logging.ERROR, "metrics endpoint: %s; retrying with backoff "
                            "(next in %.0f s)", why, delay)
        self._retry_at = self._clock() + delay

    # --- reload and stop ------------------------------------------------------------------

    def reconfigure(self, old: Config, new: Config) -> bool:
        if new.metrics.listen == self.listen:
            return False
        self.listen = new.metrics.listen
        self._retry_at = None
        self._backoff.reset()
        self._state.recovered()
        if self.listen:
            self._establish()
        else:
            self.close()
            log.info("metrics endpoint turned off")
        return False

    def close(self) -> None:
        self._close_listener()
        self._retry_at = None
