"""A fleet host's upgrades, unattended: from the previous release, then within this one.

Per suite (bookworm, trixie), one booted container walks the path of a host
that ran the previous release (0.1.0, built at its commit as it shipped: one
.deb from bookworm for both suites) configured as 0.1.0's README said (the
conffile config.toml edited in place, the key beside it), in merge mode
beside another writer's strategy, with a real nr-gnb tracked:

1. the upgrade to this tree's package (built by the suite itself), with
   stdin at end of file as unattended-upgrades and config management run it:
   no conffile prompt, the admin's file moved to config.d/ unchanged and
   still in force, the service restarted onto 0.2.0, state and ownership
   kept, every task boosted exactly once and the other writer's entry kept;
2. a later upgrade of the now drop-in-only host to a changed package: no
   prompt, drop-ins untouched and in force, the credential from
   /etc/credstore/ loaded, the service restarted;
3. purge: what the package and the service made goes (the conffile, state,
   the migrated drop-in, the node-exporter textfile), the admin's files stay
   (key, drop-in, credential) and purge says so.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from testbed.fake_gthulhu import FakeGthulhu, make_keypair
from testbed.harness import REPO, TraceWriter, wait_until
from testbed.tracelines import gtp5g_line
from tests.system.builder import PREVIOUS_RELEASE, Built, repack
from tests.system.conftest import FINDINGS, Builds
from tests.system.container import Container

pytestmark = pytest.mark.system

ETC = "/etc/gtp5g-operator"
CONFIG = f"{ETC}/config.toml"
MIGRATED = f"{ETC}/config.d/50-migrated-from-0.1.toml"
SITE = f"{ETC}/config.d/60-site.toml"
KEY = f"{ETC}/jwt_public_key.pem"
CREDENTIAL = "/etc/credstore/gthulhu-password"
TEXTFILE = "/var/lib/prometheus/node-exporter/gtp5g_operator.prom"
STATE = "/var/lib/private/gtp5g-operator"  # StateDirectory= with DynamicUser=
OWNED = f"{STATE}/owned.json"
FIFO = "/srv/tracing/trace_pipe"
UNIT = "gtp5g-operator.service"
OTHER_WRITER = {"priority": True, "execution_time": 1_000_000, "pid": 4_000_001}
# dpkg's words when it would ask about a conffile (it fails without a terminal)
PROMPT = re.compile(r"Configuration file .* ==> |conffile prompt|\(Y/I/N/O/D/Z\)")


@pytest.fixture(scope="module")
def previous(builds: Builds) -> Built:
    return builds.previous_release()


@pytest.fixture(scope="module")
def current(suite: str, builds: Builds) -> Built:
    return builds.of(suite)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    private, public = make_keypair(tmp_path_factory.mktemp("keys"))
    return {"private": private, "public": public}


@pytest.fixture(scope="module")
def api(suite: str, keys: Dict[str, Path]) -> Iterator[FakeGthulhu]:
    """The v0 API on the host's loopback (the container shares its network),
    holding another writer's strategy that merge mode must keep."""
    server = FakeGthulhu(keys["private"].read_bytes()).start()
    server.strategies = [dict(OTHER_WRITER)]
    yield server
    server.stop()


@pytest.fixture(scope="module")
def box(suite: str, previous: Built, current: Built) -> Iterator[Container]:
    c = Container(name="gtp5g-upgrade", suite=suite)
    try:
        c.boot()
        for built in (previous, current):
            shutil.copy(built.deb, c.path("/root/") / built.deb.name)
        shutil.copy(REPO / "testbed" / "gnb_sim.py", c.path("/root/gnb_sim.py"))
        c.run("apt-get update -q", timeout=600)
        yield c
    finally:
        c.stop()


class Gnb:
    """A process named nr-gnb, with a thread, inside the container."""

    def __init__(self, box: Container) -> None:
        self.proc = box.popen("exec python3 /root/gnb_sim.py --name nr-gnb "
                              "--thread nr-gnb-rlc")
        assert self.proc.stdout is not None
        info = json.loads(self.proc.stdout.readline())
        self.pid, self.tid = info["pid"], info["threads"]["nr-gnb-rlc"]

    def feed(self, box: Container) -> None:
        w = TraceWriter(box.path(FIFO))
        w.open()  # blocks until the daemon has the FIFO open
        w.write(gtp5g_line("<...>", self.pid, self.pid)
                + gtp5g_line("nr-gnb-rlc", self.tid, self.pid))
        w.close()


@pytest.fixture(scope="module")
def previous_installed(box: Container, previous: Built) -> str:
    """0.1.0 installed with apt (which brings python3 into the bare root)."""
    box.run(f"apt-get install -y -q /root/{previous.deb.name}", timeout=900)
    return installed_version(box)


@pytest.fixture(scope="module")
def gnb(box: Container, previous_installed: str) -> Iterator[Gnb]:
    g = Gnb(box)
    yield g
    g.proc.kill()


def sh(box: Container, command: str, check: bool = True) -> str:
    return box.run(command, check=check).stdout


def show(box: Container, prop: str) -> str:
    return sh(box, f"systemctl show -p {prop} --value {UNIT}").strip()


def installed_version(box: Container) -> str:
    return sh(box, "dpkg-query -W -f '${Version}' gtp5g-operator")


def journal(box: Container) -> List[str]:
    out = sh(box, f"journalctl -u {UNIT} -o json --no-pager")
    return [e["MESSAGE"] for e in map(json.loads, (ln for ln in out.splitlines()
                                                   if ln.startswith("{")))
            if isinstance(e.get("MESSAGE"), str)]


def upgrade_unattended(box: Container, deb: str) -> str:
    """apt as unattended-upgrades and config management run it: no terminal,
    stdin at end of file (a conffile prompt then fails the upgrade)."""
    r = box.run(f"apt-get install -y -q /root/{deb} 2>&1", check=False, timeout=900, input="")
    assert r.returncode == 0 and not PROMPT.search(r.stdout), r.stdout[-4000:]
    return r.stdout


def edit_as_the_0_1_readme_said(shipped: str, api_url: str) -> str:
    """`editor /etc/gtp5g-operator/config.toml`: uncomment and set keys in place."""
    settings = {"pipe": f'"{FIFO}"', "allow_pid_namespace": "true", "uid": "[0]",
                "url": f'"{api_url}"', "flavor": '"v0"', "timeout": "2.0",
                "mode": '"merge"', "resync_interval": "3.0", "liveness_interval": "1.0"}
    text = shipped
    for key, value in settings.items():
        text, n = re.subn(rf"^# {key} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
        assert n == 1, f"the shipped 0.1.0 config.toml has no commented {key}"
    return text


def strategies_pids(strategies: List[Dict[str, Any]]) -> List[int]:
    return sorted(s["pid"] for s in strategies)


def boosted_once(api: FakeGthulhu, gnb: Gnb, after: int) -> List[int]:
    """The next post holding the gNB's tasks and the other writer's entry, each once."""
    expected = sorted([OTHER_WRITER["pid"], gnb.pid, gnb.tid])
    post = api.wait_post(lambda s: strategies_pids(s) == expected, timeout=20, after=after)
    return strategies_pids(post.body["strategies"])


# --- 0.1.0, as its users run it ---------------------------------------------------------


def test_the_previous_release_runs_as_its_readme_said(
        box: Container, previous_installed: str, api: FakeGthulhu,
        keys: Dict[str, Path], gnb: Gnb) -> None:
    assert previous_installed == PREVIOUS_RELEASE[0]
    shutil.copy(keys["public"], box.path(KEY))
    box.path(CONFIG).write_text(edit_as_the_0_1_readme_said(box.path(CONFIG).read_text(),
                                                            api.url))
    box.run(f"mkdir -p {FIFO.rsplit('/', 1)[0]} && mkfifo -m 0600 {FIFO}")
    assert sh(box, "gtp5g-operator check-config").strip() == "ok"
    box.run(f"systemctl enable --now {UNIT}")
    gnb.feed(box)
    assert boosted_once(api, gnb, 0)
    owned = wait_until(lambda: box.path(OWNED).exists() and box.path(OWNED).read_text(), 20,
                       "the ownership file of merge mode")
    assert str(gnb.pid) in owned and str(OTHER_WRITER["pid"]) not in owned


# --- the upgrade to this release ------------------------------------------------------


def test_a_failed_upgrade_puts_the_edited_file_back(
        box: Container, current: Built, previous_installed: str, tmp_path: Path) -> None:
    """The preinst moved config.toml aside, then dpkg's unpack failed: the new
    postrm's abort-upgrade restores it, and 0.1.0 stays as it was."""
    edited = box.path(CONFIG).read_text()
    broken = repack(current.deb, "0.2.0", tmp_path, steal="usr/share/doc/apt/changelog.gz")
    shutil.copy(broken, box.path("/root/broken.deb"))
    r = box.run("apt-get install -y -q /root/broken.deb 2>&1", check=False, timeout=900,
                input="")
    assert r.returncode != 0 and "trying to overwrite" in r.stdout, r.stdout[-3000:]
    assert "your settings moved" in r.stdout  # the preinst did run
    assert installed_version(box) == previous_installed
    assert box.path(CONFIG).read_text() == edited
    assert not box.path(MIGRATED).exists()
    assert sh(box, "dpkg-query -W -f '${Status}' gtp5g-operator") == "install ok installed"
    assert show(box, "ActiveState") == "active"


@pytest.fixture(scope="module")
def before_upgrade(box: Container, api: FakeGthulhu, gnb: Gnb) -> Dict[str, str]:
    """The running 0.1.0 with the gNB boosted and owned (the failed upgrade above
    restarted it: dh_installsystemd's abort-upgrade does): what must survive."""
    n = len(api.posts())
    gnb.feed(box)
    assert boosted_once(api, gnb, n)
    wait_until(lambda: str(gnb.tid) in box.path(OWNED).read_text(), 20,
               "0.1.0's ownership file naming the gNB's tasks")
    return {"config": box.path(CONFIG).read_text(), "owned": box.path(OWNED).read_text(),
            "main_pid": show(box, "MainPID"),
            "state_inode": sh(box, f"stat -c %i {STATE}").strip()}


@pytest.fixture(scope="module")
def upgraded(box: Container, current: Built, before_upgrade: Dict[str, str],
             api: FakeGthulhu) -> Dict[str, Any]:
    posts = len(api.posts())
    output = upgrade_unattended(box, current.deb.name)
    return {"output": output, "posts": posts}


def test_the_upgrade_never_prompts_and_moves_the_edited_file(
        box: Container, suite: str, before_upgrade: Dict[str, str],
        upgraded: Dict[str, Any]) -> None:
    assert installed_version(box) == "0.2.0"
    pointer = (REPO / "packaging" / "config.toml.conffile").read_text()
    assert box.path(CONFIG).read_text() == pointer
    assert box.path(MIGRATED).read_text() == before_upgrade["config"]  # byte for byte
    assert f"your settings moved from {CONFIG} to {MIGRATED}" in upgraded["output"]
    leftovers = sh(box, f"ls -a {ETC} {ETC}/config.d")
    assert ".dpkg-" not in leftovers, leftovers
    FINDINGS.setdefault(suite, []).append(
        f"upgrade {PREVIOUS_RELEASE[0]} (edited config.toml) -> 0.2.0 with stdin at EOF: "
        "no prompt, the edit moved to config.d/ byte for byte")


def test_the_admins_settings_stay_in_force(box: Container, api: FakeGthulhu,
                                           upgraded: Dict[str, Any]) -> None:
    printed = sh(box, "gtp5g-operator check-config --print")
    url = next(line for line in printed.splitlines() if line.startswith("url = "))
    assert url.startswith(f'url = "{api.url}"') and url.endswith(MIGRATED), url
    mode = next(line for line in printed.splitlines() if line.startswith("mode = "))
    assert '"merge"' in mode and mode.endswith(MIGRATED), mode


def test_the_service_restarted_onto_this_release(
        box: Container, suite: str, before_upgrade: Dict[str, str],
        upgraded: Dict[str, Any]) -> None:
    wait_until(lambda: show(box, "ActiveState") == "active"
               and show(box, "MainPID") not in ("0", before_upgrade["main_pid"]), 30,
               "the service restarted by the upgrade")
    wait_until(lambda: any(m.startswith("gtp5g-operator 0.2.0 ") for m in journal(box)), 30,
               "0.2.0's start-up line")
    fragment = show(box, "FragmentPath")
    # where this suite's debhelper puts units; on trixie the file moved from
    # /lib (0.1.0) to /usr/lib, the same directory on a merged /usr: not lost
    expected = ("/usr/lib/systemd/system/" if suite != "bookworm" else "/lib/systemd/system/")
    assert fragment == expected + UNIT, fragment
    assert box.path(fragment).is_file()
    assert "LoadCredential=gthulhu-password" in box.path(fragment).read_text()
    FINDINGS.setdefault(suite, []).append(f"0.2.0's unit: {fragment}; restarted by the upgrade")


def test_state_and_ownership_are_kept_and_nothing_is_boosted_twice(
        box: Container, api: FakeGthulhu, gnb: Gnb, before_upgrade: Dict[str, str],
        upgraded: Dict[str, Any]) -> None:
    # the state directory itself survived (not removed and made anew)
    assert sh(box, f"stat -c %i {STATE}").strip() == before_upgrade["state_inode"]
    wait_until(lambda: show(box, "MainPID") not in ("0", before_upgrade["main_pid"]), 30,
               "the restarted daemon")
    n = len(api.posts())  # from here on, the new daemon's posts only
    gnb.feed(box)  # identity comes from the trace: the new daemon learns the tasks anew
    assert boosted_once(api, gnb, n)
    expected = json.loads(before_upgrade["owned"])  # 0.1.0's: {"api_url", "pids"}

    def rewritten() -> bool:
        # 0.2.0 rewrites 0.1.0's file once, adding what it posted per PID ("strategies")
        # and keeping 0.1.0's keys as they were, so that a downgrade still finds its entries
        now = json.loads(box.path(OWNED).read_text())
        return bool({k: v for k, v in now.items() if k in expected} == expected
                    and sorted(e["pid"] for e in now.get("strategies", []))
                    == sorted(expected["pids"]))

    try:
        wait_until(rewritten, 20, "the ownership file holding the same tasks again")
    except AssertionError:
        assert rewritten(), (box.path(OWNED).read_text(), journal(box)[-30:])
    for post in api.posts()[upgraded["posts"]:]:
        pids = strategies_pids(post.body["strategies"])
        assert len(pids) == len(set(pids)), pids  # no task posted twice
        assert OTHER_WRITER["pid"] in pids, pids  # the other writer's entry never lost


# --- a later upgrade of a drop-in-only host -------------------------------------------


def test_a_later_upgrade_of_a_drop_in_host_never_prompts(
        box: Container, suite: str, current: Built, api: FakeGthulhu, gnb: Gnb,
        tmp_path: Path) -> None:
    box.run(f"install -d -m 0700 /etc/credstore && printf s3cret > {CREDENTIAL} && "
            f"chmod 0600 {CREDENTIAL}")
    box.run("install -d -m 1777 /var/lib/prometheus/node-exporter")
    box.path(SITE).write_text(f'[strategy]\nexecution_time_ns = 5000000\n'
                              f'[metrics]\ntextfile = "{TEXTFILE}"\n')
    box.run(f"systemctl restart {UNIT}")  # LoadCredential= is read at start
    n = len(api.posts())
    gnb.feed(box)
    api.wait_post(lambda s: any(e.get("execution_time") == 5_000_000 for e in s), timeout=20,
                  after=n)
    wait_until(lambda: box.path(TEXTFILE).exists(), 20, "the node-exporter textfile")
    main_pid = show(box, "MainPID")
    changed = repack(current.deb, "0.2.0+fleet1", tmp_path)
    shutil.copy(changed, box.path("/root/") / changed.name)
    upgrade_unattended(box, changed.name)
    assert installed_version(box) == "0.2.0+fleet1"
    wait_until(lambda: show(box, "ActiveState") == "active"
               and show(box, "MainPID") not in ("0", main_pid), 30, "the restart")
    assert box.path(SITE).read_text().startswith("[strategy]\nexecution_time_ns = 5000000\n")
    n = len(api.posts())
    gnb.feed(box)
    api.wait_post(lambda s: any(e.get("execution_time") == 5_000_000 for e in s), timeout=20,
                  after=n)
    FINDINGS.setdefault(suite, []).append(
        "0.2.0 -> 0.2.0+fleet1 (drop-ins only): no prompt; runs with /etc/credstore present")


def test_the_credential_from_the_credstore_reaches_the_service(box: Container) -> None:
    """LoadCredential=gthulhu-password: systemd copies /etc/credstore/gthulhu-password
    into the service's $CREDENTIALS_DIRECTORY (the file itself stays root's)."""
    probe = box.run("systemd-run --quiet --wait --pipe -p SetCredential=probe:ok "
                    "sh -c 'cat \"$CREDENTIALS_DIRECTORY/probe\"'", check=False, input="")
    if probe.stdout.strip() != "ok":
        pytest.skip("this container's systemd delivers no credential at all (a transient "
                    "unit's SetCredential= arrives empty: its credential mounts fail under "
                    f"this container manager): {probe.stdout.strip()} {probe.stderr.strip()}")
    # read where the service sees it: in its own mount namespace
    pid = show(box, "MainPID")
    environ = sh(box, f"tr '\\0' '\\n' </proc/{pid}/environ").splitlines()
    creds = next(e.split("=", 1)[1] for e in environ if e.startswith("CREDENTIALS_DIRECTORY="))
    assert sh(box, f"nsenter --mount=/proc/{pid}/ns/mnt cat {creds}/gthulhu-password"
              ) == "s3cret"


# --- purge ------------------------------------------------------------------------------


def test_purge_removes_what_it_made_and_keeps_the_admins_files(
        box: Container, suite: str) -> None:
    recorded = sh(box, "cat /var/lib/private/gtp5g-operator/textfile.path").strip()
    assert recorded == TEXTFILE
    box.run("touch /var/lib/prometheus/node-exporter/other.prom")  # not the service's
    out = sh(box, "apt-get purge -y -q gtp5g-operator 2>&1")
    for gone in (CONFIG, MIGRATED, TEXTFILE, "/var/lib/private/gtp5g-operator",
                 "/var/lib/gtp5g-operator", "/run/gtp5g-operator"):
        # asked inside: /run and /proc are the container's own mounts
        assert box.run(f"test -e {gone} || test -L {gone}", check=False).returncode, gone
    for kept in (KEY, SITE, CREDENTIAL, "/var/lib/prometheus/node-exporter/other.prom"):
        assert box.path(kept).exists(), kept
    said = next(line for line in out.splitlines() if "purge leaves your own files:" in line)
    assert all(f in said for f in (KEY, SITE, CREDENTIAL)), said
    assert f"removed the metrics textfile {TEXTFILE}" in out
    FINDINGS.setdefault(suite, []).append(f"purge: {said.split(': ', 1)[1]}")
