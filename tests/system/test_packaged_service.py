"""The packaged service as its users meet it, in a container that boots systemd.

Builds the .deb, installs it with apt from the Debian archive inside a
bookworm root booted with systemd 252 as PID 1, then walks the operator's
path: enable --now, journal, detection, reload (good and broken), watchdog
restart, upgrade, stop, purge.  The tests run in file order and share one
container (each step starts from where the previous left it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from testbed.fake_gthulhu import FakeGthulhu
from testbed.harness import REPO, TraceWriter, wait_until
from testbed.tracelines import gtp5g_line
from tests.system.container import Container, why_unavailable

pytestmark = pytest.mark.system

FIFO = "/srv/debugfs/tracing/trace_pipe"
CONFIG = "/etc/gtp5g-operator/config.toml"
UNIT = "gtp5g-operator.service"
# The shipped WatchdogSec=30s would make the watchdog test last ~45 s; this
# drop-in shortens the timers only (test-time speed, same mechanism).
DROPIN = "[Service]\nWatchdogSec=6s\nTimeoutStopSec=5s\nRestartSec=1s\n"


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    why = why_unavailable()
    if why:
        pytest.skip(f"system tests: {why}")
    for tool in ("dpkg-buildpackage", "lintian"):
        if shutil.which(tool, path="/usr/bin:/usr/sbin:/bin") is None and os.geteuid() != 0:
            pytest.skip(f"system tests: {tool} missing and not root to install it")
    out = tmp_path_factory.mktemp("deb")
    r = subprocess.run([str(REPO / "packaging" / "build-deb"), str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    debs = list(out.glob("gtp5g-operator_*_all.deb"))
    assert len(debs) == 1
    lintian = [ln for ln in r.stdout.splitlines() if ln[:2] in ("E:", "W:")]
    assert lintian == [], lintian
    return debs[0]


@pytest.fixture(scope="module")
def api(keys: Dict[str, Path]) -> Iterator[FakeGthulhu]:
    server = FakeGthulhu(keys["private"].read_bytes()).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    from testbed.fake_gthulhu import make_keypair

    private, public = make_keypair(tmp_path_factory.mktemp("keys"))
    return {"private": private, "public": public}


@pytest.fixture(scope="module")
def box(deb: Path) -> Iterator[Container]:
    c = Container()
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


def journal(box: Container) -> List[Dict[str, Any]]:
    out = sh(box, f"journalctl -u {UNIT} -o json --no-pager")
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def config_text(api_url: str, execution_time_ns: int = 20_000_000) -> str:
    # The container has its own PID namespace and the FIFO speaks its IDs.
    return (f'[trace]\npipe = "{FIFO}"\nallow_pid_namespace = true\n'
            f'[api]\nurl = "{api_url}"\ntimeout = 2.0\n'
            f'[strategy]\nexecution_time_ns = {execution_time_ns}\nliveness_interval = 1.0\n'
            f'resync_interval = 3.0\n')


def pids_of(strategies: List[dict]) -> set:
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


def test_apt_install_resolves_from_the_archive_and_does_not_start(box: Container,
                                                                  deb: Path) -> None:
    box.run(f"apt-get install -y -q /root/{deb.name}", timeout=900)
    assert sh(box, "dpkg-query -W -f '${Status}' gtp5g-operator") == "install ok installed"
    assert sh(box, "python3 -c 'import jwt, cryptography, sdnotify; print(1)'").strip() == "1"
    assert sh(box, f"systemctl is-enabled {UNIT}", check=False).strip() == "disabled"
    assert sh(box, f"systemctl is-active {UNIT}", check=False).strip() == "inactive"
    assert sh(box, "gtp5g-operator --version").startswith("gtp5g-operator ")
    man = sh(box, "zcat /usr/share/man/man8/gtp5g-operator.8.gz")
    assert ".SH NAME\ngtp5g-operator \\- keep Gthulhu" in man
    # the shipped conffile is valid as is (its key file is what is missing)
    out = box.run("gtp5g-operator check-config", check=False)
    assert out.returncode == 1 and "jwt_public_key.pem: cannot read public key" in out.stderr


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
    spoof = next(p for m, p in by_text.items() if m.startswith("match.exe and match.uid"))
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


def test_upgrade_keeps_the_edited_config(box: Container, deb: Path, tmp_path: Path) -> None:
    edited = box.path(CONFIG).read_text()
    newer = repack_with_version(deb, "0.1.0+upgrade1", tmp_path)
    shutil.copy(newer, box.path("/root/") / newer.name)
    box.run(f"apt-get install -y -q /root/{newer.name}", timeout=600)
    assert sh(box, "dpkg-query -W -f '${Version}' gtp5g-operator") == "0.1.0+upgrade1"
    assert box.path(CONFIG).read_text() == edited
    assert sh(box, f"systemctl is-active {UNIT}").strip() == "active"


def test_stop_is_clean(box: Container) -> None:
    box.run(f"systemctl stop {UNIT}")
    assert show(box, "ActiveState") == "inactive"
    assert show(box, "Result") == "success"
    assert any(e["MESSAGE"] == "stopping" for e in journal(box))


def test_purge_leaves_nothing_behind(box: Container) -> None:
    box.run("apt-get purge -y -q gtp5g-operator", timeout=600)
    assert sh(box, "dpkg-query -W -f '${Status}' gtp5g-operator 2>/dev/null", check=False
              ).strip() in ("", "unknown ok not-installed")
    for path in ("/etc/gtp5g-operator", "/usr/bin/gtp5g-operator", f"/lib/systemd/system/{UNIT}",
                 "/usr/lib/python3/dist-packages/gtp5g_operator", "/var/lib/gtp5g-operator",
                 "/var/lib/private/gtp5g-operator", "/run/gtp5g-operator",
                 "/usr/share/man/man8/gtp5g-operator.8.gz"):
        assert not box.path(path).exists(), path


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

