from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import ssl
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest

from testbed.fake_gthulhu import FakeGthulhu, make_keypair
from testbed.harness import (
    DaemonProcess,
    GnbProcess,
    NotifySocket,
    SchedulingLag,
    TraceWriter,
    wait_until,
    write_config,
)
from testbed.host_lock import HostLock
from testbed.tls import make_ca_and_server_cert

SAMPLES = Path(__file__).resolve().parent / "data" / "trace-samples"  # copied from shared/reference


HOST_MARKERS = ("kernel", "system")  # tests that share the host's ring buffer or cgroups
_host_lock = HostLock()


def pytest_runtest_setup(item: pytest.Item) -> None:
    """The first test that uses the host takes the machine-wide lock for the rest of
    the session (testbed/host_lock.py): two such runs never overlap."""
    if any(item.get_closest_marker(m) for m in HOST_MARKERS):
        _host_lock.acquire(f"pytest {item.nodeid}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    _host_lock.release()


@pytest.fixture(autouse=True)
def _no_remote_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process code may only talk to loopback: an accidental real call fails loudly."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
                raise AssertionError(f"test tried to reach {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    private, public = make_keypair(d)
    other = tmp_path_factory.mktemp("other-keys")
    _, wrong_public = make_keypair(other)
    return {"private": private, "public": public, "wrong_public": wrong_public}


@pytest.fixture
def api(keys: Dict[str, Path]) -> Iterator[FakeGthulhu]:
    server = FakeGthulhu(keys["private"].read_bytes()).start()
    yield server
    server.stop()


@pytest.fixture
def tls_api(keys: Dict[str, Path], tmp_path: Path) -> Iterator[Tuple[FakeGthulhu, Path]]:
    """A v0 API over https, with a certificate of a self-made CA (returned too)."""
    paths = make_ca_and_server_cert(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(paths["cert"], paths["key"])
    server = FakeGthulhu(keys["private"].read_bytes(), tls=ctx).start()
    yield server, paths["ca"]
    server.stop()


@pytest.fixture
def lag() -> Iterator[SchedulingLag]:
    """How late this machine woke a sleeper during the test (add `.worst` to timing
    bounds: they adapt to a loaded host, and a loop that blocks still fails them)."""
    with SchedulingLag() as measured:
        yield measured


@pytest.fixture
def trace_pipe(tmp_path: Path) -> Path:
    """A fake debugfs: tmp/tracing/trace_pipe is a FIFO."""
    tracing = tmp_path / "debugfs" / "tracing"
    tracing.mkdir(parents=True)
    fifo = tracing / "trace_pipe"
    os.mkfifo(fifo)
    return fifo


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A directory every user may search (pytest's own tmp_path is root's, 0700): for
    what another identity (nobody, the service's user) must reach."""
    base = Path(tempfile.mkdtemp(prefix="gtp5g-public-tmp-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


@pytest.fixture
def gnb() -> Iterator[Callable[..., GnbProcess]]:
    started: List[GnbProcess] = []

    def start(*args: Any, **kwargs: Any) -> GnbProcess:
        proc = GnbProcess(*args, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def base_config(trace_pipe: Path, api_url: str, public_key: Path,
                **overrides: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    sections: Dict[str, Dict[str, Any]] = {
        "trace": {"pipe": str(trace_pipe)},
        "api": {"url": api_url, "public_key": str(public_key), "timeout": 1.0},
        "strategy": {"resync_interval": 10.0, "liveness_interval": 0.5},
        "log": {"level": "debug"},
    }
    for section, items in overrides.items():
        sections.setdefault(section, {}).update(items)
    return sections


class Env:
    """One test's world: config file, FIFO, API, notify socket, daemon, writer."""

    def __init__(self, tmp: Path, trace_pipe: Path, api: FakeGthulhu, keys: Dict[str, Path],
                 notify: NotifySocket) -> None:
        self.tmp, self.trace_pipe, self.api, self.keys, self.notify = (
            tmp, trace_pipe, api, keys, notify)
        self.config_path = tmp / "config.toml"
        self.writer = TraceWriter(trace_pipe)
        self.daemons: List[DaemonProcess] = []

    def write_config(self, **overrides: Dict[str, Any]) -> Path:
        return write_config(self.config_path, **base_config(
            self.trace_pipe, self.api.url, self.keys["public"], **overrides))

    def start(self, env: Dict[str, str] | None = None, ready: bool = True,
              **overrides: Dict[str, Any]) -> DaemonProcess:
        if overrides or not self.config_path.exists():
            self.write_config(**overrides)
        daemon = DaemonProcess(self.config_path, self.notify,
                               self.tmp / f"daemon{len(self.daemons)}.log", env)
        self.daemons.append(daemon)
        if ready:
            try:
                self.notify.wait("READY", "1", timeout=30)
            except AssertionError:
                daemon.stop()
                raise AssertionError(f"daemon not READY (exit {daemon.proc.returncode}):\n"
                                     + daemon.log()) from None
        return daemon

    def wait_pushed(self, count: int) -> None:
        """Until state.json says the last push succeeded with `count` entries.  A fake
        server has the request before the daemon has read the answer and logged the
        push: on a loaded host a log position taken then still precedes those lines."""
        state = self.tmp / "run" / "state.json"

        def done() -> bool:
            try:
                last = json.loads(state.read_text())["last_push"]
            except (OSError, ValueError, KeyError, TypeError):
                return False
            return bool(last) and last["ok"] is True and last["count"] == count

        wait_until(done, 20, f"state.json to say a push of {count} entries succeeded")

    def close(self) -> None:
        self.writer.close()
        for d in self.daemons:
            d.stop()


@pytest.fixture
def env(tmp_path: Path, trace_pipe: Path, api: FakeGthulhu, keys: Dict[str, Path],
        notify: NotifySocket) -> Iterator[Env]:
    e = Env(tmp_path, trace_pipe, api, keys, notify)
    yield e
    e.close()
