"""The preinst's migration of an edited 0.1.x config.toml, failing halfway: the
abort-upgrade (or abort-install) that dpkg runs then must give the admin back
config.toml, which 0.1.x reads (it knows nothing of config.d/).  Run with
DPKG_ROOT in a temporary directory, a stub dpkg-query and a failing command
stubbed in PATH; nothing of the real system is touched."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Tuple

import pytest

REPO = Path(__file__).resolve().parents[2]
PREINST = REPO / "debian" / "gtp5g-operator.preinst"
POSTRM = REPO / "debian" / "gtp5g-operator.postrm"
ADMIN = '[api]\nurl = "http://gthulhu.example:8080"\n'

pytestmark = pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs dpkg")


def _stub(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def _run(script: Path, root: Path, bin_dir: Path, *args: str) -> int:
    env = {**os.environ, "DPKG_ROOT": str(root), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(["sh", str(script), *args], env=env, capture_output=True).returncode


def edited_0_1_install(tmp_path: Path) -> Tuple[Path, Path, Path]:
    """(DPKG_ROOT, a PATH directory for stubs, its /etc/gtp5g-operator): 0.1.x installed
    with config.toml edited by the admin."""
    root, bin_dir = tmp_path / "root", tmp_path / "bin"
    etc = root / "etc" / "gtp5g-operator"
    etc.mkdir(parents=True)
    bin_dir.mkdir()
    (etc / "config.toml").write_text(ADMIN)
    # the md5sum dpkg recorded for 0.1.0's conffile: not the admin's file's
    _stub(bin_dir, "dpkg-query",
          "echo ' /etc/gtp5g-operator/config.toml 0123456789abcdef0123456789abcdef'\n")
    return root, bin_dir, etc


@pytest.mark.parametrize("failing", [
    # the pointer's chmod: after it was written, before it is renamed into place
    ("chmod", "exit 1\n"),
    # the last rename (the pointer into place), the first one done
    ("mv", 'case "$1" in *.dpkg-tmp) exit 1;; esac\nexec /bin/mv "$@"\n'),
])
def test_a_preinst_failing_halfway_is_undone_by_abort_upgrade(
        tmp_path: Path, failing: tuple[str, str]) -> None:
    root, bin_dir, etc = edited_0_1_install(tmp_path)
    _stub(bin_dir, *failing)
    assert _run(PREINST, root, bin_dir, "upgrade", "0.1.0") != 0
    (bin_dir / failing[0]).unlink()
    assert _run(POSTRM, root, bin_dir, "abort-upgrade", "0.1.0") == 0
    assert (etc / "config.toml").read_text() == ADMIN
    assert not (etc / "config.d" / "50-migrated-from-0.1.toml").exists()
    assert not (etc / "config.toml.dpkg-tmp").exists()


def test_the_migration_and_its_undo(tmp_path: Path) -> None:
    root, bin_dir, etc = edited_0_1_install(tmp_path)
    assert _run(PREINST, root, bin_dir, "upgrade", "0.1.0") == 0
    assert (etc / "config.d" / "50-migrated-from-0.1.toml").read_text() == ADMIN
    assert (etc / "config.toml").read_text() != ADMIN
    assert _run(POSTRM, root, bin_dir, "abort-upgrade", "0.1.0") == 0
    assert (etc / "config.toml").read_text() == ADMIN


def test_purge_names_every_file_of_the_admins_it_leaves(tmp_path: Path) -> None:
    """A drop-in disabled the way the daemon allows (a leading dot: hidden files are
    ignored) or moved into a subdirectory is the admin's too: purge named only the
    visible files directly in /etc/gtp5g-operator and config.d, so with only those
    left it said nothing and left the directory behind, unexplained."""
    root = tmp_path / "root"
    etc = root / "etc" / "gtp5g-operator"
    (etc / "config.d" / "disabled").mkdir(parents=True)
    kept = [etc / "config.d" / ".50-site.toml", etc / "config.d" / "disabled" / "60-x.toml",
            etc / "jwt_public_key.pem"]
    for path in kept:
        path.write_text(ADMIN)
    env = {**os.environ, "DPKG_ROOT": str(root)}
    done = subprocess.run(["sh", str(POSTRM), "purge"], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stdout.splitlines() if "purge leaves your own files" in line]
    assert len(said) == 1 and all(str(p) in said[0] for p in kept), done.stdout
    assert all(p.exists() for p in kept)
