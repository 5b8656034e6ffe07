"""The packaged service as its users meet it, in a container that boots systemd.

The .deb is built once per session (conftest.py) and the same file is
installed with apt from the Debian archive into each suite's root, booted
with its own systemd as PID 1: bookworm (Debian 12, systemd 252) and trixie
(Debian 13, systemd 257).  Each suite walks the operator's path: install
(does not start), the unit's sandbox rating, enable --now, journal,
detection, reload (good and broken), watchdog restart, upgrade, stop, purge.
The tests run in file order, suite after suite, and share one container per
suite (each step starts from where the previous left it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set

import pytest

from testbed.fake_gthulhu import FakeGthulhu
from testbed.harness import REPO, TraceWriter, wait_until
from testbed.tracelines import gtp5g_line
from tests.system.conftest import FINDINGS
from tests.system.container import KNOWN, Container

pytestmark = pytest.mark.system

FIFO = "/srv/debugfs/tracing/trace_pipe"
CONFIG = "/etc/gtp5g-operator/config.toml"
UNIT = "gtp5g-operator.service"
# The shipped WatchdogSec=30s would make the watchdog test last ~45 s; this
# drop-in shortens the timers only (test-time speed, same mechanism).
DROPIN = "[Service]\nWatchdogSec=6s\nTimeoutStopSec=5s\nRestartSec=1s\n"


# `systemd-analyze security` rating of the shipped unit: at most this (README, Sandbox)
MAX_EXPOSURE = 2.0


@pytest.fixture(scope="module")
def api(suite: str, keys: Dict[str, Path]) -> Iterator[FakeGthulhu]:
    """One API per suite: each walk counts its own posts from zero."""
    server = FakeGthulhu(keys["private"].read_bytes()).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    from testbed.fake_gthulhu import make_keypair

    private, public = make_keypair(tmp_path_factory.mktemp("keys"))
    return {"private": private, "public": public}


@pytest.fixture(scope="module")
def box(suite: str, deb: Path) -> Iterator[Container]:
    c = Container(suite=suite)
    try:
        c.boot()
        shutil.copy(deb, c.path("/root/") / deb.name)
        shutil.copy(REPO / "testbed" / "gnb_sim.py", c.path("/root/gnb_sim.py"))
        c.run("apt-get update -q", timeout=600)
        yield c
    finally:
        init = c.init_pid
        c.stop()
    assert init and not Path(f"/proc/{init}").exists(), "container init survived teardown"


def sh(box: Container, command: str, check: bool = True) -> str:
    return box.run(command, check=check).stdout


def show(box: Container, prop: str) -> str:
    return sh(box, f"systemctl show -p {prop} --value {UNIT}").strip()


def show_manager(box: Container, prop: str) -> str:
    return sh(box, f"systemctl show -p {prop} --value").strip()


def journal(box: Container) -> List[Dict[str, Any]]:
    out = sh(box, f"journalctl -u {UNIT} -o json --no-pager")
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def config_text(api_url: str, execution_time_ns: int = 20_000_000, listen: str = "") -> str:
    # The container has its own PID namespace and the FIFO speaks its IDs.
    text = (f'[trace]\npipe = "{FIFO}"\nallow_pid_namespace = true\n'
            f'[api]\nurl = "{api_url}"\ntimeout = 2.0\n'
            f'[strategy]\nexecution_time_ns = {execution_time_ns}\nliveness_interval = 1.0\n'
            f'resync_interval = 3.0\n')
    return text + (f'[metrics]\nlisten = "{listen}"\n' if listen else "")


def pids_of(strategies: List[Dict[str, Any]]) -> Set[int]:
    return {s["pid"] for s in strategies}


class Gnb:
    """A process named nr-gnb (with a thread) running inside the container."""

    def __init__(self, box: Container) -> None:
        self.proc = box.popen("exec python3 /root/gnb_sim.py --name nr-gnb "
                              "--thread nr-gnb-rlc")
        assert self.proc.stdout is not None
        info = json.loads(self.proc.stdout.readline())
        self.pid, self.tid = info["pid"], info["threads"]["nr-gnb-rlc"]

    def lines(self) -> str:
        return gtp5g_line("<...>", self.pid, self.pid) + gtp5g_line("nr-gnb-rlc", self.tid,
                                                                     self.pid)


@pytest.fixture(scope="module")
def gnb(box: Container) -> Iterator[Gnb]:
    g = Gnb(box)
    yield g
    g.proc.kill()


def feed(box: Container, text: str) -> None:
    w = TraceWriter(box.path(FIFO))
    w.open()  # blocks until the daemon has the FIFO open
    w.write(text)
    w.close()


# --- the path of a user ---------------------------------------------------------------


def test_the_root_boots_its_own_systemd(box: Container, suite: str) -> None:
    version = sh(box, "systemctl --version").split()
    assert version[0] == "systemd" and int(version[1]) == KNOWN[suite].systemd, version[:3]
    assert sh(box, "readlink /proc/1/exe").strip().endswith("/systemd")
    release = dict(line.split("=", 1) for line in sh(box, "cat /etc/os-release").splitlines()
                   if "=" in line)
    assert release["VERSION_CODENAME"] == suite
    tainted = show_manager(box, "Tainted")
    FINDINGS.setdefault(suite, []).append(
        f"{release['PRETTY_NAME'].strip(chr(34))}, systemd {version[1]} {version[2]} as PID 1"
        + (f" (tainted: {tainted})" if tainted else ""))


def test_apt_install_resolves_from_the_archive_and_does_not_start(box: Container, suite: str,
                                                                  deb: Path) -> None:
    box.run(f"apt-get install -y -q /root/{deb.name}", timeout=900)
    versions = sh(box, "dpkg-query -W -f '${Package} ${Version}, ' python3 python3-jwt "
                  "python3-cryptography python3-sdnotify")
    FINDINGS.setdefault(suite, []).append(f"installed with {versions.rstrip(', ')}")
    # python3 (>= 3.11) | python3-tomli: tomli comes in exactly where python3 has no tomllib
    has_tomllib = sh(box, "python3 -c 'import sys; print(sys.version_info >= (3, 11))'").strip()
    tomli = sh(box, "dpkg-query -W -f '${Status}' python3-tomli 2>/dev/null", check=False).strip()
    assert (tomli == "install ok installed") == (has_tomllib == "False"), (has_tomllib, tomli)
    assert sh(box, "dpkg-query -W -f '${Status}' gtp5g-operator") == "install ok installed"
    assert sh(box, "python3 -c 'import jwt, cryptography, sdnotify; print(1)'").strip() == "1"
    assert sh(box, f"systemctl is-enabled {UNIT}", check=False).strip() == "disabled"
    assert sh(box, f"systemctl is-active {UNIT}", check=False).strip() == "inactive"
    assert sh(box, "gtp5g-operator --version").startswith("gtp5g-operator ")
    man = sh(box, "zcat /usr/share/man/man8/gtp5g-operator.8.gz")
    assert ".SH NAME\ngtp5g-operator \\- keep Gthulhu" in man
    # the shipped conffile is valid as is (its key file is what is missing): EX_CONFIG
    out = box.run("gtp5g-operator check-config", check=False)
    assert out.returncode == 78 and "jwt_public_key.pem: cannot read public key" in out.stderr


def test_the_unit_sandbox_rates_ok(box: Container, suite: str) -> None:
    """systemd-analyze security of the installed unit, by this suite's systemd."""
    # --offline (the unit file as written) came with systemd 250; before, ask the manager
    how = (f"--offline=yes {show(box, 'FragmentPath')}" if KNOWN[suite].systemd >= 250
           else UNIT)
    r = box.run(f"systemd-analyze security {how}", check=False)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", r.stdout)
    assert found, r.stdout[-2000:] + r.stderr[-2000:]
    exposure = float(found.group(1))
    # each "✗ Setting=   description   0.2" line: what costs points
    costs = [f"{line.split()[1]} {line.split()[-1]}" for line in r.stdout.splitlines()
             if line.startswith("\u2717")]
    FINDINGS.setdefault(suite, []).append(
        f"systemd-analyze security {how.split()[0]}: {exposure} {found.group(2)} "
        f"(costs: {', '.join(costs)})")
    assert exposure <= MAX_EXPOSURE, r.stdout


def test_enable_now_runs_and_journals_with_levels(box: Container, api: FakeGthulhu,
                                                  keys: Dict[str, Path]) -> None:
    shutil.copy(keys["public"], box.path("/etc/gtp5g-operator/jwt_public_key.pem"))
    box.path(CONFIG).write_text(config_text(api.url))
    box.run(f"mkdir -p {os.path.dirname(FIFO)} && mkfifo -m 0600 {FIFO}")
    dropin = box.path(f"/etc/systemd/system/{UNIT}.d")
    dropin.mkdir(parents=True)
    (dropin / "test-timers.conf").write_text(DROPIN)
    box.run(f"systemctl daemon-reload && systemctl enable --now {UNIT}")
    assert sh(box, f"systemctl is-active {UNIT}").strip() == "active"
    api.wait_post(lambda s: s == [], timeout=10)  # first push: the empty set
    entries = wait_until(lambda: [e for e in journal(box) if "starting:" in e["MESSAGE"]]
                         and journal(box), 10, "start-up line in the journal")
    by_text = {e["MESSAGE"]: e.get("PRIORITY") for e in entries}
    start = next(p for m, p in by_text.items() if m.startswith("gtp5g-operator 0."))
    spoof = next(p for m, p in by_text.items() if m.startswith("match.uid is empty"))
    assert (start, spoof) == ("6", "4")  # info and warning, from the <N> prefixes
    assert "STATUS" not in show(box, "StatusText") and "tracking 0 process" in show(
        box, "StatusText")


def test_nr_gnb_in_the_container_reaches_the_api(box: Container, api: FakeGthulhu,
                                                 gnb: Gnb) -> None:
    feed(box, gnb.lines())
    api.wait_post(lambda s: pids_of(s) == {gnb.pid, gnb.tid}, timeout=10)
    assert any(e["MESSAGE"].startswith(f"process {gnb.pid} (nr-gnb") for e in journal(box))
    status = wait_until(lambda: str(gnb.tid) in (out := sh(box, "gtp5g-operator status"))
                        and out, 10, "status showing the process")
    row = next(line for line in status.splitlines() if line.startswith(str(gnb.pid)))
    assert row.split()[1] == "nr-gnb"


def test_the_sandboxed_service_sees_the_kernels_last_task_id(box: Container) -> None:
    """The tracker reads /proc/sys/kernel/ns_last_pid at each turn, so that a task ID
    handed out again is judged again at once (a gNB on a recycled PID, a stranger on a
    dead gNB thread's ID).  The unit's ProcSubset=pid hid /proc/sys: under the unit
    that check did nothing, and only the liveness pass caught either."""
    main_pid = show(box, "MainPID")
    r = box.run(f"nsenter -t {main_pid} -m cat /proc/sys/kernel/ns_last_pid", check=False)
    assert r.returncode == 0 and r.stdout.strip().isdigit(), (r.stdout, r.stderr)


def test_reload_applies_a_new_time_slice(box: Container, api: FakeGthulhu, gnb: Gnb) -> None:
    box.path(CONFIG).write_text(config_text(api.url, execution_time_ns=5_000_000))
    n = len(api.posts())
    box.run(f"systemctl reload {UNIT}")
    post = api.wait_post(lambda s: bool(s) and s[0]["execution_time"] == 5_000_000,
                         timeout=10, after=n)
    assert pids_of(post.body["strategies"]) == {gnb.pid, gnb.tid}


def test_reload_with_a_broken_config_fails_and_keeps_the_old(box: Container,
                                                             api: FakeGthulhu) -> None:
    box.path(CONFIG).write_text(config_text(api.url).replace("= 20000000", '= "20ms"'))
    r = box.run(f"systemctl reload {UNIT}", check=False)
    assert r.returncode != 0
    assert sh(box, f"systemctl is-active {UNIT}").strip() == "active"
    errors = [e["MESSAGE"] for e in journal(box) if e.get("PRIORITY") == "3"]
    assert any("strategy.execution_time_ns: expected a positive integer" in m for m in errors)
    n = len(api.posts())
    post = api.wait_post(lambda s: bool(s), timeout=10, after=n)  # the next resync
    assert post.body["strategies"][0]["execution_time"] == 5_000_000
    box.path(CONFIG).write_text(config_text(api.url, execution_time_ns=5_000_000))


def test_watchdog_restarts_a_stopped_daemon(box: Container, api: FakeGthulhu,
                                            gnb: Gnb) -> None:
    restarts = int(show(box, "NRestarts"))
    main_pid = show(box, "MainPID")
    box.run(f"kill -STOP {main_pid}")
    wait_until(lambda: int(show(box, "NRestarts")) > restarts, 30, "a watchdog restart")
    wait_until(lambda: show(box, "ActiveState") == "active" and show(box, "MainPID") not in (
        "0", main_pid), 20, "the restarted daemon")
    assert any("Watchdog timeout" in e["MESSAGE"] for e in journal(box)
               if e.get("_PID") == "1" or e.get("SYSLOG_IDENTIFIER") == "systemd")
    n = len(api.posts())
    feed(box, gnb.lines())
    api.wait_post(lambda s: pids_of(s) == {gnb.pid, gnb.tid}, timeout=10, after=n)


def test_health_endpoint_runs_under_the_sandbox_without_capabilities(
        box: Container, api: FakeGthulhu, gnb: Gnb) -> None:
    port = free_port()  # the container shares the host's network
    box.path(CONFIG).write_text(config_text(api.url, 5_000_000, f"127.0.0.1:{port}"))
    box.run(f"systemctl reload {UNIT}")
    feed(box, gnb.lines())
    body = wait_until(lambda: (b := health(port)) and b.get("tracked_tasks") == 2 and b, 20,
                      "/health of the sandboxed service")
    assert body["status"] == "ok" and body["last_push"]["ok"] is True
    main_pid = show(box, "MainPID")
    child = sh(box, f"cat /proc/{main_pid}/task/{main_pid}/children").split()
    assert len(child) == 1, child  # the endpoint process
    status = sh(box, f"cat /proc/{child[0]}/status")
    caps = dict(line.split(":\t", 1) for line in status.splitlines() if line.startswith("Cap"))
    assert int(caps["CapEff"], 16) == 0 and int(caps["CapAmb"], 16) == 0, caps
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert b"gtp5g_operator_tracked_tasks 2.0" in r.read()


def test_doctor_inside_explains_what_it_sees(box: Container, api: FakeGthulhu) -> None:
    out = box.run("gtp5g-operator doctor --json --window 0.5", check=False)
    assert out.stdout.strip(), f"doctor exited {out.returncode}: {out.stderr[-3000:]}"
    checks = {c["name"]: c for c in json.loads(out.stdout)}
    assert checks["config"]["level"] == "ok" and checks["api token"]["level"] == "ok"
    assert checks["service"]["level"] == "ok"
    # asked of the kernel as the sandboxed service: its dynamic user and two capabilities
    access = checks["trace access"]
    assert access["level"] == "ok", access
    assert access["saw"].startswith("as the running service (PID "), access
    assert " with CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE may read " in access["saw"], access
    # this kernel has no sched_ext: strategies have no effect, which is a failure
    assert checks["sched_ext"]["level"] == "fail" and out.returncode == 1
    # what the installed unit hides from the service, as the real systemctl says it
    hidden = box.run("python3 -c 'from gtp5g_operator.commands.doctor.service import "
                     "unit_hidden; print(dict(unit_hidden(\"systemctl\")))'").stdout
    assert "'/tmp': 'PrivateTmp=yes'" in hidden and "'/root': 'ProtectHome=yes'" in hidden, hidden
    assert not any("hides that place" in c["saw"] for c in checks.values())  # all under /etc


def test_the_sandboxed_service_reads_the_real_ring_buffer_raw(
        box: Container, api: FakeGthulhu) -> None:
    """The container sees the host's tracefs (/sys is bind-mounted): the unit's
    sandbox must let the service open trace_pipe and every per-CPU raw file."""
    mounted_here = False
    # mounts are the container's own: look from inside
    if box.run("test -e /sys/kernel/tracing/trace_pipe", check=False).returncode:
        if box.run("mount -t tracefs nodev /sys/kernel/tracing", check=False).returncode:
            pytest.skip("tracefs cannot be mounted in the container")
        mounted_here = True
    box.path(CONFIG).write_text(config_text(api.url).replace(f'pipe = "{FIFO}"', 'pipe = "auto"'))
    box.run(f"systemctl restart {UNIT}")
    try:
        state = wait_until(lambda: (s := state_json(box)) and s["trace"]["open"] and s, 15,
                           "the service reading the real trace buffer")
        if state["trace"]["format"] != "raw":
            raise AssertionError(f"not raw: {journal_text(box)[-2000:]}")
        before = state["trace"]["lines"]
        box.run("for i in 1 2 3; do echo gtp5g-sandbox-test > "
                "/sys/kernel/tracing/trace_marker; done")
        wait_until(lambda: state_json(box)["trace"]["lines"] >= before + 3, 15,
                   "the marker records counted")
    finally:  # back to the FIFO: the host's ring is shared with other tools
        box.path(CONFIG).write_text(config_text(api.url))
        box.run(f"systemctl restart {UNIT}")
        if mounted_here:
            box.run("umount /sys/kernel/tracing", check=False)


def state_json(box: Container) -> Dict[str, Any]:
    out = box.run("cat /run/gtp5g-operator/state.json", check=False)  # /run: the container's
    try:
        return dict(json.loads(out.stdout)) if out.returncode == 0 else {}
    except ValueError:
        return {}


def journal_text(box: Container) -> str:
    return "\n".join(e["MESSAGE"] for e in journal(box) if isinstance(e.get("MESSAGE"), str))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def health(port: int) -> Dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return dict(json.loads(r.read()))
    except urllib.error.HTTPError as err:
        return dict(json.loads(err.read()))
    except (urllib.error.URLError, OSError):
        return {}


def test_upgrade_keeps_the_edited_config(box: Container, deb: Path, tmp_path: Path) -> None:
    edited = box.path(CONFIG).read_text()
    version = sh(box, "dpkg-query -W -f '${Version}' gtp5g-operator") + "+upgrade1"
    newer = repack_with_version(deb, version, tmp_path)
    shutil.copy(newer, box.path("/root/") / newer.name)
    box.run(f"apt-get install -y -q /root/{newer.name}", timeout=600)
    assert sh(box, "dpkg-query -W -f '${Version}' gtp5g-operator") == version
    assert box.path(CONFIG).read_text() == edited
    assert sh(box, f"systemctl is-active {UNIT}").strip() == "active"


def test_stop_is_clean(box: Container) -> None:
    box.run(f"systemctl stop {UNIT}")
    assert show(box, "ActiveState") == "inactive"
    assert show(box, "Result") == "success"
    assert any(e["MESSAGE"] == "stopping" for e in journal(box))


def test_purge_leaves_only_the_admins_key(box: Container) -> None:
    out = sh(box, "apt-get purge -y -q gtp5g-operator 2>&1")
    assert sh(box, "dpkg-query -W -f '${Status}' gtp5g-operator 2>/dev/null", check=False
              ).strip() in ("", "unknown ok not-installed")
    for path in (CONFIG, "/usr/bin/gtp5g-operator", f"/lib/systemd/system/{UNIT}",
                 f"/usr/lib/systemd/system/{UNIT}",
                 "/usr/lib/python3/dist-packages/gtp5g_operator", "/var/lib/gtp5g-operator",
                 "/var/lib/private/gtp5g-operator", "/run/gtp5g-operator",
                 "/usr/share/man/man8/gtp5g-operator.8.gz"):
        assert not box.path(path).exists(), path
    # the key was the admin's (copied in above): kept, and purge says so
    key = "/etc/gtp5g-operator/jwt_public_key.pem"
    assert box.path(key).is_file()
    assert f"purge leaves your own files: {key}" in out, out


def repack_with_version(deb: Path, version: str, tmp: Path) -> Path:
    """The same package under a higher version: what an upgrade installs."""
    tree = tmp / "tree"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    control.write_text("".join(
        f"Version: {version}\n" if line.startswith("Version:") else line
        for line in control.read_text().splitlines(keepends=True)))
    out = tmp / f"gtp5g-operator_{version}_all.deb"
    subprocess.run(["dpkg-deb", "-b", "--root-owner-group", str(tree), str(out)], check=True,
                   capture_output=True)
    return out

