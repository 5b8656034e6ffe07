"""The fleet's way in: a signed flat apt repository made by `make repo`'s script.

Per suite: packaging/make-repo signs a repository holding the suite's package
with a key made for the test (an admin uses their own); a booted host trusts
only that key (signed-by=), installs the package from the repository with
apt, and then unattended-upgrades upgrades it to a newer version added to
the repository, matching the repository by its Origin as a fleet's
configuration would.  A repository signed by another key is refused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import pytest

from testbed.harness import wait_until
from tests.system.builder import repack
from tests.system.conftest import FINDINGS, Builds
from tests.system.container import Container

pytestmark = pytest.mark.system

MAKE_REPO = Path(__file__).resolve().parents[2] / "packaging" / "make-repo"
KEYRING = "/usr/share/keyrings/gtp5g-operator-archive-keyring.gpg"
SOURCES = "/etc/apt/sources.list.d/gtp5g-operator.sources"
UNATTENDED = """Unattended-Upgrade::Origins-Pattern { "origin=gtp5g-operator"; };
Unattended-Upgrade::Automatic-Reboot "false";
"""


@pytest.fixture(scope="module", autouse=True)
def repository_tools() -> None:
    for tool in ("apt-ftparchive", "gpg"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-utils, gnupg)")


Keyring = Callable[[Path, str], Dict[str, str]]


@pytest.fixture(scope="module")
def keyrings() -> Iterator[Keyring]:
    """Makes keyrings holding one new signing key each, and gives the environment that
    signs with one; at the end stops the gpg-agent each keyring started (gpg starts one
    per GNUPGHOME, and it outlives the test otherwise)."""
    made: List[Dict[str, str]] = []

    def make(directory: Path, name: str) -> Dict[str, str]:
        directory.mkdir(mode=0o700)
        env = {**os.environ, "GNUPGHOME": str(directory)}
        made.append(env)
        subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key",
                        f"{name} <{name}@invalid>", "ed25519", "sign", "never"],
                       env=env, check=True, capture_output=True, timeout=120)
        return env

    yield make
    for env in made:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, capture_output=True,
                       timeout=60, check=False)
    homes = [env["GNUPGHOME"] for env in made]
    wait_until(lambda: not any(agents_of(home) for home in homes), 60,
               "the test keyrings' gpg-agents to stop")


def agents_of(home: str) -> List[int]:
    """PIDs of the gpg-agents serving the keyring at `home`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # not a process, or one that just ended
        if argv and argv[0].endswith(b"gpg-agent") and home.encode() in argv:
            pids.append(int(entry.name))
    return pids


def make_repo(repo: Path, deb: Path, env: Dict[str, str]) -> str:
    r = subprocess.run([str(MAKE_REPO), str(repo), str(deb)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory, keyrings: Keyring) -> Dict[str, str]:
    return keyrings(tmp_path_factory.mktemp("gpg") / "home", "gtp5g-test-repo")


@pytest.fixture(scope="module")
def repo(suite: str, builds: Builds, signer: Dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp(f"repo-{suite}") / "repo"
    out = make_repo(path, builds.of(suite).deb, signer)
    assert "1 package(s), signed" in out, out
    return path


@pytest.fixture(scope="module")
def box(suite: str, repo: Path) -> Iterator[Container]:
    c = Container(name="gtp5g-fleet", suite=suite)
    try:
        c.boot()
        yield c
    finally:
        c.stop()


def publish(box: Container, repo: Path) -> None:
    """What an admin's web server would serve: the repository, at /srv/repo."""
    target = box.path("/srv/repo")
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(repo, target)


def trust(box: Container, repo: Path) -> None:
    shutil.copy(repo / "gtp5g-operator-archive-keyring.gpg", box.path(KEYRING))
    box.path(SOURCES).write_text("Types: deb\nURIs: file:/srv/repo/\nSuites: ./\n"
                                 f"Signed-By: {KEYRING}\n")


def test_a_repository_signed_by_another_key_is_refused(
        box: Container, repo: Path, tmp_path: Path, builds: Builds, suite: str,
        keyrings: Keyring) -> None:
    forged = tmp_path / "forged"
    make_repo(forged, builds.of(suite).deb, keyrings(tmp_path / "other", "someone-else"))
    shutil.copy(repo / "gtp5g-operator-archive-keyring.gpg",
                forged / "gtp5g-operator-archive-keyring.gpg")  # the host trusts ours
    publish(box, forged)
    trust(box, forged)
    r = box.run("apt-get update -q 2>&1", check=False, timeout=600)
    assert "/srv/repo" in r.stdout and any(
        word in r.stdout for word in ("NO_PUBKEY", "not signed", "Missing key", "BADSIG",
                                      "signature", "Signature")), r.stdout[-3000:]
    policy = box.run("apt-cache policy gtp5g-operator", check=False).stdout
    assert "/srv/repo" not in policy, policy


def test_apt_installs_from_the_signed_repository(box: Container, repo: Path,
                                                 suite: str) -> None:
    publish(box, repo)
    trust(box, repo)
    update = box.run("apt-get update -q 2>&1", timeout=600).stdout
    assert "/srv/repo" in update and "W:" not in update and "E:" not in update, update
    box.run("apt-get install -y -q gtp5g-operator", timeout=900, input="")
    policy = box.run("apt-cache policy gtp5g-operator").stdout
    assert "Installed: 0.2.0" in policy and "file:/srv/repo" in policy, policy
    origin = box.run("apt-cache policy | grep -A1 /srv/repo").stdout
    assert "o=gtp5g-operator" in origin, origin


def test_unattended_upgrades_takes_the_next_version(
        box: Container, repo: Path, suite: str, builds: Builds, signer: Dict[str, str],
        tmp_path: Path) -> None:
    box.run("apt-get install -y -q --no-install-recommends unattended-upgrades", timeout=900)
    box.path("/etc/apt/apt.conf.d/51gtp5g-operator-fleet").write_text(UNATTENDED)
    newer = repack(builds.of(suite).deb, "0.2.0+fleet2", tmp_path)
    out = make_repo(repo, newer, signer)
    assert "2 package(s), signed" in out, out
    publish(box, repo)
    box.run("apt-get update -q", timeout=600)
    r = box.run("unattended-upgrade -v 2>&1", check=False, timeout=900, input="")
    version = box.run("dpkg-query -W -f '${Version}' gtp5g-operator").stdout
    assert version == "0.2.0+fleet2", r.stdout[-3000:]
    FINDINGS.setdefault(suite, []).append(
        "make-repo: signed flat repository, apt install with signed-by=, "
        "unattended-upgrade 0.2.0 -> 0.2.0+fleet2; another key's repository refused")
