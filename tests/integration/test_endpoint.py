"""The /metrics and /health endpoint of the real daemon (a subprocess): ready at
READY=1, bounded whatever clients do, restarted with backoff, moved by a
reload, and without any privilege."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest

from gtp5g_operator.service.endpoint import child_command, child_env
from gtp5g_operator.service.endpoint_server import (
    CPU_BURST,
    CPU_SHARE,
    DEADLINE,
    MAX_CONNECTIONS,
)
from testbed.fake_gthulhu import FakeGthulhu
from testbed.harness import (
    REPO,
    SYSTEM_PYTHON,
    DaemonProcess,
    SchedulingLag,
    public_copy,
    wait_until,
    write_config,
)
from tests.conftest import Env, base_config

pytest.importorskip("prometheus_client", reason="metrics need prometheus_client")

Answer = Tuple[int, Dict[str, str], bytes]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def exchange(port: int, request: bytes, host: str = "127.0.0.1",
             timeout: float = 5.0) -> Answer:
    """(status, header fields, body) for a raw request; raises OSError (e.g. refused)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), fields, body


def get(port: int, path: str = "/health", method: str = "GET", host: str = "127.0.0.1",
        timeout: float = 5.0) -> Answer:
    return exchange(port, f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), host, timeout)


def status_or_zero(port: int, host: str = "127.0.0.1") -> int:
    """The /health status, 0 when nobody listens."""
    try:
        return get(port, host=host, timeout=2)[0]
    except OSError:
        return 0


def endpoint_pid(daemon: DaemonProcess) -> int:
    children = Path(f"/proc/{daemon.pid}/task/{daemon.pid}/children").read_text().split()
    assert len(children) == 1, f"the daemon's children: {children}"
    return int(children[0])


def wait_endpoint(daemon: DaemonProcess, other_than: int = 0) -> int:
    """The endpoint process's PID once it serves (another one than `other_than`)."""
    def serving() -> int:
        try:
            pid = endpoint_pid(daemon)
        except (AssertionError, OSError):
            return 0
        return pid if pid != other_than and in_its_loop(pid) else 0
    return int(wait_until(serving, 15, "the endpoint process"))


def in_its_loop(pid: int) -> bool:
    """The endpoint process has made its epoll instance: it is past its start-up.
    (Its command line first: between fork and exec the child holds the daemon's.)"""
    try:
        if b"gtp5g_operator.service.endpoint_server" not in Path(
                f"/proc/{pid}/cmdline").read_bytes():
            return False
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[eventpoll]"
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def proc_status(pid: int) -> Dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def rss_kb(pid: int) -> int:
    return int(proc_status(pid)["VmRSS"].split()[0])


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


# --- ready at READY=1 ----------------------------------------------------------------------


def test_a_probe_right_after_ready_connects(env: Env) -> None:
    """The daemon binds before READY=1: the first probe waits for the endpoint
    process in the backlog instead of being refused."""
    port = free_port()
    env.start(metrics={"listen": f"127.0.0.1:{port}"})  # returns as READY=1 arrives
    code, fields, body = get(port)  # ConnectionRefusedError here was the bug
    assert code in (200, 503) and json.loads(body)["status"], body
    assert fields["Content-Type"] == "application/json"


def test_the_socket_outlives_a_stopped_or_killed_endpoint_process(env: Env) -> None:
    port = free_port()
    d = env.start(metrics={"listen": f"127.0.0.1:{port}"})
    child = wait_endpoint(d)
    os.kill(child, signal.SIGSTOP)
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)  # queued: connects
        sock.sendall(b"GET /health HTTP/1.1\r\n\r\n")
    finally:
        os.kill(child, signal.SIGCONT)
    sock.settimeout(5)
    assert sock.recv(100).startswith(b"HTTP/1.1 "), "answered once it runs again"
    sock.close()
    os.kill(child, signal.SIGKILL)
    code = get(port, timeout=15)[0]  # sent while no endpoint process runs
    assert code in (200, 503)
    assert wait_endpoint(d, other_than=child) != child


# --- what it answers ----------------------------------------------------------------------


def test_get_head_and_other_methods(env: Env) -> None:
    port = free_port()
    env.start(metrics={"listen": f"127.0.0.1:{port}"})
    wait_until(lambda: status_or_zero(port) == 200, 10, "a healthy /health")
    code, fields, body = get(port, "/health")
    assert code == 200 and json.loads(body)["status"] == "ok"
    assert fields["Connection"] == "close" and fields["Cache-Control"] == "no-store"
    assert fields["Date"].endswith(" GMT") and fields["Server"] == "gtp5g-operator"
    head = get(port, "/health", "HEAD")
    assert head[0] == 200 and head[2] == b""
    assert abs(int(head[1]["Content-Length"]) - int(fields["Content-Length"])) <= 2  # ages
    code, fields, body = get(port, "/metrics?x=1")
    assert code == 200 and fields["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"gtp5g_operator_build_info" in body and int(fields["Content-Length"]) == len(body)
    assert get(port, "/metrics", "HEAD")[2] == b""
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"):
        assert get(port, "/health", method)[0] == 404, method
    assert get(port, "/")[0] == 404 and get(port, "/health/x")[0] == 404
    for raw, code in ((b"GET /health\r\n\r\n", 400), (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
                      (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", 400),
                      (b"GET /health HTTP/1.1\r\n" + b"X-Big: y\r\n" * 1000, 431)):
        assert exchange(port, raw)[0] == code, raw[:30]
    big_body = b"POST /health HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100_000
    assert exchange(port, big_body)[0] == 404  # the answer is not lost to a reset


# --- bounded ----------------------------------------------------------------------------------


def trickle(socks: List[socket.socket], rounds: int, gap: float,
            probe: Callable[[], None]) -> List[float]:
    """Send one byte on every open socket per round; probe /health each round.
    Returns each socket's lifetime (s) until the server closed it (inf: never)."""
    born = time.monotonic()
    ended = [float("inf")] * len(socks)
    for _ in range(rounds):
        for i, sock in enumerate(socks):
            if ended[i] != float("inf"):
                continue
            try:
                if closed_by_peer(sock):
                    raise ConnectionResetError
                sock.send(b"a")
            except OSError:
                ended[i] = time.monotonic() - born
        probe()
        time.sleep(gap)  # the scenario's pace: a byte per client per round
    return ended


def test_300_trickling_clients_hold_no_more_than_the_cap_and_health_still_answers(
        env: Env) -> None:
    port = free_port()
    d = env.start(metrics={"listen": f"127.0.0.1:{port}"})
    wait_until(lambda: status_or_zero(port) in (200, 503), 10, "the endpoint")
    child = wait_endpoint(d)
    rss_before, fds_before = rss_kb(child), open_fds(child)
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(300)]
    for sock in socks:
        sock.sendall(b"GET /health HTTP/1.1\r\nX-Slow: ")
    took: List[float] = []
    peak = {"fds": 0, "rss": 0, "threads": 0}

    def probe() -> None:
        t0 = time.monotonic()
        assert get(port, timeout=5)[0] in (200, 503)
        took.append(time.monotonic() - t0)
        peak["fds"] = max(peak["fds"], open_fds(child))
        peak["rss"] = max(peak["rss"], rss_kb(child))
        peak["threads"] = max(peak["threads"], int(proc_status(child)["Threads"]))

    lifetimes = trickle(socks, rounds=int((DEADLINE + 3) / 0.2), gap=0.2, probe=probe)
    for sock in socks:
        sock.close()
    assert max(took) < 2.0, f"/health took {max(took):.2f} s while 300 clients trickled"
    assert peak["threads"] == 1
    # listener, status pipes, epoll, runtime directory, stdio: at most a few beyond the cap
    assert peak["fds"] <= fds_before + MAX_CONNECTIONS + 1, peak
    # 64 heads of at most 8 KiB and their sockets: well under 4 MB (the old endpoint: a
    # thread and ~25 KB per client, unbounded)
    assert peak["rss"] - rss_before < 4096, (rss_before, peak)
    assert max(lifetimes) <= DEADLINE + 2.0, "each trickler is dropped by the deadline"
    assert endpoint_pid(d) == child, "the same process throughout"


def answers_held_by_the_kernel(port: int) -> List[str]:
    """The TCP sockets on local port `port` (the endpoint's side, orphans included)
    that still hold data for their client: /proc/net/tcp's state (hex) of each."""
    held = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            tx_queue = int(fields[4].split(":")[0], 16)
            if int(fields[1].rsplit(":", 1)[1], 16) == port and tx_queue:
                held.append(fields[3])
    return held


def test_a_client_that_never_reads_its_answer_leaves_nothing_in_the_kernel(env: Env) -> None:
    """A client that asks for /metrics with a receive window too small for it and
    never reads: the endpoint closes its connection at the deadline, and the kernel
    kept the unsent answer in an orphan socket (FIN_WAIT1) for as long as the client
    lived: 30 such clients a second left 600 of them (8 MB of socket buffers, which
    cgroup v2 charges to the unit) until they closed.  The listener's
    TCP_USER_TIMEOUT, inherited by every connection, makes the kernel end them."""
    port = free_port()
    env.start(metrics={"listen": f"127.0.0.1:{port}"})
    wait_until(lambda: status_or_zero(port) in (200, 503), 10, "the endpoint")
    assert len(get(port, "/metrics")[2]) > 4096, "more than such a client's window takes"
    clients = []
    try:
        for _ in range(3):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the kernel's minimum
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            clients.append(sock)
        wait_until(lambda: answers_held_by_the_kernel(port), 10, "the answers to be sent")
        wait_until(lambda: not answers_held_by_the_kernel(port), 2 * DEADLINE + 10,
                   "the kernel to give up the answers of clients that never read")
        assert get(port)[0] in (200, 503)
    finally:
        for sock in clients:
            sock.close()


def cpu_seconds_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_flood_of_requests_takes_no_more_than_its_share_of_a_cpu(env: Env) -> None:
    """The endpoint process shares the unit's CPUQuota= with the daemon: a local user
    requesting /health as fast as it can made it take most of that quota (the daemon
    read the trace 2-3x slower in a 50 % cgroup).  It rests past CPU_SHARE of one CPU;
    /health still answers."""
    port = free_port()
    d = env.start(metrics={"listen": f"127.0.0.1:{port}"})
    wait_until(lambda: status_or_zero(port) in (200, 503), 10, "the endpoint")
    child = wait_endpoint(d)
    stop = threading.Event()
    served = [0]

    def flood() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                get(port, timeout=5)
                served[0] += 1

    flooders = [threading.Thread(target=flood) for _ in range(4)]
    cpu_before, t0 = cpu_seconds_of(child), time.monotonic()
    for t in flooders:
        t.start()
    took = []
    try:
        while time.monotonic() - t0 < 3.0:
            p0 = time.monotonic()
            assert get(port, timeout=10)[0] in (200, 503)
            took.append(time.monotonic() - p0)
            time.sleep(0.2)
    finally:
        stop.set()
        for t in flooders:
            t.join()
    wall, cpu = time.monotonic() - t0, cpu_seconds_of(child) - cpu_before
    # a clock tick of slack per second on top of the share and the burst
    assert cpu <= CPU_SHARE * wall + CPU_BURST + 0.01 * wall + 0.02, (cpu, wall, served)
    assert max(took) < 5.0, took
    assert endpoint_pid(d) == child


# --- restarted with backoff ------------------------------------------------------------------


def test_a_dying_endpoint_process_is_restarted_with_backoff(env: Env) -> None:
    port = free_port()
    d = env.start(metrics={"listen": f"127.0.0.1:{port}"})
    child = wait_endpoint(d)
    gaps = []
    for _ in range(3):
        os.kill(child, signal.SIGKILL)
        killed_at = time.monotonic()
        child = wait_endpoint(d, other_than=child)
        gaps.append(time.monotonic() - killed_at)
    # Backoff from 1 s, doubling, each delay at least half its nominal value: the
    # third restart waits at least 2 s (4 s nominal).
    assert gaps[2] >= 2.0 and gaps[2] > gaps[0], gaps
    log = d.log()
    assert log.count("exited (killed by signal 9); retrying with backoff") == 3, log
    assert status_or_zero(port) in (200, 503) and "Traceback" not in log


def test_the_endpoint_process_ends_with_the_daemon(env: Env) -> None:
    port = free_port()
    d = env.start(metrics={"listen": f"127.0.0.1:{port}"})
    child = wait_endpoint(d)
    d.signal(signal.SIGKILL)  # no clean-up by the daemon: its pipe ends with it
    d.proc.wait()
    wait_until(lambda: not Path(f"/proc/{child}").exists()
               or proc_status(child)["State"].startswith("Z"), 10, "the endpoint to exit")
    assert status_or_zero(port) == 0


def test_signals_sent_to_the_whole_unit_are_the_daemons(env: Env) -> None:
    """systemd sends a stop (KillMode=control-group) and `systemctl kill -s SIG` to every
    process of the unit, the endpoint process too, which died of each: a restart and an
    ERROR line for a SIGHUP, SIGUSR1 or SIGUSR2, and at every stop an ERROR whenever
    its death was read before the daemon's SIGTERM (5 stops in 8)."""
    port = free_port()
    d = env.start(metrics={"listen": f"127.0.0.1:{port}"})
    child = wait_endpoint(d)
    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM):
        os.kill(child, sig)  # the order systemd takes them in is the cgroup's: child first
        if sig != signal.SIGTERM:
            d.signal(sig)
    d.wait_log("debug logging")  # the daemon took the last of them
    assert in_its_loop(child), "the endpoint process still serves"
    assert get(port)[0] in (200, 503)
    d.signal(signal.SIGTERM)
    assert d.proc.wait(10) == 0
    wait_until(lambda: not Path(f"/proc/{child}").exists()
               or proc_status(child)["State"].startswith("Z"), 10, "the endpoint to exit")
    assert " ERROR " not in d.log() and "exited (" not in d.log(), d.log()


# --- moved by a reload -----------------------------------------------------------------------


def reload(env: Env, d: DaemonProcess, **metrics: Any) -> None:
    mark = len(env.notify.all())
    env.write_config(metrics=metrics)
    d.signal(signal.SIGHUP)
    env.notify.wait("READY", "1", timeout=10, after=mark + 1)


def test_a_reload_moves_the_endpoint_binding_the_new_address_first(env: Env) -> None:
    a, b = free_port(), free_port()
    d = env.start(metrics={"listen": f"127.0.0.1:{a}"})
    wait_endpoint(d)
    reload(env, d, listen=f"127.0.0.1:{b}")
    assert get(b)[0] in (200, 503) and status_or_zero(a) == 0
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    c = busy.getsockname()[1]
    try:
        reload(env, d, listen=f"127.0.0.1:{c}")
        d.wait_log(f"cannot listen on 127.0.0.1:{c}: Address already in use; still serving "
                   f"on 127.0.0.1:{b}")
        assert get(b)[0] in (200, 503), "the old address serves until the new one is bound"
    finally:
        busy.close()
    wait_until(lambda: status_or_zero(c) in (200, 503), 30, "the endpoint on the freed port")
    assert status_or_zero(b) == 0


def test_a_reload_moving_a_stopped_endpoint_process_holds_the_loop_no_longer_than_the_api(
        env: Env, lag: SchedulingLag) -> None:
    """The old endpoint process, stopped (SIGSTOP), never sees its stdin's EOF and
    holds SIGTERM: the reload that moved the endpoint waited 1 s (STOP_WAIT) for it,
    past api.timeout (0.2 s here), and watchdog pings came 1.3 s apart under
    WatchdogSec=1s.  Measured as the reload's RELOADING=1 .. READY=1."""
    a, b = free_port(), free_port()
    timeout = 0.2
    d = env.start(env={"WATCHDOG_USEC": "1000000"}, api={"timeout": timeout},
                  metrics={"listen": f"127.0.0.1:{a}"})
    old = wait_endpoint(d)
    os.kill(old, signal.SIGSTOP)
    try:
        env.write_config(api={"timeout": timeout}, metrics={"listen": f"127.0.0.1:{b}"})
        mark = len(env.notify.all())
        d.signal(signal.SIGHUP)
        env.notify.wait("READY", "1", timeout=10, after=mark)
        timed = env.notify.timed()[mark:]
        began = next(t for t, m in timed if m.get("RELOADING") == "1")
        ended = next(t for t, m in timed if m.get("READY") == "1")
        assert ended - began < timeout + lag.worst, ended - began
        assert wait_endpoint(d, other_than=old) != old
        assert status_or_zero(b) in (200, 503)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(old, signal.SIGCONT)


def test_a_reload_to_an_address_overlapping_its_own_port_frees_it_first(env: Env) -> None:
    """127.0.0.1:P -> [::ffff:127.0.0.1]:P (the same endpoint seen from IPv6): the
    new bind conflicts with the daemon's own socket only, which goes first."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    port = free_port()
    d = env.start(metrics={"listen": f"127.0.0.1:{port}"})
    first = wait_endpoint(d)
    mapped = f"[::ffff:127.0.0.1]:{port}"
    reload(env, d, listen=mapped, allow_remote=True)  # mapped addresses are not "loopback"
    wait_endpoint(d, other_than=first)
    assert get(port)[0] in (200, 503)
    assert "cannot listen" not in d.log()
    d.wait_log(f"metrics and health on http://{mapped}/")


# --- without privilege --------------------------------------------------------------------


def capability_sets(pid: int) -> Dict[str, int]:
    return {k: int(v, 16) for k, v in proc_status(pid).items() if k.startswith("Cap")}


def test_as_root_the_endpoint_process_becomes_nobody(env: Env) -> None:
    if os.geteuid() != 0:
        pytest.skip("the daemon runs as root only when the tests do")
    port = free_port()
    d = env.start(metrics={"listen": f"127.0.0.1:{port}"})
    child = wait_endpoint(d)
    status = proc_status(child)
    assert status["Uid"].split() == ["65534"] * 4 and status["Gid"].split() == ["65534"] * 4
    assert status["Groups"].strip() == ""
    caps = capability_sets(child)
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapAmb"] == 0, caps
    assert get(port)[0] in (200, 503)


def test_a_runtime_directory_nobody_cannot_read_is_one_error_line(env: Env) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs the daemon to run as root")
    (env.tmp / "run").mkdir(mode=0o700)  # the harness's RUNTIME_DIRECTORY, root's only
    port = free_port()
    d = env.start(metrics={"listen": f"127.0.0.1:{port}"})
    d.wait_log("metrics endpoint: cannot read ")
    assert "heartbeat as uid 65534: Permission denied; retrying with backoff" in d.log()
    time.sleep(1.5)  # retries under way (the first after 0.5-1 s)
    assert d.log().count("metrics endpoint: cannot read") == 1 and d.proc.poll() is None


@pytest.fixture
def world() -> Iterator[Path]:
    """A directory others may search (pytest's tmp_path is root's only), as /run is."""
    path = Path(tempfile.mkdtemp(prefix="gtp5g-unit-like-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def unit_like(world: Path, api: FakeGthulhu, keys: Dict[str, Path]
              ) -> Iterator[Callable[[int], subprocess.Popen[bytes]]]:
    """Starts the daemon as the unit runs it: a non-root user holding the unit's
    two capabilities as ambient ones (setpriv), with Debian's python3."""
    tmp_path = world
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to start the daemon as the unit does")
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import jwt, cryptography, sdnotify, "
                            "prometheus_client"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"{SYSTEM_PYTHON} with jwt, cryptography, sdnotify and prometheus_client "
                    "(Debian packages) is needed")
    started: List[subprocess.Popen[bytes]] = []

    def start(port: int) -> subprocess.Popen[bytes]:
        fifo = tmp_path / "trace_pipe"
        os.mkfifo(fifo)
        cfg = write_config(tmp_path / "config.toml", **base_config(
            fifo, api.url, keys["public"], metrics={"listen": f"127.0.0.1:{port}"}))
        run = tmp_path / "run"
        run.mkdir(mode=0o777)
        os.chmod(run, 0o777)
        caps = "+dac_read_search,+sys_ptrace"
        log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115 (the child holds it)
        proc = subprocess.Popen(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             f"--inh-caps={caps}", f"--ambient-caps={caps}", "--",
             SYSTEM_PYTHON, "-m", "gtp5g_operator", "--config", str(cfg)],
            cwd="/", stdout=log, stderr=subprocess.STDOUT,
            env={"PATH": os.environ["PATH"], "RUNTIME_DIRECTORY": str(run),
                 "STATE_DIRECTORY": str(run),
                 "PYTHONPATH": str(public_copy(REPO / "gtp5g_operator"))})
        log.close()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(10)


def test_under_the_units_ambient_capabilities_the_endpoint_process_holds_none(
        unit_like: Callable[[int], subprocess.Popen[bytes]], world: Path) -> None:
    tmp_path = world
    port = free_port()
    daemon = unit_like(port)
    wait_until(lambda: status_or_zero(port) in (200, 503), 15,
               "the endpoint of the daemon started like the unit")
    unit_caps = 1 << 2 | 1 << 19  # CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE
    daemon_caps = capability_sets(daemon.pid)
    assert daemon_caps["CapEff"] == daemon_caps["CapPrm"] == unit_caps, "the daemon keeps its own"
    assert daemon_caps["CapAmb"] == 0, "cleared before the endpoint process was started"
    children = Path(f"/proc/{daemon.pid}/task/{daemon.pid}/children").read_text().split()
    assert len(children) == 1, (tmp_path / "daemon.log").read_text()
    caps = capability_sets(int(children[0]))
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapAmb"] == 0, caps
    assert proc_status(int(children[0]))["Uid"].split()[0] == "65534"
    log = wait_until(lambda: "metrics and health on http://127.0.0.1:" in (
        text := (tmp_path / "daemon.log").read_text()) and text, 10, "the endpoint's log line")
    assert "metrics endpoint:" not in log, log



# --- out of file descriptors -------------------------------------------------------------


def endpoint_alone(tmp_path: Path, spare_fds: int
                   ) -> Tuple[subprocess.Popen[bytes], socket.socket]:
    """The endpoint process alone, as the daemon starts it, limited (RLIMIT_NOFILE)
    to `spare_fds` more fds than it holds in its loop: a first run finds where its
    next fd would go, a second one starts with the limit (fd numbers are the same)."""
    import resource

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    run = tmp_path / "run"
    run.mkdir(mode=0o755)
    os.chmod(tmp_path, 0o755)  # as root the process becomes nobody, who must look into run/

    def start(limit: int = 0) -> subprocess.Popen[bytes]:
        def limit_fds() -> None:
            if limit:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        fd = listener.fileno()
        proc = subprocess.Popen(
            child_command(fd, str(run)), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            pass_fds=(fd,), cwd="/", env=child_env(), preexec_fn=limit_fds)
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"serving\n"
        wait_until(lambda: in_its_loop(proc.pid), 10, "the endpoint's loop")
        return proc

    first = start()
    held = {int(n) for n in os.listdir(f"/proc/{first.pid}/fd")}
    first.kill()
    first.wait()
    lowest_free = min(set(range(len(held) + 1)) - held)
    return start(limit=lowest_free + spare_fds), listener


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_without_a_free_fd_the_endpoint_rests_instead_of_spinning(tmp_path: Path) -> None:
    proc, listener = endpoint_alone(tmp_path, spare_fds=0)
    try:
        client = socket.create_connection(listener.getsockname(), timeout=5)  # queued
        before = cpu_seconds(proc.pid)
        time.sleep(2.0)  # the measurement window: accept() fails all along
        spent = cpu_seconds(proc.pid) - before
        assert spent < 0.2, f"{spent:.2f} s of CPU in 2 s: accept() retried in a loop"
        client.close()
    finally:
        proc.kill()
        proc.wait()
        listener.close()


def test_with_one_free_fd_a_new_client_closes_the_oldest(tmp_path: Path) -> None:
    proc, listener = endpoint_alone(tmp_path, spare_fds=1)
    try:
        fds = open_fds(proc.pid)
        silent = socket.create_connection(listener.getsockname(), timeout=5)
        wait_until(lambda: open_fds(proc.pid) == fds + 1, 10, "the first one accepted")
        code, _, _ = exchange(listener.getsockname()[1], b"GET /health HTTP/1.1\r\n\r\n")
        assert code == 503  # nothing published in this directory: "starting"
        silent.settimeout(5)
        assert silent.recv(1) == b"", "the oldest connection made room"
    finally:
        proc.kill()
        proc.wait()
        listener.close()


def test_under_python_dev_mode_nothing_is_left_unclosed(env: Env) -> None:
    """`python -X dev` (PYTHONDEVMODE) reports every socket and file left for the
    garbage collector or the interpreter's exit: a start, a push, a reload that ends one
    endpoint process and starts another, and a stop leave none.  The endpoint process
    left its listening socket so at each end, the daemon its sd_notify socket."""
    a, b = free_port(), free_port()
    d = env.start(env={"PYTHONDEVMODE": "1"}, metrics={"listen": f"127.0.0.1:{a}"})
    first = wait_endpoint(d)
    env.api.wait_post(lambda s: True)
    reload(env, d, listen=f"127.0.0.1:{b}")
    second = wait_endpoint(d, other_than=first)
    assert get(b)[0] in (200, 503)
    assert d.stop() == 0
    wait_until(lambda: not Path(f"/proc/{second}").exists(), 10, "the endpoint to exit")
    said = [line for line in d.log().splitlines()
            if re.search(r"\w+Warning: |Exception ignored", line)]
    assert not said, "\n".join(said)
