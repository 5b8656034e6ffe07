"""Benchmark section `unit_memory`: the daemon and its endpoint process together,
as the unit's MemoryMax= sees them.

    python3 -m bench.run --only unit_memory      (or: python3 -m bench.memory)

Both run in one memory cgroup made for the measurement (cgroup v2's
memory.current, or v1's memory.usage_in_bytes where the memory controller is
still on v1), with `metrics.listen` set: after start; after tracking one
process with 1,000 threads and a flood of 100,000 distinct non-matching task
IDs, with /metrics and /health served 50 times each; and while 300 clients
trickle their requests a byte at a time (the endpoint's worst case).  Per
process: RSS and its anonymous part (/proc/PID/smaps_rollup); the endpoint's
threads and open fds.  The cgroup's figure includes the page cache it was
charged with: files this host had already read are charged elsewhere, so a
cold host (the service started at boot) can be charged a few MB more.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import tempfile
import termios
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from testbed.fake_gthulhu import FakeGthulhu, make_keypair
from testbed.harness import (
    DaemonProcess,
    GnbProcess,
    NotifySocket,
    scrape_endpoint,
    wait_until,
    write_config,
)
from testbed.tracelines import gtp5g_line

if TYPE_CHECKING:
    from bench.run import World

NAME = "unit_memory"
USES_HOST = True  # a memory cgroup of its own: bench/run.py holds the host lock
TARGET_MB = 48.0  # daemon + endpoint, the unit's memory.current (MemoryHigh=48M)
TRICKLERS = 300
TRICKLE_SECONDS = 8.0  # beyond the endpoint's 5 s deadline per exchange
CGROUP_ROOT = Path("/sys/fs/cgroup")
Row = Callable[[str, str, str, Optional[bool]], None]


# --- the cgroup ------------------------------------------------------------------------------


class MemoryGroup:
    """A memory cgroup of our own (v2 where the memory controller is there, else v1)."""

    def __init__(self, name: str) -> None:
        controllers = CGROUP_ROOT / "cgroup.controllers"
        self.v2 = controllers.exists() and "memory" in controllers.read_text().split()
        self.path = (CGROUP_ROOT if self.v2 else CGROUP_ROOT / "memory") / name
        self.path.mkdir()

    def usage_mb(self) -> float:
        name = "memory.current" if self.v2 else "memory.usage_in_bytes"
        return int((self.path / name).read_text()) / 2**20

    def peak_mb(self) -> Optional[float]:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        path = self.path / name
        return int(path.read_text()) / 2**20 if path.exists() else None

    def split_mb(self) -> Dict[str, float]:
        """anon and file (page cache) charged to the group."""
        stat = dict(line.split() for line in (self.path / "memory.stat").read_text().splitlines())
        anon, file = ("anon", "file") if self.v2 else ("rss", "cache")
        return {"anon": int(stat[anon]) / 2**20, "file": int(stat[file]) / 2**20}

    def prefix(self) -> List[str]:
        """A command prefix that joins the group, then execs the rest (same PID)."""
        return ["sh", "-c", f'echo $$ > {self.path}/cgroup.procs && exec "$@"', "join"]

    def remove(self) -> None:
        wait_until(lambda: not (self.path / "cgroup.procs").read_text().strip(), 10,
                   "the cgroup to empty")
        self.path.rmdir()


def available() -> Optional[str]:
    """None when a memory cgroup can be made here, else why not."""
    if os.geteuid() != 0:
        return "needs root (a cgroup of its own)"
    controllers = CGROUP_ROOT / "cgroup.controllers"
    if not (controllers.exists() and "memory" in controllers.read_text().split()) and \
            not (CGROUP_ROOT / "memory").is_dir():
        return "no memory cgroup controller"
    return None


# --- the processes ------------------------------------------------------------------------------


def smaps_mb(pid: int) -> Dict[str, float]:
    """RSS and its anonymous part, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0]) / 1024
    return {"rss": fields["Rss"], "anon": fields["Anonymous"]}


def status_int(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def endpoint_of(daemon: DaemonProcess) -> int:
    def child() -> int:
        found = Path(f"/proc/{daemon.pid}/task/{daemon.pid}/children").read_text().split()
        return int(found[0]) if found else 0
    return int(wait_until(child, 10, "the endpoint process"))


def health(port: int) -> Tuple[int, float]:
    """(HTTP status, seconds) of one GET /health."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1]), time.monotonic() - t0


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[: 1 << 20]):]


def flood(fifo: Path, gnb: GnbProcess, api: FakeGthulhu) -> None:
    """1,000 tracked threads, then 100,000 distinct IDs nobody matches, all read."""
    fd = os.open(fifo, os.O_WRONLY)
    try:
        write_all(fd, "".join(gtp5g_line("nr-gnb", t, gnb.pid) for t in gnb.tids).encode())
        api.wait_post(lambda s: len(s) == len(gnb.tids), timeout=60)
        # below PID_MAX_LIMIT (4194304): IDs a task may have, each looked up in /proc
        write_all(fd, "".join(gtp5g_line("nr-ue", 4_000_000 + i, 4_000_000)
                              for i in range(100_000)).encode())
        wait_until(lambda: unread(fd) == 0, 60, "the flood read")
    finally:
        os.close(fd)


def unread(fd: int) -> int:
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, sys.byteorder)


def trickle(port: int, endpoint: int, group: MemoryGroup) -> Dict[str, Any]:
    """TRICKLERS clients sending a byte each per 0.2 s; /health probed meanwhile."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10)
             for _ in range(TRICKLERS)]
    peak = {"endpoint_rss_mb": 0.0, "threads": 0, "fds": 0, "group_mb": 0.0}
    probes: List[float] = []
    end = time.monotonic() + TRICKLE_SECONDS
    while time.monotonic() < end:
        for sock in socks:
            with contextlib.suppress(OSError):  # dropped by the endpoint: as it should
                sock.send(b"a")
        probes.append(health(port)[1])
        peak["endpoint_rss_mb"] = max(peak["endpoint_rss_mb"], smaps_mb(endpoint)["rss"])
        peak["threads"] = max(peak["threads"], status_int(endpoint, "Threads"))
        peak["fds"] = max(peak["fds"], len(os.listdir(f"/proc/{endpoint}/fd")))
        peak["group_mb"] = max(peak["group_mb"], group.usage_mb())
        time.sleep(0.2)  # the tricklers' pace
    for sock in socks:
        sock.close()
    return {**peak, "health_max_ms": max(probes) * 1e3, "probes": len(probes)}


# --- the section ------------------------------------------------------------------------------


def measure(tmp: Path, api: FakeGthulhu, public_key: Path, python: str) -> Dict[str, Any]:
    group = MemoryGroup(f"gtp5g-bench-memory-{os.getpid()}")
    fifo = tmp / "unit_memory_pipe"
    os.mkfifo(fifo)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = write_config(tmp / "unit_memory.toml", trace={"pipe": str(fifo)},
                          api={"url": api.url, "public_key": str(public_key), "timeout": 2.0},
                          metrics={"listen": f"127.0.0.1:{port}"}, log={"level": "warning"})
    notify = NotifySocket(tmp / "unit_memory.sock")
    d = DaemonProcess(config, notify, tmp / "unit_memory.log", python=python,
                      prefix=group.prefix())
    gnb = GnbProcess("nr-gnb", (), workers=999)
    out: Dict[str, Any] = {"python": python, "cgroup": "v2" if group.v2 else "v1"}
    try:
        notify.wait("READY", "1", timeout=20)
        api.wait_post(lambda s: True, timeout=10)
        endpoint = endpoint_of(d)
        scrape_endpoint(port, 5)
        out["start"] = snapshot(d.pid, endpoint, group)
        flood(fifo, gnb, api)
        scrape_endpoint(port, 50)
        out["after_flood"] = snapshot(d.pid, endpoint, group)
        out["trickling"] = trickle(port, endpoint, group)
        out["after_trickling"] = snapshot(d.pid, endpoint, group)
        out["peak_mb"] = group.peak_mb()
    finally:
        d.stop()
        gnb.stop()
        notify.close()
        group.remove()
    return out


def snapshot(daemon: int, endpoint: int, group: MemoryGroup) -> Dict[str, Any]:
    return {"daemon": smaps_mb(daemon), "endpoint": smaps_mb(endpoint),
            "endpoint_threads": status_int(endpoint, "Threads"),
            "group_mb": group.usage_mb(), "group_split_mb": group.split_mb()}


def run(world: World, python: str) -> Dict[str, Any]:
    why = available()
    if why:
        return {"skipped": why}
    return measure(world.tmp, world.api, world.public, python)


def rows(m: Dict[str, Any], row: Row) -> None:
    what = "daemon + endpoint, one memory cgroup"
    if "skipped" in m:
        row(what, f"skipped: {m['skipped']}", f"≤ {TARGET_MB:.0f} MB", None)
        return
    s, f, t = m["start"], m["after_flood"], m["trickling"]
    worst = max(f["group_mb"], t["group_mb"], m["after_trickling"]["group_mb"],
                m["peak_mb"] or 0.0)
    peak = "" if m["peak_mb"] is None else f"; peak {m['peak_mb']:.1f} MB"
    row(f"{what} ({m['cgroup']}): after start / after flood, serving / 300 trickling clients",
        f"{s['group_mb']:.1f} / {f['group_mb']:.1f} / {t['group_mb']:.1f} MB{peak} (after the "
        f"flood: anon {f['group_split_mb']['anon']:.1f}, page cache "
        f"{f['group_split_mb']['file']:.1f})", f"≤ {TARGET_MB:.0f} MB", worst <= TARGET_MB)
    row("after the flood: daemon RSS (anon) / endpoint RSS (anon)",
        f"{f['daemon']['rss']:.1f} ({f['daemon']['anon']:.1f}) / {f['endpoint']['rss']:.1f} "
        f"({f['endpoint']['anon']:.1f}) MB", "(report)", None)
    row(f"endpoint under {TRICKLERS} trickling clients",
        f"RSS {f['endpoint']['rss']:.1f} → {t['endpoint_rss_mb']:.1f} MB, {t['threads']} "
        f"thread(s), {t['fds']} fds; /health answered in ≤ {t['health_max_ms']:.0f} ms",
        "1 thread, /health ≤ 1 s", t["threads"] == 1 and t["health_max_ms"] <= 1000)


def main() -> int:
    """Standalone: measure with this checkout's daemon and print the JSON."""
    tmp = Path(tempfile.mkdtemp(prefix="gtp5g-bench-memory-"))
    private, public = make_keypair(tmp)
    api = FakeGthulhu(private.read_bytes()).start()
    try:
        why = available()
        result = {"skipped": why} if why else measure(
            tmp, api, public, sys.argv[1] if len(sys.argv) > 1 else sys.executable)
    finally:
        api.stop()
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
