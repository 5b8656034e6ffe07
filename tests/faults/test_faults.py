"""Fault injection: the real daemon under every fault we can name.

Each case asserts what the daemon did — kept running, recovered, logged once,
pushed the right set, kept feeding the watchdog.  README "Faults tried" lists
the outcomes.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Set, Tuple

import pytest

from gtp5g_operator.config.parse import tomllib  # type: ignore[attr-defined]  # tomli < 3.11
from gtp5g_operator.service.pusher import FIRST_RETRY
from testbed.fake_gthulhu import FakeGthulhu
from testbed.harness import (
    REPO,
    SYSTEM_PYTHON,
    DaemonProcess,
    GnbProcess,
    SchedulingLag,
    TraceWriter,
    public_copy,
    wait_until,
    write_config,
)
from testbed.tls import SECP112R1_PUBLIC_KEY
from testbed.tracelines import gtp5g_line, trace_line
from tests.conftest import Env, base_config
from tests.unit.test_config import BAD

pytestmark = pytest.mark.faults

WATCHDOG_USEC = "1000000"  # pings every 0.5 s
API_TIMEOUT = 1.0
RESYNC = 2.0  # the resync interval, also the retry backoff's cap


def pids(strategies: List[Dict[str, Any]]) -> Set[int]:
    return {s["pid"] for s in strategies if "pid" in s}


def lines_for(g: GnbProcess) -> str:
    return "".join(gtp5g_line("nr-gnb", t, g.pid) for t in g.tids)


def ping_gaps(env: Env, since: float) -> List[float]:
    times = [t for t, m in env.notify.timed() if m.get("WATCHDOG") == "1" and t >= since]
    return [b - a for a, b in itertools.pairwise(times)]


def start_watched(env: Env, **overrides: Dict[str, object]) -> DaemonProcess:
    api = {"timeout": API_TIMEOUT}
    api.update(overrides.pop("api", {}))  # type: ignore[arg-type]
    strategy = {"resync_interval": RESYNC}
    strategy.update(overrides.pop("strategy", {}))  # type: ignore[arg-type]
    return env.start(env={"WATCHDOG_USEC": WATCHDOG_USEC}, api=api, strategy=strategy,
                     **overrides)  # type: ignore[arg-type]


# --- the API ------------------------------------------------------------------------------


@pytest.mark.parametrize("fault,logged", [
    ("hang", "timeout: POST"),
    ("trickle", "timeout: POST"),  # headers a byte per 0.1 s: the deadline still holds
    ("500", "HTTP 500: internal error"),
    ("400", "HTTP 400: Invalid request payload"),
    ("badjson", "bad-answer: POST"),
    ("huge", "bytes is larger than 1048576: ignored"),
])
def test_api_fault_then_recovery_watchdog_fed(env: Env, gnb: Callable[..., GnbProcess],
                                              fault: str, logged: str, lag: SchedulingLag) -> None:
    d = start_watched(env)
    env.wait_pushed(0)  # counted from here: a loaded host may fail and retry the first
    mark = len(d.log())
    t0 = time.monotonic()
    env.api.fault = fault
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    wait_until(lambda: logged in d.log()[mark:], 10, f"log line containing {logged!r}")
    time.sleep(3.0)  # several retries under the fault
    assert d.log()[mark:].count("push failed:") == 1, "logged once, not per retry"
    env.api.fault = None
    env.api.wait_post(lambda s: pids(s) == {g.pid}, timeout=15,
                      after=len(env.api.posts()))
    wait_until(lambda: "API reachable again" in d.log()[mark:], 20, "the recovery logged")
    gaps = ping_gaps(env, t0)
    assert gaps and max(gaps) < 0.5 + API_TIMEOUT + 0.3 + lag.worst, gaps
    assert d.proc.poll() is None


def test_a_server_failing_one_way_then_another_is_one_line_per_cause(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    """A struggling server behind a rate-limiting proxy answers 500 to one request and
    429 to the next: the kind of failure changed at every retry, and each change was
    logged (29 WARNING lines in a minute for one outage, 360 an hour at the default
    resync): each cause is said once per episode, and the recovery once."""
    d = start_watched(env)
    env.wait_pushed(0)
    mark, asked = len(d.log()), len(env.api.received)
    env.api.fault = itertools.cycle(["500", "429"]).__next__
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    wait_until(lambda: len(env.api.received) - asked >= 12, 60, "a dozen failed requests")
    failed = [ln for ln in d.log()[mark:].splitlines() if "push failed:" in ln]
    assert len(failed) == 2, failed
    assert any("HTTP 500" in ln for ln in failed) and any("HTTP 429" in ln for ln in failed)
    env.api.fault = None
    env.api.wait_post(lambda s: pids(s) == {g.pid}, timeout=15, after=len(env.api.posts()))
    wait_until(lambda: "API reachable again" in d.log()[mark:], 20, "the recovery logged")
    env.api.fault = "500"  # a new episode says its cause again
    wait_until(lambda: d.log()[mark:].count("push failed:") == 3, 20, "the next episode")


def test_api_slow_but_in_time(env: Env, gnb: Callable[..., GnbProcess]) -> None:
    # token + post: 0.6 s of 4 s; a loaded CI host can add a second without a failure
    env.api.fault, env.api.fault_delay = "slow", 0.3
    d = env.start(api={"timeout": 4.0}, strategy={"resync_interval": 5.0})
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    env.api.wait_for(lambda: pids(env.api.strategies or []) == {g.pid}, timeout=10)
    assert "failed" not in d.log()


def test_api_refusing_connections(env: Env, gnb: Callable[..., GnbProcess], tmp_path: Path,
                                  keys: Dict[str, Path], lag: SchedulingLag) -> None:
    port = int(env.api.url.rsplit(":", 1)[1])
    env.api.stop()
    d = start_watched(env)
    t0 = time.monotonic()
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    d.wait_log("Connection refused")
    time.sleep(3)
    assert d.log().count("push failed:") == 1
    back = FakeGthulhu(keys["private"].read_bytes(), port=port).start()
    try:
        back.wait_post(lambda s: pids(s) == {g.pid}, timeout=15)
    finally:
        back.stop()
    gaps = ping_gaps(env, t0)
    assert max(gaps) < 0.5 + 0.3 + lag.worst, gaps  # refused connections never block


def test_wrong_key_401_names_the_key_file_and_does_not_hammer(env: Env,
                                                              keys: Dict[str, Path]) -> None:
    """Each refused token is followed by a longer rest (FIRST_RETRY doubling up to the
    resync interval, at least half of it each time), whatever the host's speed: the
    gaps are measured at the server, so a slow host can only widen them."""
    d = start_watched(env, api={"public_key": str(keys["wrong_public"])})
    d.wait_log("refused our public key")

    def tokens() -> List[float]:
        return [r.at for r in env.api.received if r.path == "/api/v1/auth/token"]

    wait_until(lambda: len(tokens()) >= 6, 60, "six token requests")
    log = d.log()
    assert f"the server refused our public key {keys['wrong_public']}" in log
    assert log.count("push failed:") == 1
    gaps = [b - a for a, b in itertools.pairwise(tokens())]
    floors = [0.5 * min(RESYNC, FIRST_RETRY * 2 ** k) for k in range(len(gaps))]
    assert all(g >= f for g, f in zip(gaps, floors, strict=True)), \
        f"token requests {gaps} s apart, backoff floors {floors}: backoff missing"


def token_requests(api: FakeGthulhu) -> List[float]:
    return [r.at for r in api.received if r.path == "/api/v1/auth/token"]


@pytest.mark.parametrize("fault", ["503", "429"])
def test_a_retry_after_is_the_floor_of_the_next_try(env: Env, fault: str) -> None:
    """A server that says when to come back (503 or 429 with Retry-After: delta-seconds)
    was asked again after our backoff only (0.25 s, 0.5 s, ...)."""
    env.api.status_headers[int(fault)] = [("Retry-After", "1")]
    env.api.fault = fault
    start_watched(env, strategy={"resync_interval": 4.0})
    wait_until(lambda: len(token_requests(env.api)) >= 4, 30, "four tries")
    gaps = [b - a for a, b in itertools.pairwise(token_requests(env.api))]
    assert min(gaps) >= 1.0, f"tries {gaps} s apart: Retry-After: 1 not honoured"


def test_a_retry_after_is_capped_and_one_that_is_not_delta_seconds_ignored(
        env: Env, lag: SchedulingLag) -> None:
    """Honoured up to the resync interval (the backoff's cap): a hostile or confused
    server cannot park us for a day; garbage, a date, 5,000 digits are ignored."""
    env.api.status_headers[503] = [("Retry-After", "86400")]
    env.api.fault = "503"
    d = start_watched(env, strategy={"resync_interval": 1.5})
    wait_until(lambda: len(token_requests(env.api)) >= 4, 30, "tries despite a day asked")
    gaps = [b - a for a, b in itertools.pairwise(token_requests(env.api))]
    # at most the cap and a try's own time; twice the cap, so that a host's load never
    # fails it, while a day (or any cap but the resync interval's order) still would
    assert max(gaps) < 2 * 1.5 + API_TIMEOUT + lag.worst, gaps
    for value in ("soon", "Wed, 21 Oct 2037 07:28:00 GMT", "-5", "1.5", "9" * 5000):
        env.api.status_headers[503] = [("Retry-After", value)]

        def one_more(before: int = len(token_requests(env.api))) -> bool:
            return len(token_requests(env.api)) > before

        wait_until(one_more, 10, f"a try after {value[:30]}")
    env.api.fault = None
    env.api.wait_post(lambda s: True, timeout=15)
    assert d.proc.poll() is None and "Traceback" not in d.log()


# --- the trace source ----------------------------------------------------------------------


def test_trace_source_deleted_while_open(env: Env, gnb: Callable[..., GnbProcess]) -> None:
    d = start_watched(env)
    g = gnb(threads=("nr-gnb-rlc",))
    env.writer.write(gtp5g_line("nr-gnb", g.pid, g.pid))
    env.api.wait_post(lambda s: pids(s) == {g.pid})
    env.trace_pipe.unlink()
    env.writer.close()  # EOF; reopening fails: the path is gone
    d.wait_log("cannot open trace source")
    time.sleep(1.5)
    assert d.log().count("cannot open trace source") == 1
    os.mkfifo(env.trace_pipe)
    w = TraceWriter(env.trace_pipe)
    w.open()
    w.write(gtp5g_line("nr-gnb-rlc", g.threads["nr-gnb-rlc"], g.pid))
    env.api.wait_post(lambda s: pids(s) == set(g.tids), timeout=10)
    w.close()


def test_trace_source_permission_denied(api: FakeGthulhu, keys: Dict[str, Path],
                                        gnb: Callable[..., GnbProcess]) -> None:
    """Root reads anything, so the daemon runs as nobody here."""
    world = Path(tempfile_dir())
    try:
        fifo = world / "trace_pipe"
        os.mkfifo(fifo, 0o600)  # root's: nobody may not open it
        key = world / "key.pem"
        shutil.copy(keys["public"], key)
        os.chmod(key, 0o644)
        cfg = write_config(world / "config.toml", **base_config(fifo, api.url, key))
        os.chmod(cfg, 0o644)
        os.chmod(world, 0o755)
        runtime = world / "run"
        runtime.mkdir(mode=0o777)
        os.chmod(runtime, 0o777)
        log = world / "daemon.log"
        d = _as_nobody(cfg, log, runtime)
        try:
            wait_until(lambda: "Permission denied" in log.read_text(), 10, "EACCES logged")
            time.sleep(1.0)
            assert log.read_text().count("Permission denied") == 1
            os.chmod(fifo, 0o666)
            g = gnb(threads=())
            w = TraceWriter(fifo)
            w.open()
            w.write(gtp5g_line("nr-gnb", g.pid, g.pid))
            api.wait_post(lambda s: pids(s) == {g.pid}, timeout=10)
            w.close()
        finally:
            d.terminate()
            d.wait(5)
    finally:
        shutil.rmtree(world, ignore_errors=True)


def tempfile_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="gtp5g-nobody-")


def _as_nobody(cfg: Path, log: Path, runtime: Path) -> subprocess.Popen[bytes]:
    """The daemon as user nobody, with Debian's python3 (as the package runs it)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the daemon as another user")
    need_system_python("jwt", "cryptography", "sdnotify")
    package = public_copy(REPO / "gtp5g_operator")
    with open(log, "wb") as out:
        return subprocess.Popen(
            [SYSTEM_PYTHON, "-m", "gtp5g_operator", "--config", str(cfg)],
            cwd="/", user=65534, group=65534, stdout=out, stderr=subprocess.STDOUT,
            env={"PATH": os.environ["PATH"], "PYTHONPATH": str(package),
                 "RUNTIME_DIRECTORY": str(runtime), "STATE_DIRECTORY": str(runtime)})


HOLD_FDS = ("import os, resource, time\n"
            "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
            "hard = min(hard, 50000) if hard != resource.RLIM_INFINITY else 50000\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))\n"
            "fd = os.open('/dev/null', os.O_RDONLY)\n"
            "for _ in range(hard - 64):\n"
            "    os.dup(fd)\n"
            "print('held', flush=True)\n"
            "time.sleep(600)\n")


def test_an_ebusy_source_on_a_host_with_many_open_fds_does_not_hold_the_loop(
        env: Env, lag: SchedulingLag, tmp_path: Path) -> None:
    """EBUSY makes the daemon look for the holder through every /proc/PID/fd of the
    host, once per episode, in the loop: a walk whose cost grows with every fd open on
    the host, which any local user adds to (10 processes of 20,000 dup()s of
    /dev/null: 0.8 s, pings 0.92 s apart under WatchdogSec=1s and api.timeout 0.2,
    past the bound the daemon promises, 0.825 s; more fds, longer).  The walk now
    has a budget.  EBUSY without tracefs: a terminal in exclusive mode (TIOCEXCL)
    refuses a second open by a process without CAP_SYS_ADMIN, which the unit's
    bounding set lacks too (setpriv drops it here)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux)")
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCEXCL)
    holders = [subprocess.Popen([sys.executable, "-c", HOLD_FDS], stdout=subprocess.PIPE)
               for _ in range(20)]
    try:
        for holder in holders:
            assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        pipe = tmp_path / "held_pipe"
        timeout = 0.2
        env.write_config(api={"timeout": timeout}, trace={"pipe": str(pipe)})
        d = DaemonProcess(env.config_path, env.notify, tmp_path / "held.log",
                          {"WATCHDOG_USEC": "1000000"},
                          prefix=["setpriv", "--bounding-set", "-sys_admin", "--"])
        env.daemons.append(d)
        env.notify.wait("READY", "1", timeout=30)
        t0 = time.monotonic() - 1.0  # the gap the walk falls in begins with an earlier ping
        os.symlink(os.ttyname(slave), pipe)  # the source, missing at start, opened now
        d.wait_log("another reader holds it (EBUSY)")
        seen = len(ping_gaps(env, t0))
        gaps = wait_until(lambda: (g := ping_gaps(env, t0)) and len(g) >= seen + 2 and g, 10,
                          "two pings after the walk")
        bound = max(0.5, min(1.0, 0.5 / 4) + timeout + 0.5)  # watchdog.py's, below 1 s
        assert max(gaps) <= bound + lag.worst, (max(gaps), bound)
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
        os.close(master)
        os.close(slave)


def need_system_python(*modules: str) -> None:
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import " + ", ".join(modules or ("sys",))],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"{SYSTEM_PYTHON} with {', '.join(modules)} is needed (Debian packages)")


def test_garbage_binary_nuls_and_a_10mb_line(
        env: Env, gnb: Callable[..., GnbProcess], lag: SchedulingLag) -> None:
    d = start_watched(env)
    t0 = time.monotonic()
    g = gnb(threads=())
    env.writer.write(os.urandom(1 << 20) + b"\x00" * 4096 + b"\xff\xfe\xc3\x28 bad utf-8\n")
    env.writer.write(b"L" * (10 << 20))  # 10 MB without a newline ...
    env.writer.write(b" end of the long line\n" + lines_for(g).encode())
    env.api.wait_post(lambda s: pids(s) == {g.pid}, timeout=10)
    assert d.log().count("dropped a trace line longer than") == 1
    time.sleep(1.2)  # at least two more pings to measure against
    gaps = ping_gaps(env, t0)
    assert max(gaps) < 0.8 + lag.worst, gaps
    assert d.proc.poll() is None


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_flood_of_a_million_distinct_ids_keeps_memory_bounded(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    d = start_watched(env, log={"level": "info"})
    env.api.wait_post(lambda s: True)
    g = gnb(threads=())
    before = rss_kb(d.pid)
    batch = 100_000
    for start in range(0, 1_000_000, batch):
        # below PID_MAX_LIMIT (4194304): IDs a task may have, each looked up in /proc
        env.writer.write("".join(trace_line("nr-ue", 3_000_000 + i, "x")
                                 for i in range(start, start + batch)))
    env.writer.write(lines_for(g))  # and the real gNB still gets through
    env.api.wait_post(lambda s: pids(s) == {g.pid}, timeout=60)
    grown = rss_kb(d.pid) - before
    assert grown < 5 * 1024, f"RSS grew {grown} kB over a 1,000,000-ID flood"


def test_a_flood_that_saturates_the_loop_does_not_starve_watchdog_or_push(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    d = start_watched(env, strategy={"resync_interval": 1.5}, log={"level": "info"})
    g = gnb(threads=())
    chunk = (lines_for(g) * 2000).encode()  # ~2,000 lines
    env.writer.open()
    assert env.writer.fd is not None
    # A pipe as large as a kernel ring (1.4 MB per CPU): with the default 64 KiB the
    # loop's batching rest (5 ms after a small turn) would pace the writer instead.
    fcntl.fcntl(env.writer.fd, fcntl.F_SETPIPE_SZ, 1 << 20)
    t0 = time.monotonic()
    n0 = len(env.api.posts())
    waiting = 0.0
    with SchedulingLag() as lag:
        while time.monotonic() - t0 < 3.0:  # as fast as the daemon takes it
            before = time.monotonic()
            env.writer.write(chunk)
            waiting += time.monotonic() - before
        elapsed = time.monotonic() - t0
    # A flood: the writer waited on a full pipe most of the time, so the daemon's loop
    # found data at every turn, whatever this machine's speed or load (the lines/s are
    # a benchmark figure, not a test's).
    if waiting < 0.5 * elapsed:
        pytest.skip(f"the writer kept the pipe full only {waiting / elapsed:.0%} of the "
                    "time: this machine could not produce a flood now")
    gaps = ping_gaps(env, t0)
    assert gaps and max(gaps) < 0.8 + lag.worst, (gaps, lag.worst)
    posts = [p for p in env.api.posts()[n0:] if p.at <= t0 + elapsed]
    assert len(posts) >= 2, "resync pushes must go on during the flood"
    assert d.proc.poll() is None


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- processes -------------------------------------------------------------------------------


def spawn_with_pid(pid: int, argv: List[str]) -> subprocess.Popen[bytes]:
    """Start argv so that it gets PID `pid` (root: /proc/sys/kernel/ns_last_pid)."""
    for _ in range(50):
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        proc = subprocess.Popen(argv)
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    pytest.skip(f"could not get PID {pid} back (a busy machine took it)")


def allocations_moved_away(env: Env, d: DaemonProcess, pid: int) -> subprocess.Popen[bytes]:
    """A process far above `pid` (or, near pid_max, far below), named in the trace;
    returns once the daemon has looked it up: the kernel's last allocated PID it
    read is there, so the other forks of this busy host that follow a PID forced
    back to `pid` do not carry it past that reading again (a forced PID is no
    wrap, which is all the daemon can see)."""
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    far = pid + 5000 if pid + 5000 < pid_max - 1000 else pid - 5000
    if far < 1000:
        pytest.skip(f"pid_max {pid_max} leaves no room to move away from {pid}")
    Path("/proc/sys/kernel/ns_last_pid").write_text(str(far))
    away = subprocess.Popen(["sleep", "30"])
    env.writer.write(gtp5g_line("sleep", away.pid, away.pid))
    d.wait_log(f"process {away.pid} not tracked")
    return away


def test_reused_pid_with_stale_nr_gnb_lines_is_not_boosted(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    if os.geteuid() != 0 or not os.access("/proc/sys/kernel/ns_last_pid", os.W_OK):
        pytest.skip("needs root to force a PID with /proc/sys/kernel/ns_last_pid")
    start_watched(env, strategy={"liveness_interval": 30.0})  # only the pre-push check helps
    g = gnb(threads=())
    old = g.pid
    env.writer.write(lines_for(g))
    env.api.wait_post(lambda s: pids(s) == {old})
    g.stop()
    intruder = spawn_with_pid(old, ["sleep", "30"])  # a different program under the same PID
    try:
        n = len(env.api.posts())
        for _ in range(5):  # stale lines naming the old nr-gnb keep coming
            env.writer.write(gtp5g_line("nr-gnb", old, old))
            time.sleep(0.1)
        post = env.api.wait_post(lambda s: old not in pids(s), timeout=10, after=n)
        assert post.body["strategies"] == []
        time.sleep(0.5)
        assert all(old not in pids(p.body["strategies"]) for p in env.api.posts()[n:])
    finally:
        intruder.kill()
        intruder.wait()


def test_a_gnb_that_gets_the_id_of_a_task_found_not_to_be_one_is_boosted_at_once(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    """The trace named a task that is not the gNB; it exits and the kernel hands its
    PID to a gNB (here forced; on a host with pid_max 32768 a wrap does it).  The
    'not a target' verdict was kept by ID alone until the next liveness pass (30 s
    here, 5 s by default): the gNB's lines were ignored that long."""
    if os.geteuid() != 0 or not os.access("/proc/sys/kernel/ns_last_pid", os.W_OK):
        pytest.skip("needs root to force a PID with /proc/sys/kernel/ns_last_pid")
    d = start_watched(env, strategy={"liveness_interval": 30.0})
    stranger = subprocess.Popen(["sleep", "30"])
    reused = stranger.pid
    env.writer.write(gtp5g_line("nr-gnb", reused, reused))
    d.wait_log(f"process {reused} not tracked: its name is 'sleep'")
    away = allocations_moved_away(env, d, reused)
    # identity is (ID, start time in clock ticks): a gNB started in the stranger's
    # tick would be the stranger to anyone (only a write to ns_last_pid does that)
    start = int(Path(f"/proc/{reused}/stat").read_text().rsplit(")", 1)[1].split()[19])
    tick = os.sysconf("SC_CLK_TCK")
    wait_until(lambda: time.clock_gettime(time.CLOCK_BOOTTIME) * tick > start + 2, 5,
               "the stranger's clock tick to pass")
    stranger.kill()
    stranger.wait()
    try:
        for _ in range(50):
            Path("/proc/sys/kernel/ns_last_pid").write_text(str(reused - 1))
            g = gnb(threads=())
            if g.pid == reused:
                break
            g.stop()
        else:
            pytest.skip(f"could not get PID {reused} back (a busy machine took it)")
        t0 = time.monotonic()
        for _ in range(100):
            env.writer.write(gtp5g_line("nr-gnb", reused, reused))
            if any(reused in pids(p.body["strategies"]) for p in env.api.posts()):
                break
            time.sleep(0.1)
        post = env.api.wait_post(lambda s: reused in pids(s), timeout=1)
        assert post.at - t0 < EXIT_BOUND, f"pushed {post.at - t0:.1f} s after its first line"
    finally:
        away.kill()
        away.wait()


def test_a_stranger_that_gets_the_id_of_a_gnb_thread_that_exited_is_dropped_at_once(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    """A gNB thread exits alone (the pidfd per process does not see it) and another
    process gets its ID: the v0 server boosted that stranger until the next push
    (resync) or liveness pass — 30 s here, 5 s by default."""
    if os.geteuid() != 0 or not os.access("/proc/sys/kernel/ns_last_pid", os.W_OK):
        pytest.skip("needs root to force a PID with /proc/sys/kernel/ns_last_pid")
    d = start_watched(env, strategy={"liveness_interval": 30.0, "resync_interval": 30.0})
    g = gnb(threads=("nr-gnb-rlc", "gnb worker"))
    env.writer.write(lines_for(g))
    env.api.wait_post(lambda s: pids(s) == set(g.tids))
    worker = g.threads["gnb worker"]
    away = allocations_moved_away(env, d, worker)
    g.exit_thread("gnb worker")
    n = len(env.api.posts())
    stranger = spawn_with_pid(worker, ["sleep", "30"])
    try:
        t0 = time.monotonic()
        for _ in range(100):  # the gNB keeps serving: its lines keep coming
            env.writer.write(lines_for(g))
            if any(worker not in pids(p.body["strategies"]) for p in env.api.posts()[n:]):
                break
            time.sleep(0.1)
        post = env.api.wait_post(lambda s: worker not in pids(s), timeout=1, after=n)
        assert pids(post.body["strategies"]) == set(g.tids)
        assert post.at - t0 < EXIT_BOUND, f"the stranger boosted {post.at - t0:.1f} s"
    finally:
        for p in (stranger, away):
            p.kill()
            p.wait()


# The exit seen at once, the 20 ms coalescing, the push: far below the 60 s of the
# liveness pass and the resync, with room for a loaded machine.
EXIT_BOUND = 10.0


@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "zombie"])
def test_a_gnb_that_exits_leaves_the_api_at_once(
        env: Env, gnb: Callable[..., GnbProcess], reaped: bool) -> None:
    """A dead gNB's PIDs stay on a v0 server until the next push, and a local user
    who has poised the PID counter just below them takes one within milliseconds
    of the exit: the server boosts that stranger until then.  So the exit itself,
    not the next liveness pass (60 s here) or resync, must bring the push — also
    while the gNB is an unreaped zombie."""
    start_watched(env, strategy={"liveness_interval": 60.0, "resync_interval": 60.0})
    g = gnb(threads=("nr-gnb-rlc",))
    env.writer.write(lines_for(g))
    env.api.wait_post(lambda s: pids(s) == set(g.tids))
    gone = set(g.tids)
    n = len(env.api.posts())
    t0 = time.monotonic()
    if reaped:
        g.stop()
    else:
        g.proc.kill()  # never waited for: a zombie until the fixture reaps it
        wait_until(lambda: Path(f"/proc/{g.pid}/stat").read_text().split(") ")[1][0] == "Z",
                   5, f"{g.pid} to be a zombie")
    post = env.api.wait_post(lambda s: not pids(s) & gone, timeout=10, after=n)
    assert post.at - t0 < EXIT_BOUND, f"pushed {post.at - t0:.2f} s after the exit"


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(BAD))
def test_every_wrong_key_at_start_exits_78_with_one_line(env: Env, key: str) -> None:
    section, name = key.strip().split(".")
    bad_value = tomllib.loads(BAD[key])[section][name]
    env.write_config(**{section: {name: bad_value}})
    d = env.start(ready=False)
    assert d.proc.wait(10) == 78
    errors = [ln for ln in d.log().splitlines() if "ERROR" in ln]
    assert len(errors) == 1 and f"{section}.{name}: expected" in errors[0], d.log()
    assert not any("READY" in m for m in env.notify.all())


@pytest.mark.parametrize("content,message", [
    ("[strategy]\nexecution_tim = 5\n", "strategy.execution_tim: unknown key"),
    ("[api\n", "invalid TOML"),
])
def test_unknown_key_and_syntax_error_exit_78(env: Env, content: str, message: str) -> None:
    env.config_path.write_text(content)
    d = env.start(ready=False)
    assert d.proc.wait(10) == 78 and message in d.log()


def test_unreadable_config_and_bad_keys_exit_78(env: Env, tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path, env.notify, tmp_path.parent / "dir.log")  # a directory
    assert d.proc.wait(10) == 78
    assert "cannot read configuration: not a regular file (a directory)" in d.log()
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    d = env.start(ready=False, api={"public_key": str(garbage)})
    assert d.proc.wait(10) == 78 and "not a PEM public key" in d.log()
    # a well-formed key of a curve the cryptography library does not support
    small_curve = tmp_path / "secp112r1.pem"
    small_curve.write_text(SECP112R1_PUBLIC_KEY)
    d = env.start(ready=False, api={"public_key": str(small_curve)})
    assert d.proc.wait(10) == 78 and "api.public_key: not an RSA key" in d.log()
    assert "Traceback" not in d.log()


def test_config_writable_by_others_is_refused(env: Env) -> None:
    env.write_config()
    os.chmod(env.config_path, 0o666)
    d = env.start(ready=False)
    assert d.proc.wait(10) == 78
    assert "writable by other users (mode 0666)" in d.log()


def test_hundred_sighups_in_a_second_leave_it_consistent(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    d = start_watched(env)
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    env.api.wait_post(lambda s: pids(s) == {g.pid})
    for i in range(100):
        if i % 10 == 9:
            env.config_path.write_text("[strategy]\nexecution_time_ns = \"broken\"\n")
        else:
            env.write_config(api={"timeout": API_TIMEOUT},
                             strategy={"execution_time_ns": 1_000_000 + i})
        d.signal(signal.SIGHUP)
        time.sleep(0.01)
    env.write_config(api={"timeout": API_TIMEOUT}, strategy={"execution_time_ns": 7_777_777})
    d.signal(signal.SIGHUP)
    post = env.api.wait_post(lambda s: bool(s) and s[0]["execution_time"] == 7_777_777,
                             timeout=10)
    assert pids(post.body["strategies"]) == {g.pid}
    assert d.proc.poll() is None
    ready_after = [m for m in env.notify.all() if m.get("READY") == "1"]
    assert len(ready_after) >= 2


# --- security -----------------------------------------------------------------------------------


def test_spoofed_names_are_not_boosted_with_uid_and_exe_pinned(
        env: Env, gnb: Callable[..., GnbProcess], tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to start a process as another user")
    need_system_python()
    exe = os.path.realpath(sys.executable)
    env.start(match={"uid": [os.getuid()], "exe": [exe]})
    real = gnb(threads=())
    other_uid = gnb(threads=(), user=65534)  # named nr-gnb, run by nobody
    copy_dir = Path(tempfile_dir())
    os.chmod(copy_dir, 0o755)
    fake_exe = copy_dir / "python3"
    shutil.copy2(os.path.realpath(SYSTEM_PYTHON), fake_exe)  # nr-gnb from an unexpected path
    other_path = gnb(threads=(), executable=str(fake_exe))
    try:
        env.writer.write(lines_for(other_uid) + lines_for(other_path) + lines_for(real))
        env.api.wait_post(lambda s: pids(s) == {real.pid})
        time.sleep(0.5)
        for post in env.api.posts():
            assert not pids(post.body["strategies"]) & {other_uid.pid, other_path.pid}
    finally:
        other_path.stop()
        shutil.rmtree(copy_dir, ignore_errors=True)


def test_a_gnb_run_through_a_symlink_named_in_match_exe_is_boosted(
        env: Env, gnb: Callable[..., GnbProcess], tmp_path: Path) -> None:
    """match.exe = ["/usr/local/bin/nr-gnb"] (the schema's own example) is often a
    symlink into a build tree; /proc/PID/exe names the file it leads to.  Compared as
    written, that gNB was never boosted, and the log said why only at DEBUG."""
    links = tmp_path / "bin"
    links.mkdir()
    link = links / "nr-gnb"
    link.symlink_to(os.path.realpath(sys.executable))
    env.start(match={"uid": [os.getuid()], "exe": [str(link)]}, log={"level": "info"})
    g = gnb(threads=("nr-gnb-rlc",), executable=str(link))
    assert os.readlink(f"/proc/{g.pid}/exe") != str(link)  # the premise
    env.writer.write(lines_for(g))
    env.api.wait_post(lambda s: pids(s) == set(g.tids))


def test_no_secret_in_logs_state_or_errors(env: Env, gnb: Callable[..., GnbProcess],
                                           keys: Dict[str, Path]) -> None:
    d = env.start()
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    post = env.api.wait_post(lambda s: pids(s) == {g.pid})
    token = post.authorization.split(" ", 1)[1]
    env.api.fault = "401"  # error paths too
    time.sleep(1.5)
    state = (env.tmp / "run" / "state.json").read_text()
    d.stop()
    key_body = keys["public"].read_text().splitlines()[1]
    for text in (d.log(), state):
        assert token not in text and token.split(".")[1] not in text
        assert key_body not in text


@pytest.mark.parametrize("comments", [False, True], ids=["bare", "bundle-with-utf8-comments"])
def test_https_with_the_right_ca_works(env: Env, tls_api: Tuple[FakeGthulhu, Path],
                                       gnb: Callable[..., GnbProcess], comments: bool) -> None:
    server, ca = tls_api
    assert server.url.startswith("https://")
    if comments:  # as in curl's cacert.pem; ssl refuses any text that is not ASCII
        ca.write_text("# NetLock Arany (Class Gold) Főtanúsítvány\n" + ca.read_text()
                      + "\n# Удостоверяющий центр\n")
    env.start(api={"url": server.url, "ca_file": str(ca)})
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    server.wait_post(lambda s: pids(s) == {g.pid})


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_kept_alive_connection_the_server_closed_while_idle_is_reopened(
        env: Env, tls_api: Tuple[FakeGthulhu, Path], gnb: Callable[..., GnbProcess],
        scheme: str) -> None:
    """Servers close idle kept-alive connections (Go's IdleTimeout, nginx's
    keepalive_timeout); the next request then meets the closed connection.  Over
    TLS that is an EOF from the TLS layer when sending, not a reset: it was taken for
    a failed push (a WARNING, a backoff, a redetection) at every resync."""
    server, ca = tls_api if scheme == "https" else (env.api, None)
    d = env.start(api={"url": server.url, **({"ca_file": str(ca)} if ca else {})},
                  strategy={"resync_interval": 1.5})
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    for _ in range(3):
        # after the push and its read-back (the GET) the connection is idle: close it
        seen = len(server.received)
        server.wait_for(lambda n=seen: any(r.method == "GET"  # type: ignore[misc]
                                           for r in server.received[n:]), 10)
        time.sleep(0.3)
        server.drop_connections()
        posts = len(server.posts())
        server.wait_post(lambda s: pids(s) == {g.pid}, timeout=10, after=posts)
    log = d.log()
    assert "push failed" not in log and "cannot read back" not in log, log[-3000:]


def test_the_proxy_variables_are_ignored_as_documented(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    """gtp5g-operator(8), ENVIRONMENT: the API is always reached directly."""
    dead = "http://127.0.0.1:9"  # nothing listens there: a proxy used would fail the push
    proxies = {name: dead for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                                       "http_proxy", "https_proxy", "all_proxy")}
    d = env.start(env={**proxies, "NO_PROXY": "", "no_proxy": ""})
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    env.api.wait_post(lambda s: pids(s) == {g.pid})
    assert "push failed" not in d.log()


def test_https_with_an_unknown_ca_is_refused(env: Env,
                                             tls_api: Tuple[FakeGthulhu, Path]) -> None:
    server, _ = tls_api
    d = env.start(api={"url": server.url})  # system CAs: the self-made CA is not among them
    d.wait_log("tls: TLS with https://127.0.0.1")
    assert "CERTIFICATE_VERIFY_FAILED" in d.log()
    assert server.posts() == [] and server.tokens_issued == 0


def test_refuses_to_run_in_another_pid_namespace(env: Env) -> None:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare to make a PID namespace")
    env.write_config()
    repo = Path(__file__).resolve().parents[2]
    # run refuses to start; check-config finds the configuration valid (it may be checked
    # anywhere) and says that run would not start here
    outs = {command: subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m",
         "gtp5g_operator", "--config", str(env.config_path), command],
        capture_output=True, text=True, timeout=30,
        env={**os.environ, "PYTHONPATH": str(repo), "RUNTIME_DIRECTORY": str(env.tmp / "r")})
        for command in ("run", "check-config")}
    assert outs["run"].returncode == 78
    assert "not in the initial PID namespace" in outs["run"].stderr
    check = outs["check-config"]
    assert check.returncode == 0 and check.stdout == "ok\n"
    assert check.stderr.startswith("warning: run would not start here: this process is not "
                                   "in the initial PID namespace")


def test_a_reload_that_disallows_the_pid_namespace_is_rejected(env: Env) -> None:
    """Run refuses to start in a PID namespace unless trace.allow_pid_namespace; a
    reload that turned it off was applied anyway, and the daemon went on in a namespace
    it would refuse (its /proc names other tasks than the trace's IDs)."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare to make a PID namespace")
    env.write_config(trace={"pipe": str(env.trace_pipe), "allow_pid_namespace": True})
    d = DaemonProcess(env.config_path, env.notify, env.tmp / "ns.log",
                      prefix=("unshare", "--pid", "--fork", "--mount-proc", "--kill-child"))
    env.daemons.append(d)
    ready = env.notify.wait("READY", "1", timeout=30)
    # the daemon is unshare's child (PID 1 of the new namespace)
    inner = int(Path(f"/proc/{d.pid}/task/{d.pid}/children").read_text().split()[0])
    env.write_config()  # allow_pid_namespace back to its default, false
    os.kill(inner, signal.SIGHUP)
    env.notify.wait("READY", "1", after=env.notify.all().index(ready) + 1, timeout=20)
    assert "reload rejected, keeping the running configuration: this process is not in " \
        "the initial PID namespace" in d.log(), d.log()
    assert d.proc.poll() is None
    os.kill(inner, signal.SIGTERM)
    assert d.proc.wait(20) == 0, d.log()


def hang_once_verified(env: Env) -> None:
    """The first push made and read back (so no detection or read-back is pending); then
    the API hangs: it takes requests and never answers."""
    env.api.wait_post(lambda s: True)
    state = env.tmp / "run" / "state.json"
    wait_until(lambda: state.exists() and json.loads(state.read_text())["boost"]["verified"])
    env.api.fault = "hang"


@pytest.mark.parametrize("clear", [False, True])
def test_a_stop_signal_ends_a_push_waiting_on_an_api_that_hangs(
        env: Env, gnb: Callable[..., GnbProcess], clear: bool) -> None:
    """A stop during a push stops within 2 s as any other (the clear on stop gets its
    1.5 s).  It used to wait for the push's api.timeout: 60 s is allowed, past the
    unit's TimeoutStopSec=10s, and systemd's SIGKILL left no clear and stale files."""
    d = env.start(api={"timeout": 30.0}, strategy={"resync_interval": 60.0,
                                                   "clear_on_stop": clear})
    hang_once_verified(env)
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    env.api.wait_post(lambda s: pids(s) == {g.pid}, timeout=15)  # received; never answered
    d.terminate_within(2.0)  # the clear on stop's 1.5 s and a turn
    # said at INFO, not as a failure "retrying with backoff": nothing is retried
    cut = [line for line in d.log().splitlines() if "push cut short by the stop" in line]
    assert len(cut) == 1 and " INFO " in cut[0], cut
    assert "(stopped: " in cut[0] and "cut short (stopped by SIGTERM)" in cut[0], cut
    assert "stopped by SIGTERM" in d.log()
    assert "push failed" not in d.log()
    assert "bug:" not in d.log() and "Traceback" not in d.log()


def test_a_stop_signal_during_a_reload_ends_the_push_the_reload_starts(env: Env) -> None:
    """SIGTERM while a reload reads its files, the API hanging: the reload's push (same
    loop turn) begins after the signal came, and used to wait its whole api.timeout
    (here 8 s; 60 s is allowed, past TimeoutStopSec=10s): the signal only ended a wait
    already under way."""
    d = env.start(api={"timeout": 8.0}, strategy={"resync_interval": 60.0})
    hang_once_verified(env)
    env.write_config(api={"timeout": 8.0}, strategy={"resync_interval": 60.0,
                                                     "execution_time_ns": 5_000_000})
    # drop-ins of comments: the reload reads about 2 MB, some 50 ms outside any network wait
    drop_ins = env.tmp / "config.d"
    drop_ins.mkdir()
    for name in ("10-a.toml", "20-b.toml"):
        (drop_ins / name).write_text(("# " + "x" * 97 + "\n") * 10_000)
    n = len(env.notify.all())
    d.signal(signal.SIGHUP)
    env.notify.wait("RELOADING", "1", after=n, timeout=10)
    d.terminate_within(2.0)  # the clear on stop's 1.5 s and a turn
    assert "configuration reloaded: strategy.execution_time_ns changed" in d.log()
    assert "stopped by SIGTERM" in d.log() and "Traceback" not in d.log()


def test_stop_with_clear_on_stop_is_quick_even_when_the_api_hangs(env: Env) -> None:
    d = env.start(api={"timeout": 5.0}, strategy={"clear_on_stop": True})
    env.api.wait_post(lambda s: True)
    # the push is over, its read-back (a GET after the POST) included: nothing in flight
    state = env.tmp / "run" / "state.json"
    wait_until(lambda: state.exists() and json.loads(state.read_text())["boost"]["verified"])
    env.api.fault = "hang"
    d.terminate_within(2.0)  # the clear gets 1.5 s, not api.timeout's 5 s
    assert "could not clear this host's strategies on stop (within the stop's 1.5 s): " in d.log()


def test_a_stop_that_cuts_a_push_short_clears_without_detecting_the_server_again(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    """A slow server (0.6 s an exchange, well within api.timeout) and a stop during a
    push: the stop's cut was taken for the server's timeout, which asks for detecting
    the flavor again, so the clear on stop first asked for a token and probed the
    Decision Maker route (1.8 s for three exchanges): past its 1.5 s, this host's
    strategies were left behind.  The clear is one exchange now."""
    d = env.start(api={"timeout": 5.0}, strategy={"clear_on_stop": True,
                                                   "resync_interval": 60.0})
    env.api.wait_post(lambda s: True)
    state = env.tmp / "run" / "state.json"
    wait_until(lambda: state.exists() and json.loads(state.read_text())["boost"]["verified"])
    env.api.fault, env.api.fault_delay = "slow", 0.6
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    env.api.wait_post(lambda s: pids(s) == {g.pid})  # received; answered 0.6 s later
    n = len(env.api.received)
    d.signal(signal.SIGTERM)
    assert d.proc.wait(20) == 0, d.log()
    assert [(r.method, r.path) for r in env.api.received[n:]] == [
        ("POST", "/api/v1/scheduling/strategies")], d.log()
    assert "clear_on_stop done" in d.log()
    wait_until(lambda: env.api.strategies == [], 5, "the cut push's late write cleared")


def shared_pending(pid: int) -> int:
    """The process's pending signals (a bit per signal: 1 << (N - 1))."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("ShdPnd:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no ShdPnd in /proc/{pid}/status")


def test_a_stop_after_a_burst_of_reloads_during_a_hung_push_is_taken(env: Env) -> None:
    """Thousands of SIGHUPs, each delivered (none merged by the kernel), while the loop
    waits on a hung API: the wakeup socket, whose bytes said which signals came, was
    full after some 300 and dropped the SIGTERM's byte.  The daemon never stopped
    (systemd's SIGKILL after TimeoutStopSec), and every push after that failed at
    once, "stopped by SIGTERM"."""
    d = env.start(api={"timeout": 8.0}, strategy={"resync_interval": 60.0})
    hang_once_verified(env)
    env.write_config(api={"timeout": 8.0}, strategy={"resync_interval": 60.0,
                                                     "execution_time_ns": 5_000_000})
    n = len(env.api.posts())
    d.signal(signal.SIGHUP)
    wait_until(lambda: len(env.api.posts()) > n, 10, "the reload's push (it hangs)")
    hup = 1 << (signal.SIGHUP - 1)
    for _ in range(2000):
        d.signal(signal.SIGHUP)
        wait_until(lambda: not shared_pending(d.pid) & hup, 5, "the SIGHUP delivered",
                   interval=0.0001)
    d.signal(signal.SIGTERM)
    assert d.proc.wait(10) == 0, d.log()
    assert "stopping" in d.log()
