"""piuparts, Debian's install/upgrade/purge checker, on each suite's package.

piuparts installs the package in a fresh chroot of the suite (a copy of the
cached root the containers boot), purges it and checks that nothing is left
behind or changed; then, because the previous release (0.1.0) is "in the
archive" (an extra repository here), it installs that, upgrades to this
package, purges, and checks again.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.system.conftest import FINDINGS, Builds
from tests.system.container import KNOWN, SUITES, base_root, why_unavailable

pytestmark = pytest.mark.system

PIUPARTS_TIMEOUT = 1800


@pytest.mark.parametrize("suite", list(SUITES))
def test_piuparts_installs_upgrades_from_the_previous_release_and_purges(
        suite: str, builds: Builds, tmp_path: Path) -> None:
    why = why_unavailable(suite)
    if why:
        pytest.skip(f"system tests ({suite}, {SUITES[suite]}): {why}")
    for tool in ("piuparts", "apt-ftparchive"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (piuparts, apt-utils)")
    current, previous = builds.of(suite), builds.previous_release()
    archive = tmp_path / "archive"
    archive.mkdir()
    shutil.copy(previous.deb, archive / previous.deb.name)
    packages = subprocess.run(["apt-ftparchive", "packages", "."], cwd=archive,
                              capture_output=True, text=True, check=True).stdout
    (archive / "Packages").write_text(packages)
    log = tmp_path / "piuparts.log"
    argv = ["piuparts", "--distribution", suite, "--mirror", KNOWN[suite].mirror,
            "--existing-chroot", str(base_root(suite)),
            "--bindmount", str(archive),
            "--extra-repo", f"deb [trusted=yes] file:{archive} ./",
            # trixie's debconf leaves this directory of apt's dpkg-preconfigure
            # (any install makes it; it is no package's): bookworm's piuparts
            # 1.1.7 does not know it yet
            "--ignore", "/var/cache/debconf/tmp.ci/",
            "--log-file", str(log), str(current.deb)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=PIUPARTS_TIMEOUT)
    text = log.read_text() if log.exists() else r.stdout + r.stderr
    assert r.returncode == 0, text[-5000:]
    # the upgrade test ran (it is skipped when the archive has no version)
    assert re.search(r"(?i)upgrad", text) and previous.deb.name.split("_")[1] in text, (
        text[-5000:])
    summary = [ln.split(": ", 1)[-1] for ln in text.splitlines() if "PASS:" in ln]
    FINDINGS.setdefault(suite, []).append("piuparts: " + "; ".join(summary))
