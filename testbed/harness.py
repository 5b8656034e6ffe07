"""Real parts for the integration tests: the daemon as a subprocess, a FIFO
standing in for trace_pipe, a test-owned NOTIFY_SOCKET, nr-gnb-like children."""

from __future__ import annotations

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
from typing import Any, Callable, Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition",
               interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class NotifySocket:
    """A datagram socket playing systemd's side of sd_notify."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: List[tuple[float, Dict[str, str]]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append((time.monotonic(), fields))

    def all(self) -> List[Dict[str, str]]:
        with self._lock:
            return [m for _, m in self.messages]

    def timed(self) -> List[tuple[float, Dict[str, str]]]:
        with self._lock:
            return list(self.messages)

    def wait(self, key: str, value: Optional[str] = None, timeout: float = 5.0,
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
    for f in files:
        target = _public_dir / f.name
        if f.is_dir():
            shutil.copytree(f, target, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(f, target)
    for path in _public_dir.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return _public_dir


def _sim_command(executable: Optional[str], user: Optional[int]) -> List[str]:
    if executable is None and user is None:
        return [sys.executable, "-m", "testbed.gnb_sim"]
    script = public_copy(REPO / "testbed" / "gnb_sim.py") / "gnb_sim.py"
    return [executable or SYSTEM_PYTHON, str(script)]


class GnbProcess:
    """A real child whose process name and thread names are set with prctl."""

    def __init__(self, name: str = "nr-gnb", threads: tuple[str, ...] = ("nr-gnb-rlc",),
                 user: Optional[int] = None, executable: Optional[str] = None,
                 workers: int = 0) -> None:
        cmd = [*_sim_command(executable, user), "--name", name, "--workers", str(workers)]
        for t in threads:
            cmd += ["--thread", t]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=REPO, user=user)
        assert self.proc.stdout is not None
        info = json.loads(self.proc.stdout.readline())
        self.pid: int = info["pid"]
        self.threads: Dict[str, int] = info["threads"]

    @property
    def tids(self) -> List[int]:
        return [self.pid, *self.threads.values()]

    def _command(self, text: str, name: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == f"ok {name}"

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

    def open(self) -> None:
        # O_WRONLY blocks until a reader exists: the daemon must have opened it.
        self.fd = os.open(self.path, os.O_WRONLY)

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
                 python: str = sys.executable) -> None:
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
            [python, "-m", "gtp5g_operator", "--config", str(config), *args],
            stdout=self._log, stderr=subprocess.STDOUT, env=full_env, cwd=REPO)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 5.0) -> str:
        return wait_until(lambda: text in self.log() and self.log(), timeout,  # type: ignore
                          f"log line containing {text!r}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

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


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)
