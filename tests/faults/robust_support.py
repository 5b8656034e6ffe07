"""Shared parts of the robustness suites (test_robustness.py, test_config_walk.py).

* `dumps`: TOML for any value a hostile configuration can hold (NUL and other
  control characters, NaN, infinities, tables, datetimes), which the harness's
  writer does not produce.
* `HostileFiles` and `hostile_values`: the battery every configuration key is
  walked with, generated from the key's default (so a key added to the
  schema later is walked too).
* `Fleet`: several real daemons at once, each with its own directory,
  notify socket and runtime directory (a walk of ~100 starts must not take
  ~100 times a start).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from gtp5g_operator.config.parse import keys, sections
from testbed.harness import REPO, DaemonProcess, NotifySocket, wait_until
from testbed.toml_write import toml_value

Sections = Dict[str, Dict[str, Any]]

# --- TOML ------------------------------------------------------------------------------------


def dumps(sections: Mapping[str, Mapping[str, Any]]) -> str:
    return "".join(f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in items.items())
                   + "\n" for name, items in sections.items())


def with_value(base: Sections, section: str, key: str, value: Any) -> Sections:
    sections = {name: dict(items) for name, items in base.items()}
    sections.setdefault(section, {})[key] = value
    return sections


# --- the schema, walked --------------------------------------------------------------------------


def schema_keys() -> List[Tuple[str, str, Any]]:
    """(section, key, default) for every key the configuration schema knows."""
    found = []
    for section, cls in sections().items():
        for key, f in keys(cls).items():
            found.append((section, key, f.default))
    return found


# --- hostile values ----------------------------------------------------------------------

TRACEFS_TRACE = "/sys/kernel/tracing/trace"  # tracefs's non-pipe file: read-only here


class HostileFiles:
    """Files of every kind a path setting can name, under `root` (and only there:
    a key the daemon writes to, like metrics.textfile, may replace them, so
    nothing outside the test's directory is ever named).  `reset()` re-creates
    them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.reset()

    def path(self, name: str) -> str:
        return str(self.root / name)

    def reset(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        r = self.root
        os.mkfifo(r / "fifo")
        (r / "plain").write_text("neither a key nor a configuration\n")
        (r / "empty").write_text("")
        (r / "dir").mkdir()
        if os.geteuid() == 0:  # device nodes of our own, not /dev's
            os.mknod(r / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
            os.mknod(r / "zero", 0o666 | stat.S_IFCHR, os.makedev(1, 5))
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(r / "sock"))
        sock.close()
        os.symlink("loop", r / "loop")
        os.symlink("missing-target", r / "dangling")
        with open(r / "big", "wb") as big:  # 1.2 MB, sparse
            big.truncate(1_200_000)
        (r / "tracing").mkdir()
        (r / "tracing" / "trace_pipe").write_text("")  # a regular file named trace_pipe


def scalar_values() -> List[Tuple[str, Any]]:
    """Every TOML type, and the numbers that break naive range checks."""
    return [
        ("empty string", ""), ("word", "x"), ("0", 0), ("-1", -1), ("1.5", 1.5),
        ("true", True), ("false", False), ("[]", []), ("table", {"a": 1}),
        ("datetime", datetime.datetime(1979, 5, 27, 7, 32, tzinfo=datetime.timezone.utc)),
        ("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf), ("1e308", 1e308),
        ("1e-308", 1e-308), ("1e-9", 1e-9), ("int64 max", 2**63 - 1), ("int64 min", -(2**63)),
        ("2**32", 2**32), ("65536", 65536),
    ]


def string_values(fx: HostileFiles, busy_port: int) -> List[Tuple[str, Any]]:
    """Strings: hostile text, every kind of file, broken URLs and listen addresses.
    Host names are IP literals, localhost or names that cannot be looked up (no
    query may leave this machine)."""
    ip = "127.0.0.1"
    values: List[Tuple[str, Any]] = [
        ("NUL", "a\0b"), ("newline", "a\nb"), ("ANSI escape", "\x1b[31mred"), ("DEL", "x\x7f"),
        ("5000 chars", "x" * 5000), ("non-ASCII", "nr-gnb\u00e9"),
        ("RTL override", "\u202enr-gnb"), ("blanks", "   "), ("format directives", "%s%n{0}"),
        ("FIFO", fx.path("fifo")), ("regular file", fx.path("plain")),
        ("empty file", fx.path("empty")), ("directory", fx.path("dir")),
        ("socket", fx.path("sock")), ("symlink loop", fx.path("loop")),
        ("dangling symlink", fx.path("dangling")), ("nonexistent", fx.path("missing/x")),
        ("parent is a file", fx.path("plain/x")), ("1.2 MB file", fx.path("big")),
        ("regular trace_pipe", fx.path("tracing/trace_pipe")), ("relative path", "relative/x"),
        ("dot dot", fx.path("dir/../plain")),
        ("url port 0", f"http://{ip}:0"), ("url port 65536", f"http://{ip}:65536"),
        ("url port 99999", f"http://{ip}:99999"), ("url port -1", f"http://{ip}:-1"),
        ("url port name", f"http://{ip}:http"), ("url userinfo", f"http://u:p@{ip}:1"),
        ("url query", f"http://{ip}:1/?a=b"), ("url fragment", f"http://{ip}:1/#x"),
        ("url no host", "http://:80"), ("url unclosed IPv6", "http://[::1:80"),
        ("url IPv6 zone", "http://[fe80::1%25lo]:1"), ("url space", f"http://{ip}:1/a b"),
        ("url CRLF", f"http://{ip}:1/a\r\nX-Injected: y"),
        ("url non-ASCII host", "http://nr-gnb\u00e9.example"),
        ("url 64-char label", "http://" + "a" * 64 + ":1"), ("url ftp", f"ftp://{ip}/"),
        ("url https port 1", f"https://{ip}:1"), ("url busy port", f"http://{ip}:{busy_port}"),
        ("url localhost port 1", "http://localhost:1"), ("url backslash", f"http://{ip}:1\\@x"),
        ("listen busy port", f"{ip}:{busy_port}"), ("listen port 0", f"{ip}:0"),
        ("listen 65536", f"{ip}:65536"), ("listen remote", "0.0.0.0:9"),
        ("listen host name", "localhost:9"), ("listen IPv6 unbracketed", "::1:9"),
    ]
    if os.geteuid() == 0:
        values += [("char device null", fx.path("null")), ("char device zero", fx.path("zero"))]
    if os.path.exists(TRACEFS_TRACE):
        values.append(("tracefs trace file", TRACEFS_TRACE))
    return values


def list_values(fx: HostileFiles, busy_port: int) -> List[Tuple[str, Any]]:
    singles = [(f"[{label}]", [value]) for label, value in
               scalar_values() + string_values(fx, busy_port)
               if not isinstance(value, (list, dict))]
    return [*singles, ("nested list", [[1]]), ("mixed list", ["nr-gnb", 1]),
            ("10000 items", ["nr-gnb"] * 10_000)]


def hostile_values(default: Any, fx: HostileFiles, busy_port: int) -> List[Tuple[str, Any]]:
    """The battery for a key with this default: every type for every key, plus
    strings for string keys and lists of everything for list keys."""
    values = scalar_values()
    if isinstance(default, str):
        values += string_values(fx, busy_port)
    if isinstance(default, tuple):
        values += list_values(fx, busy_port)
    return values


# --- many daemons at once ----------------------------------------------------------------


@dataclasses.dataclass
class Launched:
    label: str
    directory: Path
    config: Path
    notify: NotifySocket
    daemon: DaemonProcess

    def ready(self) -> bool:
        return any(m.get("READY") == "1" for m in self.notify.all())

    def log(self) -> str:
        return self.daemon.log()


class Fleet:
    """Real daemons started side by side, each in root/N/ (short paths: a unix
    socket's path is limited to 108 bytes)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.launched: List[Launched] = []

    def _dir(self) -> Path:
        d = self.root / str(len(self.launched))
        d.mkdir(parents=True)
        return d

    def launch(self, label: str, config_text: Optional[str] = None,
               env: Optional[Dict[str, str]] = None,
               config_path: Optional[Path] = None) -> Launched:
        """A daemon on `config_text` (written into its directory) or on `config_path`."""
        d = self._dir()
        config = config_path or d / "c.toml"
        if config_path is None:
            config.write_text(config_text or "")
            config.chmod(0o600)
        notify = NotifySocket(d / "n.sock")
        daemon = DaemonProcess(config, notify, d / "daemon.log", env)
        item = Launched(label, d, config, notify, daemon)
        self.launched.append(item)
        return item

    def close(self) -> None:
        for item in self.launched:
            item.daemon.stop()
            item.notify.close()


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def check_config(config: Path, timeout: float = 10.0) -> subprocess.Popen[str]:
    """`gtp5g-operator check-config` started (the caller waits)."""
    return subprocess.Popen(
        [sys.executable, "-m", "gtp5g_operator", "check-config", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)})


def error_lines(log: str) -> List[str]:
    return [line for line in log.splitlines() if " ERROR " in line]


class LogTail:
    """What a daemon's log gained since the last call (the log is not re-read)."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 (closed in close())

    def new(self) -> str:
        return self._f.read().decode("utf-8", "replace")

    def close(self) -> None:
        self._f.close()


def wait_ready_count(notify: NotifySocket, count: int, timeout: float = 10.0) -> None:
    """Until `count` READY=1 messages have arrived (one per start and reload)."""
    deadline = time.monotonic() + timeout
    while sum(1 for m in notify.all() if m.get("READY") == "1") < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for READY=1 #{count}")
        time.sleep(0.002)


def ready_count(notify: NotifySocket) -> int:
    return sum(1 for m in notify.all() if m.get("READY") == "1")


def busy_tcp_port() -> socket.socket:
    """A listening TCP socket on loopback that never accepts: its port is in use."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


def free_tcp_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_gone(path: Path, timeout: float = 5.0) -> None:
    wait_until(lambda: not path.exists(), timeout, f"{path} to be removed")


def open_writer_when_read(path: Path, timeout: float = 10.0) -> int:
    """A blocking write fd on the FIFO at `path` once a reader (the daemon) has it
    open; never blocks the test for ever like a plain O_WRONLY open would."""
    def try_open() -> Optional[int]:
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet (ENOENT: not there yet)
            return None
    fd: int = wait_until(try_open, timeout, f"the daemon to open {path} again")
    os.set_blocking(fd, True)
    return fd


def write_all(fd: int, data: str | bytes) -> None:
    view = memoryview(data.encode() if isinstance(data, str) else data)
    while view:
        view = view[os.write(fd, view):]
