"""The installed unit's memory, as systemd accounts it: daemon and endpoint process
together, after a flood and with the endpoint serving, stay within 48 MB.

The shipped unit (MemoryHigh=48M, MemoryMax=64M) runs in a container that
boots systemd (tests/system/container.py), from the .deb, with
`metrics.listen` set: one gNB-like process with 1,000 threads tracked, a
flood of 100,000 distinct task IDs no process matches, /metrics and /health
served 50 times each, then 300 clients trickling their requests a byte at a
time for longer than the endpoint's deadline.  The figure is systemd's
MemoryCurrent= of the unit (memory.current on cgroup v2,
memory.usage_in_bytes where the memory controller is still on v1).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from testbed.fake_gthulhu import FakeGthulhu, make_keypair
from testbed.harness import REPO, TraceWriter, scrape_endpoint, wait_until
from testbed.tracelines import gtp5g_line
from tests.system.conftest import FINDINGS
from tests.system.container import Container

pytestmark = pytest.mark.system

UNIT = "gtp5g-operator.service"
FIFO = "/srv/debugfs/tracing/trace_pipe"
LIMIT_MB = 48.0
THREADS = 1000
FLOOD = 100_000
TRICKLERS = 300
TRICKLE_SECONDS = 8.0  # beyond the endpoint's 5 s deadline per exchange


@pytest.fixture(scope="module")
def keys(suite: str, tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Path]:
    return make_keypair(tmp_path_factory.mktemp(f"keys-{suite}"))


@pytest.fixture(scope="module")
def api(keys: Tuple[Path, Path]) -> Iterator[FakeGthulhu]:
    server = FakeGthulhu(keys[0].read_bytes()).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def box(suite: str, deb: Path) -> Iterator[Container]:
    """The package installed and enabled with metrics.listen, nothing else done."""
    c = Container(name="gtp5g-memory", suite=suite)
    try:
        c.boot()
        shutil.copy(deb, c.path("/root/") / deb.name)
        shutil.copy(REPO / "testbed" / "gnb_sim.py", c.path("/root/gnb_sim.py"))
        c.run("apt-get update -q", timeout=600)
        c.run(f"apt-get install -y -q /root/{deb.name} python3-prometheus-client", timeout=900)
        yield c
    finally:
        c.stop()


def sh(box: Container, command: str) -> str:
    return box.run(command).stdout.strip()


def memory_current_mb(box: Container) -> float:
    value = sh(box, f"systemctl show -p MemoryCurrent --value {UNIT}")
    if not value.isdigit() or int(value) >= 2**63:
        pytest.skip(f"systemd reports no MemoryCurrent for the unit here ({value!r}): "
                    "no memory accounting in this container")
    return int(value) / 2**20


def health_status(port: int) -> int:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            return int(sock.recv(64).split(b" ", 2)[1])
    except (OSError, IndexError, ValueError):
        return 0


def trickle(port: int, box: Container) -> float:
    """TRICKLERS clients send a byte each per 0.2 s; the highest MemoryCurrent seen."""
    socks: List[socket.socket] = [socket.create_connection(("127.0.0.1", port), timeout=10)
                                  for _ in range(TRICKLERS)]
    highest = 0.0
    try:
        end = time.monotonic() + TRICKLE_SECONDS
        while time.monotonic() < end:
            for sock in socks:
                with contextlib.suppress(OSError):  # dropped by the endpoint, as it should
                    sock.send(b"a")
            assert health_status(port) in (200, 503), "/health answers meanwhile"
            highest = max(highest, memory_current_mb(box))
            time.sleep(0.2)  # the tricklers' pace
    finally:
        for sock in socks:
            sock.close()
    return highest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_memory_current_of_daemon_and_endpoint_after_a_flood_while_serving(
        box: Container, api: FakeGthulhu, keys: Tuple[Path, Path], suite: str) -> None:
    port = free_port()  # the container shares the host's network
    shutil.copy(keys[1], box.path("/etc/gtp5g-operator/jwt_public_key.pem"))
    box.path("/etc/gtp5g-operator/config.toml").write_text(
        f'[trace]\npipe = "{FIFO}"\nallow_pid_namespace = true\n'
        f'[api]\nurl = "{api.url}"\ntimeout = 2.0\n'
        f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    box.run(f"mkdir -p {os.path.dirname(FIFO)} && mkfifo -m 0600 {FIFO}")
    box.run(f"systemctl enable --now {UNIT}")
    wait_until(lambda: health_status(port) in (200, 503), 20, "/health of the unit")
    started = memory_current_mb(box)
    gnb = box.popen(f"exec python3 /root/gnb_sim.py --name nr-gnb --workers {THREADS - 1}")
    try:
        assert gnb.stdout is not None
        info = json.loads(gnb.stdout.readline())
        tids = [info["pid"], *info["threads"].values()]
        writer = TraceWriter(box.path(FIFO))
        writer.write("".join(gtp5g_line("nr-gnb", t, info["pid"]) for t in tids))
        api.wait_post(lambda s: len(s) == THREADS, timeout=60)
        writer.write("".join(gtp5g_line("nr-ue", 3_000_000 + i, 3_000_000)
                             for i in range(FLOOD)))
        writer.close()
        wait_until(lambda: lines_read(box) >= THREADS + FLOOD, 60, "the flood read")
        scrape_endpoint(port, 50)
        after_flood = memory_current_mb(box)
        trickling = trickle(port, box)
    finally:
        gnb.kill()
        gnb.wait()
    main_pid = sh(box, f"systemctl show -p MainPID --value {UNIT}")
    children = sh(box, f"cat /proc/{main_pid}/task/{main_pid}/children").split()
    rss = {who: sh(box, f"grep VmRSS /proc/{pid}/status").split()[1]
           for who, pid in (("daemon", main_pid), ("endpoint", children[0]))}
    FINDINGS.setdefault(suite, []).append(
        f"unit MemoryCurrent: {started:.1f} MB after start, {after_flood:.1f} MB after "
        f"{THREADS} tracked threads + {FLOOD:,} IDs with the endpoint serving, "
        f"{trickling:.1f} MB at most with {TRICKLERS} trickling clients (RSS kB: {rss})")
    assert len(children) == 1, "the endpoint process is the unit's, in its cgroup"
    assert after_flood <= LIMIT_MB and trickling <= LIMIT_MB, (started, after_flood, trickling)


def lines_read(box: Container) -> int:
    """Trace lines the daemon has read (its state.json, in the container's /run)."""
    out = box.run("cat /run/gtp5g-operator/state.json", check=False)
    try:
        return int(json.loads(out.stdout)["trace"]["lines"]) if out.returncode == 0 else 0
    except (ValueError, KeyError, TypeError):
        return 0
