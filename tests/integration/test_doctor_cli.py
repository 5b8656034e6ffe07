"""`gtp5g-operator doctor` as a program: next to the real daemon (which must still
receive every trace line), its JSON, its exit status, and its time bound when the API
hangs.  The roots it inspects are injected: a fake sysfs, per-CPU counters beside the
FIFO that stands in for trace_pipe, the daemon's runtime directory, a stand-in
systemctl."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest

from testbed.fake_gthulhu import FakeGthulhu
from testbed.harness import REPO, SYSTEM_PYTHON, GnbProcess, public_copy, wait_until, write_config
from testbed.tracelines import gtp5g_line
from tests.conftest import Env, base_config

# Other tests on this machine may run processes named nr-gnb; a name nobody runs keeps
# the targets section (and so the number of lines) the same from one run to the next.
NOBODYS = {"comm": ["dgnb-nobodys"]}
GROUP_ORDER = ["config", "pid namespace", "trace source", "match rules", "api connection",
               "sched_ext", "unit", "service"]


def sysfs(tmp_path: Path, ops: str = "gthulhu") -> Path:
    base = tmp_path / "sys" / "kernel" / "sched_ext"
    (base / "root").mkdir(parents=True)
    (base / "state").write_text("enabled\n" if ops else "disabled\n")
    (base / "root" / "ops").write_text(ops + "\n")
    return tmp_path / "sys"


def fake_systemctl(tmp_path: Path, says: str = "active") -> Dict[str, str]:
    """The environment for a doctor that finds this systemctl first on its PATH."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "systemctl").write_text(f"#!/bin/sh\necho {says}\n")
    (bindir / "systemctl").chmod(0o755)
    return {"PATH": f"{bindir}:{os.environ['PATH']}"}


class Counters:
    """per_cpu/cpuN/stats beside the FIFO, as tracefs has them beside trace_pipe."""

    def __init__(self, tracing: Path, cpus: int = 2) -> None:
        self.tracing = tracing
        self.read = [0] * cpus
        for cpu in range(cpus):
            (tracing / "per_cpu" / f"cpu{cpu}").mkdir(parents=True)
            self.write(cpu)

    def write(self, cpu: int) -> None:
        # replaced whole, as the kernel's file reads: doctor must never see half of it
        stats = self.tracing / "per_cpu" / f"cpu{cpu}" / "stats"
        tmp = stats.with_suffix(".tmp")
        tmp.write_text(
            f"entries: 0\noverrun: 0\ncommit overrun: 0\nbytes: 0\noldest event ts: 1.0\n"
            f"now ts: 2.0\ndropped events: 0\nread events: {self.read[cpu]}\n")
        tmp.replace(stats)

    def advance(self, cpu: int, n: int) -> None:
        self.read[cpu] += n
        self.write(cpu)


def doctor(config: Path, *args: str, env: Dict[str, str] | None = None,
           timeout: float = 30) -> Tuple[int, str, float]:
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "gtp5g_operator", "doctor", "--config",
                          str(config), *args], cwd=REPO, capture_output=True, text=True,
                         timeout=timeout,
                         env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    assert out.stderr == "", out.stderr  # findings are check lines, never log lines
    return out.returncode, out.stdout, time.monotonic() - started


def by_name(stdout: str) -> Dict[str, Dict[str, Any]]:
    """The checks by name (and subject, for a repeated check: "target 4242")."""
    parsed = json.loads(stdout)
    assert isinstance(parsed, list)
    assert all(list(c) == ["name", "subject", "level", "saw", "advice"] for c in parsed)
    assert all(c["level"] in ("ok", "warn", "fail") for c in parsed)
    assert not [c for c in parsed if any(ch.isdigit() for ch in c["name"])]  # no PIDs
    return {" ".join(filter(None, (c["name"], c["subject"]))): c for c in parsed}


def state(env: Env) -> Dict[str, Any]:
    return json.loads((env.tmp / "run" / "state.json").read_text())  # type: ignore[no-any-return]


@contextmanager
def feeding(env: Env, line: str, counters: Counters) -> Iterator[List[int]]:
    """Lines keep coming while doctor runs, and show in the counters as events read;
    yields [lines written so far]."""
    written = [0]
    stop = threading.Event()

    def feed() -> None:
        while not stop.wait(0.02):
            env.writer.write(line * 10)
            written[0] += 10
            counters.advance(0, 10)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        yield written
    finally:
        stop.set()
        feeder.join()


def test_next_to_a_running_daemon_nothing_is_consumed(env: Env, tmp_path: Path,
                                                      gnb: Callable[..., GnbProcess]) -> None:
    name = "dgnb-" + secrets.token_hex(4)
    g = gnb(name=name, threads=())
    env.start(match={"comm": [name], "uid": [0]}, api={"timeout": 0.5},
              strategy={"resync_interval": 1.0})
    line = gtp5g_line(name, g.pid, g.pid)
    env.writer.write(line * 100)
    env.api.wait_post(lambda s: {x["pid"] for x in s} == {g.pid})
    with feeding(env, line, Counters(env.trace_pipe.parent)) as written:
        code, out, _ = doctor(env.config_path, "--json", "--sysfs", str(sysfs(tmp_path)),
                              "--runtime-dir", str(env.tmp / "run"), "--window", "0.5",
                              env=fake_systemctl(tmp_path))
    checks = by_name(out)
    assert code == 0 and not [c for c in checks.values() if c["level"] == "fail"], out
    assert checks["trace events"]["level"] == "ok"
    assert checks["trace events"]["saw"].split()[1:4] == ["events", "in", "0.5"]
    # judged as the running service (the test's daemon runs as root)
    assert checks["trace access"]["saw"].startswith(
        f"as the running service (PID {env.daemons[0].pid}), uid 0 with ")
    assert checks[f"target {g.pid}"]["level"] == "ok"
    assert checks["boost"]["saw"].startswith("all covered: the scheduler boosts all 1 gNB "
                                             "tasks")
    assert checks[f"cpu wait {name}"]["level"] == "ok"
    assert checks["service boost"]["level"] == "ok"  # nothing missing, nothing foreign
    assert checks["service"]["saw"].endswith(f"tracking 1 process ({g.pid})")
    assert checks["unit"]["level"] == checks["scheduler"]["level"] == "ok"
    # every line reached the daemon: doctor took none from the source
    total = 100 + written[0]
    wait_until(lambda: state(env)["trace"]["lines"] == total, 5,
               f"the daemon to count {total} lines")
    # The same host without sched_ext: what the server lists boosts nothing, and neither
    # read-back says OK beside the scheduler's FAIL (both did).
    _, out, _ = doctor(env.config_path, "--json", "--sysfs", str(tmp_path / "no-sched-ext"),
                       "--runtime-dir", str(env.tmp / "run"), "--window", "0",
                       env=fake_systemctl(tmp_path))
    checks = by_name(out)
    assert checks["sched_ext"]["level"] == "fail"
    assert checks["boost"]["level"] == checks["service boost"]["level"] == "warn", out
    assert "see the scheduler check" in checks["service boost"]["advice"]


def test_json_text_and_exit_status_when_something_fails(env: Env, tmp_path: Path) -> None:
    env.write_config(match=NOBODYS)
    args = ["--sysfs", str(tmp_path / "no-sched-ext"), "--runtime-dir", str(tmp_path / "run"),
            "--window", "0"]
    code, out, _ = doctor(env.config_path, "--json", *args, env=fake_systemctl(tmp_path,
                                                                               "failed"))
    checks = by_name(out)
    assert code == 1
    names = list(checks)
    assert [n for n in names if n in GROUP_ORDER] == GROUP_ORDER  # the order
    assert checks["sched_ext"]["level"] == "fail"
    assert checks["unit"]["saw"] == "gtp5g-operator.service is failed"
    assert checks["service"]["saw"] == f"not running: no {tmp_path}/run/state.json"
    code, text, _ = doctor(env.config_path, *args, env=fake_systemctl(tmp_path, "failed"))
    lines = text.splitlines()
    assert code == 1 and len(lines) == len(checks)
    assert [ln.split()[0] for ln in lines] == [c["level"].replace("fail", "FAIL")
                                               for c in checks.values()]
    assert next(ln for ln in lines if ln.startswith("FAIL  sched_ext")).endswith(
        "(6.12 or later)")


def test_exit_status_zero_when_only_warnings(env: Env, tmp_path: Path) -> None:
    env.start(api={"timeout": 0.5}, strategy={"resync_interval": 1.0}, match=NOBODYS)
    env.api.wait_post(lambda s: True)  # the first push (of the empty set)
    code, out, _ = doctor(env.config_path, "--json", "--sysfs", str(sysfs(tmp_path)),
                          "--runtime-dir", str(env.tmp / "run"), "--window", "0",
                          env=fake_systemctl(tmp_path))
    levels: List[str] = [c["level"] for c in by_name(out).values()]
    assert code == 0 and "warn" in levels and "fail" not in levels


def test_an_edit_the_service_has_not_loaded_is_named(env: Env, tmp_path: Path) -> None:
    """doctor checks the files; the service runs what it loaded.  After an edit not yet
    reloaded (or whose reload was rejected) every check was about settings the service
    did not run, and nothing said so: an api.url moved in the file had its server
    probed while the service wrote elsewhere.  An edit copied with its source's
    modification time (older than the load) is one too: doctor said "unchanged since"."""
    env.start(match=NOBODYS)
    env.api.wait_post(lambda s: True)
    args = ["--json", "--sysfs", str(sysfs(tmp_path)), "--runtime-dir", str(env.tmp / "run"),
            "--window", "0"]
    check = by_name(doctor(env.config_path, *args, env=fake_systemctl(tmp_path))[1])
    assert check["service config"]["level"] == "ok", check["service config"]
    drop_in = env.config_path.parent / "config.d" / "50-site.toml"
    drop_in.parent.mkdir()
    drop_in.write_text("[strategy]\nexecution_time_ns = 5000000\n")
    check = by_name(doctor(env.config_path, *args, env=fake_systemctl(tmp_path))[1])
    assert check["service config"]["level"] == "warn"
    assert f"changed since: {drop_in}: it runs the settings of before" in \
        check["service config"]["saw"]
    assert "systemctl reload gtp5g-operator" in check["service config"]["advice"]
    n = len(env.notify.all())
    env.daemons[0].signal(signal.SIGHUP)
    env.notify.wait("READY", "1", after=n)
    check = by_name(doctor(env.config_path, *args, env=fake_systemctl(tmp_path))[1])
    assert check["service config"]["level"] == "ok", check["service config"]
    # An edit whose modification time is older than the load: a copy that keeps the
    # source's (rsync -a, cp -p, tar x, install -p), here of a file edited an hour ago.
    drop_in.write_text("[strategy]\nexecution_time_ns = 6000000\n")
    hour_ago = time.time() - 3600
    os.utime(drop_in, (hour_ago, hour_ago))
    check = by_name(doctor(env.config_path, *args, env=fake_systemctl(tmp_path))[1])
    assert check["service config"]["level"] == "warn", check["service config"]
    assert f"changed since: {drop_in}: it runs" in check["service config"]["saw"]


@pytest.mark.parametrize("timeout", [0.5, 1.0])
def test_a_hanging_api_cannot_hold_doctor_up(env: Env, tmp_path: Path, api: FakeGthulhu,
                                             timeout: float) -> None:
    api.fault = "hang"
    env.write_config(api={"timeout": timeout}, match=NOBODYS)
    code, out, took = doctor(env.config_path, "--json", "--window", "0",
                             "--sysfs", str(sysfs(tmp_path)))
    checks = by_name(out)
    assert code == 1 and checks["api flavor"]["level"] == "fail"
    assert f"(api.timeout {timeout:g} s)" in checks["api flavor"]["saw"]
    assert took < 2 * timeout + 1.5, took  # + the interpreter's start and the other checks


def test_cpu_wait_of_a_live_gnb_is_sampled_over_the_window(
        env: Env, tmp_path: Path, gnb: Callable[..., GnbProcess]) -> None:
    """No service runs: doctor reads the live gNB's threads' schedstat at both ends of
    its window and names the worst task.  How long a thread waits depends on this host's
    load, so the level is checked against the share doctor reports."""
    name = "dgnb-" + secrets.token_hex(4)
    gnb(name=name, threads=(f"{name}-r",), burn=(500, 10.0))
    env.write_config(match={"comm": [name]})
    _, out, _ = doctor(env.config_path, "--json", "--window", "1", "--max-wait", "0",
                       "--sysfs", str(sysfs(tmp_path)), "--runtime-dir", str(tmp_path / "run"),
                       env=fake_systemctl(tmp_path))
    wait = by_name(out)[f"cpu wait {name}"]
    share = re.match(rf"{name}: waited ([0-9.]+) % of its runnable time for a CPU over the "
                     r"last 1 s \(worst task ", wait["saw"])
    assert share, wait["saw"]
    assert wait["saw"].endswith(" (sampled by doctor); the scheduler does NOT boost its worst "
                                f"task {wait['saw'].split()[-1]}")
    assert wait["level"] == ("warn" if float(share.group(1)) > 0 else "ok")


def test_help_names_the_injectable_roots() -> None:
    out = subprocess.run([sys.executable, "-m", "gtp5g_operator", "doctor", "--help"],
                         cwd=REPO, capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    flat = " ".join(out.stdout.split())
    for flag in ("--config", "--proc", "--sysfs", "--tracefs", "--runtime-dir", "--window",
                 "--max-wait", "--json"):
        assert flag in flat
    assert flat.count("for inspecting another root or for tests") == 4
    assert "(default 40)" in flat  # --max-wait
    assert ("exit status: 0 when no check failed (warnings allowed), 1 when at least one "
            "failed, 2 when the command line is wrong.") in flat


def as_nobody(world: Path, api: FakeGthulhu, public_key: Path) -> Tuple[Path, Any]:
    """doctor run by user nobody (Debian's python3, as the package runs it) on a config
    whose trace source is root's: (the FIFO, the finished process)."""
    fifo = world / "trace_pipe"
    os.mkfifo(fifo, 0o600)  # root's, like tracefs's trace_pipe
    key = world / "key.pem"
    shutil.copy(public_key, key)
    key.chmod(0o644)
    config = write_config(world / "config.toml", **base_config(fifo, api.url, key))
    config.chmod(0o644)
    return fifo, subprocess.run(
        [SYSTEM_PYTHON, "-m", "gtp5g_operator", "doctor", "--config", str(config), "--json",
         "--window", "0", "--sysfs", str(sysfs(world)), "--runtime-dir", str(world)],
        cwd="/", user=65534, group=65534, capture_output=True, text=True, timeout=30,
        env={"PATH": os.environ["PATH"],
             "PYTHONPATH": str(public_copy(REPO / "gtp5g_operator"))})


def test_as_an_unprivileged_user_it_names_the_missing_capability(
        api: FakeGthulhu, keys: Dict[str, Path]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run doctor as another user")
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import jwt, cryptography"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"{SYSTEM_PYTHON} with jwt and cryptography is needed (Debian packages)")
    world = Path(tempfile.mkdtemp(prefix="gtp5g-doctor-"))
    try:
        world.chmod(0o755)  # nobody may search it
        fifo, out = as_nobody(world, api, keys["public"])
    finally:
        shutil.rmtree(world, ignore_errors=True)
    checks = by_name(out.stdout)
    assert out.returncode == 1, out.stderr
    access = checks["trace access"]
    assert access["level"] == "fail"  # the kernel's answer to doctor itself, and it says so
    assert access["saw"] == ("as doctor itself (not root: it cannot take the service's "
                             "identity), uid 65534 without capabilities may not read "
                             f"{fifo} ({fifo} (root:root 0600)) (the kernel's answer)")
    assert access["advice"].startswith("doctor judged its own access, not the service's")
    assert checks["exe access"]["level"] == "warn" and "uid 65534" in checks["exe access"]["saw"]
    assert checks["api token"]["level"] == "ok"  # the rest still runs


def another_root(base: Path) -> Dict[str, Path]:
    """/proc, the tracing directory and the runtime directory of another host: one nr-gnb
    (uid 1000) and a gtp5g-operator (PID 777) that tracks it."""
    proc, tracing, run = base / "proc", base / "tracing", base / "run"
    (proc / "self" / "ns").mkdir(parents=True)
    (proc / "self" / "status").write_text("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n"
                                          "CapEff:\t000001ffffffffff\n")
    os.symlink("pid:[4026531836]", proc / "self" / "ns" / "pid")
    (proc / "self" / "mountinfo").write_text(
        f"22 1 0:21 / {proc} rw - proc proc rw\n118 1 0:13 / {tracing} rw - tracefs nodev rw\n")
    gnb = proc / "4242"
    (gnb / "task" / "4242").mkdir(parents=True)
    stat = "4242 (nr-gnb) S " + " ".join(["1"] * 18 + ["99"] + ["0"] * 5) + "\n"
    for path in (gnb / "stat", gnb / "task" / "4242" / "stat"):
        path.write_text(stat)
    (gnb / "status").write_text("Tgid:\t4242\nUid:\t1000\t1000\t1000\t1000\n")
    for path in (gnb / "comm", gnb / "task" / "4242" / "comm"):
        path.write_text("nr-gnb\n")
    os.symlink("/opt/gnb/nr-gnb", gnb / "exe")
    (proc / "777").mkdir()
    (proc / "777" / "cmdline").write_bytes(b"/usr/bin/python3\0/usr/bin/gtp5g-operator\0")
    # the daemon's uid is that of its state.json (written below), as on a real host
    uid = os.geteuid()
    (proc / "777" / "status").write_text(f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t4321\t4321\t"
                                         "4321\t4321\nGroups:\t\nCapEff:\t0000000000000004\n")
    (tracing / "per_cpu" / "cpu0").mkdir(parents=True)
    (tracing / "trace_pipe").write_text("")
    (tracing / "per_cpu" / "cpu0" / "stats").write_text("entries: 0\nread events: 5\n")
    run.mkdir()
    (run / "state.json").write_text(json.dumps({
        "pid": 777, "started_at": time.time() - 60, "processes": [{"tgid": 4242}],
        "last_push": {"ok": True, "at": time.time(), "count": 1},
        "trace": {"path": str(tracing), "format": "raw", "open": True},
        "cpu_wait": {"unavailable": "", "lifetime": {}, "last_window": [{
            "process": "nr-gnb", "seconds": 60.0, "tasks": 1, "run_ns": 450_000_000,
            "wait_ns": 550_000_000, "slices": 1000, "worst": {
                "tid": 4242, "name": "nr-gnb", "run_ns": 450_000_000, "wait_ns": 550_000_000,
                "slices": 1000}}]}}))
    return {"proc": proc, "tracefs": tracing, "runtime-dir": run}


def test_another_root_is_inspected_through_the_injected_directories(
        env: Env, tmp_path: Path) -> None:
    env.write_config(trace={"pipe": "auto"}, match={"uid": [1000]})
    roots = another_root(tmp_path / "host")
    args = [f"--{name}={path}" for name, path in roots.items()]
    args += ["--sysfs", str(sysfs(tmp_path))]
    code, out, _ = doctor(env.config_path, "--json", "--window", "0", *args,
                          env=fake_systemctl(tmp_path))
    checks = by_name(out)
    assert checks["target 4242"]["saw"] == ("PID 4242 nr-gnb, uid 1000, exe /opt/gnb/nr-gnb, "
                                            "1 thread: would be boosted")
    assert checks["trace source"]["saw"] == (f"{roots['tracefs']}/trace_pipe is the kernel's "
                                             "trace_pipe")
    assert checks["tracefs"]["saw"].startswith(f"tracefs mounted at {roots['tracefs']}")
    assert checks["pid namespace"]["level"] == "ok"
    assert checks["service"]["saw"].endswith("tracking 1 process (4242)")
    assert checks["boost"]["level"] == "warn"  # the test API holds nothing for 4242
    # judged as that host's service, as its /proc says it runs
    assert checks["trace access"]["saw"].startswith(
        f"as the running service (PID 777), uid {os.geteuid()} with CAP_DAC_READ_SEARCH may "
        "read ")
    assert checks["exe access"]["level"] == "ok"  # a symlink in a directory, here
    wait = checks["cpu wait nr-gnb"]  # the service's window, judged against --max-wait
    assert wait["level"] == "warn"
    assert wait["saw"] == ("nr-gnb: waited 55.0 % of its runnable time for a CPU over the "
                           "last 60 s (worst task nr-gnb 55.0 %, 0.6 ms per scheduling), more "
                           "than --max-wait 40.0 % (the service's last window); the scheduler "
                           "does NOT boost its worst task 4242")
    assert code == 0
    code, out, _ = doctor(env.config_path, "--json", "--window", "0", "--max-wait", "60",
                          *args, env=fake_systemctl(tmp_path))
    assert by_name(out)["cpu wait nr-gnb"]["level"] == "ok"


def test_a_long_executable_path_cannot_cut_the_verdict_off_a_target(
        tmp_path: Path, gnb: Callable[..., GnbProcess]) -> None:
    """Any local user may run a program named like the gNB from a path of their own, up
    to 4 KiB long and saying what they like.  doctor's target line was cut at its end:
    the path pushed the verdict ("not boosted: its uid ... is not in match.uid") out,
    and what the path said (", 1 thread: would be boosted") was the line's last word."""
    name = "dgnb-" + secrets.token_hex(4)
    odd = tmp_path / ("x, 1 thread: would be boosted " + "a" * 200) / ("b" * 200) / ("c" * 200)
    odd.mkdir(parents=True)
    shutil.copy2(os.path.realpath(SYSTEM_PYTHON), odd / "python3")
    g = gnb(name=name, threads=(), executable=str(odd / "python3"))
    uid = os.getuid()
    config = write_config(tmp_path / "config.toml", trace={"pipe": str(tmp_path / "pipe")},
                          api={"url": "http://127.0.0.1:9", "timeout": 0.5},
                          match={"comm": [name], "uid": [uid + 1]})
    args = ["--sysfs", str(sysfs(tmp_path)), "--runtime-dir", str(tmp_path / "run"),
            "--window", "0"]
    verdict = f"1 thread: not boosted: its uid {uid} is not in match.uid"
    target = by_name(doctor(config, "--json", *args, env=fake_systemctl(tmp_path))[1])[
        f"target {g.pid}"]
    assert target["level"] == "warn" and target["saw"].startswith(f"PID {g.pid} {name}, uid")
    assert target["saw"].endswith(verdict) and "…" in target["saw"], target["saw"]
    _, text, _ = doctor(config, *args, env=fake_systemctl(tmp_path))
    line = next(ln for ln in text.splitlines() if ln.split()[:3] == ["warn", "target", str(g.pid)])
    assert line.split(" -> ")[0].endswith(verdict), line


def test_the_advice_to_pin_the_gnb_never_pins_another_users_copy(
        tmp_path: Path, gnb: Callable[..., GnbProcess]) -> None:
    """With both allow-lists empty doctor advises pinning the gNB, with an example made of
    what runs under its name: of every such process, another user's copy in /tmp too
    (match.exe = [gNB's, "/tmp/.../copy"], match.uid = [0, 65534]), to be pasted."""
    if os.geteuid() != 0 or not os.path.exists(SYSTEM_PYTHON):
        pytest.skip("needs root and a system python3 to run a process as another user")
    name = "dgnb-" + secrets.token_hex(4)
    public = Path(tempfile.mkdtemp(prefix="gtp5g-copy-"))
    try:
        os.chmod(public, 0o755)
        shutil.copy2(os.path.realpath(SYSTEM_PYTHON), public / "copy")
        the_gnb = gnb(name=name, threads=())
        gnb(name=name, threads=(), executable=str(public / "copy"), user=65534)
        config = write_config(tmp_path / "config.toml", trace={"pipe": str(tmp_path / "pipe")},
                              api={"url": "http://127.0.0.1:9", "timeout": 0.5},
                              match={"comm": [name]})
        _, out, _ = doctor(config, "--json", "--sysfs", str(sysfs(tmp_path)), "--runtime-dir",
                           str(tmp_path / "run"), "--window", "0", env=fake_systemctl(tmp_path))
    finally:
        shutil.rmtree(public, ignore_errors=True)
    checks = by_name(out)
    rules = checks["match rules"]
    assert rules["level"] == "warn" and "copy" not in rules["advice"], rules
    assert "65534" not in rules["advice"] and "own target line" in rules["advice"], rules
    assert checks[f"target {the_gnb.pid}"]["saw"].startswith(f"PID {the_gnb.pid} {name}, uid 0")


def test_the_tracefs_advice_followed_literally_finds_the_trace_source(env: Env,
                                                                      tmp_path: Path) -> None:
    """In a mount namespace of its own (the host's mounts untouched): tracefs mounted
    elsewhere than where "auto" looks, and trace.pipe naming /sys/kernel/debug/tracing
    without debugfs.  Doctor advised `set trace.pipe = "auto"` (it was "auto" already) and
    `mount -t tracefs nodev /sys/kernel/tracing` for the debugfs path (which stays
    missing); each advice, done as printed, must bring the source up."""
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("nsenter")):
        pytest.skip("needs root, unshare(1) and nsenter(1)")
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep",
                               "600"])
    try:
        def in_ns(*argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["nsenter", "-t", str(holder.pid), "-m", *argv], cwd=REPO,
                                  capture_output=True, text=True, timeout=60,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})

        wait_until(lambda: os.readlink(f"/proc/{holder.pid}/ns/mnt")
                   != os.readlink("/proc/self/ns/mnt"), 10, "the namespace")
        for point in ("/sys/kernel/debug/tracing", "/sys/kernel/debug", "/sys/kernel/tracing"):
            in_ns("umount", point)  # not mounted: fine
        elsewhere = tmp_path / "tracing-elsewhere"
        elsewhere.mkdir()
        assert in_ns("mount", "-t", "tracefs", "nodev", str(elsewhere)).returncode == 0

        fake_sys = str(sysfs(tmp_path))

        def checks_for(pipe: str) -> Dict[str, Any]:
            env.write_config(trace={"pipe": pipe}, match=NOBODYS)
            out = in_ns(sys.executable, "-m", "gtp5g_operator", "doctor", "--json",
                        "--config", str(env.config_path), "--window", "0", "--sysfs",
                        fake_sys, "--runtime-dir",
                        str(tmp_path / "run"))
            assert out.stderr == "", out.stderr
            return by_name(out.stdout)

        checks = checks_for("auto")
        advice = checks["tracefs"]["advice"]
        assert advice.startswith(f'set trace.pipe = "{elsewhere}/trace_pipe"'), advice
        checks = checks_for(f"{elsewhere}/trace_pipe")  # done as advised
        assert checks["trace source"]["level"] == checks["tracefs"]["level"] == "ok"

        # a tracing instance nobody made: not another mount stacked on that tracefs
        checks = checks_for(f"{elsewhere}/instances/never-made/trace_pipe")
        assert checks["trace source"]["advice"] == f'set trace.pipe = "{elsewhere}/trace_pipe"'
        assert in_ns("umount", str(elsewhere)).returncode == 0  # no tracefs at all now
        checks = checks_for("/sys/kernel/debug/tracing/trace_pipe")
        commands = {checks[name]["advice"].split(" (the service waits")[0]
                    for name in ("trace source", "tracefs")}
        assert len(commands) == 1, checks  # the two lines agree
        command = commands.pop()
        done = in_ns(*command.split())  # done as advised
        assert done.returncode == 0, (command, done.stderr)
        checks = checks_for("/sys/kernel/debug/tracing/trace_pipe")
        assert checks["trace source"]["level"] == checks["tracefs"]["level"] == "ok", command
    finally:
        holder.kill()
        holder.wait()
