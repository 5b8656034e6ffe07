"""Real parts for the integration tests: the daemon as a subprocess, a FIFO
standing in for trace_pipe, a test-owned NOTIFY_SOCKET, nr-gnb-like children."""

from __future__ import annotations

import atexit
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from testbed.toml_write import toml_value

REPO = Path(__file__).resolve().parent.parent


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition",
               interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class SchedulingLag:
    """How late this machine wakes a sleeper, measured in a thread while a test runs.

    Timing bounds in tests (watchdog ping gaps) hold for the daemon's own work; on a
    loaded CI host the kernel may also keep any process off the CPU for a while.  A
    thread that sleeps `step` seconds over and over sees exactly that delay, so a test
    can add `worst` to its bound: the bound adapts to the machine, the defect it
    guards against (a loop that blocks) still fails it."""

    def __init__(self, step: float = 0.02) -> None:
        self.step = step
        self.worst = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            before = time.monotonic()
            self._stop.wait(self.step)
            self.worst = max(self.worst, time.monotonic() - before - self.step)

    def __enter__(self) -> SchedulingLag:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _state(pid: int) -> str:
    """The state letter of /proc/PID/stat ("Z": a zombie), "" once reaped."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return ""
    return data[data.rfind(b")") + 2:].split()[0].decode()


def queued_s(pid: int) -> float:
    """How long the task `pid` has waited, runnable, for a CPU: the second field of
    /proc/PID/schedstat (ns).  0.0 where the kernel keeps no schedstat: a bound then
    adapts through SchedulingLag alone."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_bytes().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


# systemd's NOTIFY_BUFFER_MAX (PIPE_BUF): a longer notification is ignored whole
NOTIFY_BUFFER_MAX = 4096


class NotifySocket:
    """A datagram socket playing systemd's side of sd_notify (a notification longer
    than systemd reads is not taken: it is kept in `oversized` only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: List[tuple[float, Dict[str, str]]] = []
        self.oversized: List[bytes] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except OSError:
                return
            if len(data) > NOTIFY_BUFFER_MAX:
                with self._lock:
                    self.oversized.append(data)
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append((time.monotonic(), fields))

    def all(self) -> List[Dict[str, str]]:
        with self._lock:
            return [m for _, m in self.messages]

    def timed(self) -> List[tuple[float, Dict[str, str]]]:
        with self._lock:
            return list(self.messages)

    def wait(self, key: str, value: Optional[str] = None, timeout: float = 20.0,
             after: int = 0) -> Dict[str, str]:
        def find() -> Optional[Dict[str, str]]:
            for m in self.all()[after:]:
                if key in m and (value is None or m[key] == value):
                    return m
            return None
        return wait_until(find, timeout, f"sd_notify {key}={value}")  # type: ignore[no-any-return]

    def close(self) -> None:
        self.sock.close()


SYSTEM_PYTHON = "/usr/bin/python3"
_public_dir: Optional[Path] = None


def public_copy(*files: Path) -> Path:
    """A world-readable directory holding copies of files: another user (or an
    interpreter elsewhere) may not be able to read this checkout."""
    global _public_dir
    if _public_dir is None:
        _public_dir = Path(tempfile.mkdtemp(prefix="gtp5g-public-"))
        os.chmod(_public_dir, 0o755)
        # One copy per test process, gone with it: CI hosts run the suite many times.
        atexit.register(shutil.rmtree, _public_dir, ignore_errors=True)
    for f in files:
        target = _public_dir / f.name
        if f.is_dir():
            shutil.copytree(f, target, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(f, target)
    for path in _public_dir.rglob("*"):
        if not path.is_symlink():  # chmod follows a link: it made /usr/bin/python3.11 0644
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return _public_dir


def _sim_command(executable: Optional[str], user: Optional[int]) -> List[str]:
    if executable is None and user is None:
        return [sys.executable, "-m", "testbed.gnb_sim"]
    script = public_copy(REPO / "testbed" / "gnb_sim.py") / "gnb_sim.py"
    return [executable or SYSTEM_PYTHON, str(script)]


def sim_argv(name: str = "nr-gnb", threads: Sequence[str] = ("nr-gnb-rlc",), workers: int = 0,
             executable: Optional[str] = None, user: Optional[int] = None,
             burn: Tuple[int, float] = (0, 10.0)) -> List[str]:
    """The command line of a gnb_sim (run with cwd=REPO), e.g. for GnbProcess.exec.
    `burn`: each named thread uses that many µs of CPU every that many ms."""
    cmd = [*_sim_command(executable, user), "--name", name, "--workers", str(workers)]
    if burn[0]:
        cmd += ["--burn-us", str(burn[0]), "--every-ms", str(burn[1])]
    for t in threads:
        cmd += ["--thread", t]
    return cmd


# A container entrypoint's `exec "$@"`: holds until a line arrives on stdin.
ENTRYPOINT_WRAPPER = ("sh", "-c", 'read go && exec "$@"', "entrypoint")


def _exe_of(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


class GnbProcess:
    """A real child whose process name and thread names are set with prctl."""

    def __init__(self, name: str = "nr-gnb", threads: tuple[str, ...] = ("nr-gnb-rlc",),
                 user: Optional[int] = None, executable: Optional[str] = None,
                 workers: int = 0, wrapper: Sequence[str] = (),
                 burn: Tuple[int, float] = (0, 10.0)) -> None:
        """`wrapper`: a program that holds until `release()` and then execs the
        simulator, keeping its PID (e.g. ENTRYPOINT_WRAPPER, like a container's
        entrypoint doing exec "$@").  `burn`: see sim_argv."""
        cmd = [*wrapper, *sim_argv(name, threads, workers, executable, user, burn)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=REPO, user=user)
        self.pid: int = self.proc.pid
        self.threads: Dict[str, int] = {}
        if not wrapper:
            self._read_info()

    def _read_info(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"gnb_sim {self.pid} said nothing (exit {self.proc.poll()})")
        info = json.loads(line)
        assert info["pid"] == self.pid, f"the simulator runs as {info['pid']}, not {self.pid}"
        self.threads = info["threads"]

    def release(self) -> None:
        """Let the wrapper exec the simulator (same PID); wait until it is up."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        self._read_info()

    def comm(self) -> str:
        return Path(f"/proc/{self.pid}/comm").read_text().rstrip("\n")

    def rename(self, name: str) -> None:
        """The main thread renames itself, and so the process (prctl(PR_SET_NAME))."""
        self._command(f"rename\t{name}", name)

    def setuid(self, uid: int) -> None:
        self._command(f"setuid\t{uid}", str(uid))

    def exec(self, argv: Sequence[str], is_sim: bool = False) -> None:
        """execv(argv) in the process: same PID and start time, another program.
        With is_sim the new program is gnb_sim (see sim_argv) and is waited for."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("exec\t" + "\t".join(argv) + "\n")
        self.proc.stdin.flush()
        self.threads = {}
        if is_sim:
            self._read_info()
        else:
            wait_until(lambda: _exe_of(self.pid) == os.path.realpath(argv[0]), 5,
                       f"{self.pid} to exec {argv[0]}")

    @property
    def tids(self) -> List[int]:
        return [self.pid, *self.threads.values()]

    def _command(self, text: str, name: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().rstrip("\n") == f"ok {name}"

    def exit_thread(self, name: str) -> None:
        self._command(f"exit\t{name}", name)
        del self.threads[name]

    def mark(self, name: str, path: str) -> None:
        """Thread NAME (or the main thread, by process name) writes a gtp5g line to path."""
        self._command(f"mark\t{name}\t{path}", name)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class TraceWriter:
    """Writes lines into the FIFO the daemon reads as trace_pipe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: Optional[int] = None

    def open(self, timeout: float = 60.0) -> None:
        """Open once a reader exists (the daemon has opened the FIFO).  A blocking
        O_WRONLY open would wait for ever if the daemon never (re)opens it, hanging the
        whole run: a non-blocking open fails with ENXIO until then, so it is retried up
        to `timeout`; the writes then block again, as a tracer's do."""
        end = time.monotonic() + timeout
        while True:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                if time.monotonic() > end:
                    raise TimeoutError(f"no reader opened {self.path} within {timeout} s"
                                       ) from None
                time.sleep(0.01)
        os.set_blocking(fd, True)
        self.fd = fd

    def write(self, text: str | bytes) -> None:
        if self.fd is None:
            self.open()
        assert self.fd is not None
        data = text.encode() if isinstance(text, str) else text
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class DaemonProcess:
    """The real daemon (python -m gtp5g_operator) as a subprocess."""

    def __init__(self, config: Path, notify: Optional[NotifySocket], log: Path,
                 env: Optional[Dict[str, str]] = None, args: tuple[str, ...] = (),
                 python: str = sys.executable, prefix: Sequence[str] = ()) -> None:
        """`prefix`: a command that execs the daemon's command line (its PID stays
        the daemon's), e.g. unshare(1)."""
        full_env = {k: v for k, v in os.environ.items()
                    if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                                 "JOURNAL_STREAM")}
        full_env["PYTHONPATH"] = str(REPO)
        # systemd's RuntimeDirectory=/StateDirectory= stand-ins, beside the log
        full_env["RUNTIME_DIRECTORY"] = str(log.parent / "run")
        full_env["STATE_DIRECTORY"] = str(log.parent / "state")
        if notify is not None:
            full_env["NOTIFY_SOCKET"] = str(notify.path)
        full_env.update(env or {})
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [*prefix, python, "-m", "gtp5g_operator", "--config", str(config), *args],
            stdout=self._log, stderr=subprocess.STDOUT, env=full_env, cwd=REPO)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 20.0) -> str:
        return wait_until(lambda: text in self.log() and self.log(), timeout,  # type: ignore
                          f"log line containing {text!r}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def terminate_within(self, bound: float) -> float:
        """SIGTERM; assert a clean exit within `bound` seconds plus what this host's
        load added meanwhile, and return the time taken.

        The load is measured, not guessed: the time the daemon waited, runnable, for a
        CPU (its /proc/PID/schedstat, read once it is a zombie, not yet reaped) and how
        late this process was woken.  A sleeper's lag alone misses it: busy loops on
        the CPU slow the daemon's own work (the clear, the exit) to their share, and a
        stop of 1.55 s took 2.09 s beside eight of them."""
        with SchedulingLag() as lag:
            queued0 = queued_s(self.pid)
            t0 = time.monotonic()
            self.signal(signal.SIGTERM)
            wait_until(lambda: _state(self.pid) in ("Z", ""), 60, f"{self.pid} to exit",
                       interval=0.005)
            took = time.monotonic() - t0
            queued = queued_s(self.pid) - queued0
        assert self.proc.wait(60) == 0, self.log()
        assert took < bound + queued + lag.worst, (
            f"stopped in {took:.2f} s, more than {bound} s + {queued:.2f} s waiting for a "
            f"CPU + {lag.worst:.2f} s of wake-up lag")
        return took

    def stop(self, timeout: float = 5.0) -> Optional[int]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def scrape_endpoint(port: int, times: int) -> None:
    """GET /metrics and /health `times` times each, reading every answer to its end
    (what a Prometheus scraper and a health probe cost the daemon's endpoint)."""
    for _ in range(times):
        for path in (b"/metrics", b"/health"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                while sock.recv(65536):
                    pass


def write_config(path: Path, **sections: Dict[str, Any]) -> Path:
    """Write a TOML config from {section: {key: value}} (values: str/int/float/bool/list)."""
    lines = []
    for section, items in sections.items():
        lines.append(f"[{section}]")
        for key, value in items.items():
            lines.append(f"{key} = {toml_value(value)}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


# --- a gNB whose main thread has called pthread_exit() --------------------------------------

ZOMBIE_LEADER_C = r"""
/* A process named like the gNB whose main thread calls pthread_exit() after
 * starting its workers: the thread-group leader is then a zombie (its
 * /proc/PID/exe cannot be read) while the workers run.  Prints
 * {"pid": P, "threads": {"NAME": TID, ...}} and lives until stdin closes. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_WORKERS 64
static pthread_barrier_t started;
static pid_t tids[MAX_WORKERS];

static void *worker(void *arg) {
    long i = (long)arg;
    char name[16];
    snprintf(name, sizeof name, "gnb-w%ld", i);
    prctl(PR_SET_NAME, name, 0, 0, 0);
    tids[i] = (pid_t)syscall(SYS_gettid);
    pthread_barrier_wait(&started);
    if (i == 0) {  /* the first worker ends the process when stdin closes */
        char buf[256];
        while (read(0, buf, sizeof buf) > 0) {}
        exit(0);
    }
    for (;;) pause();
    return NULL;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 2;
    if (n < 1 || n > MAX_WORKERS) return 2;
    prctl(PR_SET_NAME, argc > 2 ? argv[2] : "nr-gnb", 0, 0, 0);
    pthread_barrier_init(&started, NULL, (unsigned)n + 1);
    for (long i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, (void *)i) != 0) return 3;
    }
    pthread_barrier_wait(&started);
    printf("{\"pid\": %d, \"threads\": {", (int)getpid());
    for (int i = 0; i < n; i++)
        printf("%s\"gnb-w%d\": %d", i ? ", " : "", i, (int)tids[i]);
    printf("}}\n");
    fflush(stdout);
    pthread_exit(NULL);
}
"""


def build_c_program(source: str, out: Path) -> Optional[str]:
    """Compile `source` with gcc -pthread into `out`; the reason when that is impossible."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        return "gcc is not installed"
    src = out.with_suffix(".c")
    src.write_text(source)
    done = subprocess.run([gcc, "-O1", "-pthread", "-o", str(out), str(src)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        return f"gcc failed: {done.stderr.strip()[:300]}"
    return None


class ZombieLeaderGnb:
    """The compiled ZOMBIE_LEADER_C program: a live process whose leader is a zombie."""

    def __init__(self, binary: Path, workers: int = 2, name: str = "nr-gnb") -> None:
        self.binary = binary
        self.proc = subprocess.Popen([str(binary), str(workers), name], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        info = json.loads(self.proc.stdout.readline())
        self.pid: int = info["pid"]
        self.threads: Dict[str, int] = info["threads"]
        # pthread_exit() returns before the leader is a zombie: wait until it is one.
        wait_until(lambda: self.leader_state() == "Z", 5, f"leader {self.pid} to be a zombie")

    def leader_state(self) -> str:
        return _state(self.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
