"""The package's autopkgtest (debian/tests/), run by autopkgtest as Debian's CI runs it.

Per suite: a booted container is the testbed (autopkgtest's `null` runner:
the tests run on the system autopkgtest runs on), given the suite's .deb and
the source package it was built from; autopkgtest installs the test
dependencies with apt and runs each test: the unit tests against the
installed package, check-config on the shipped example, doctor --json.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Dict, Iterator

import pytest

from tests.system.conftest import FINDINGS, Builds
from tests.system.container import Container

pytestmark = pytest.mark.system

TESTS = ("unit-tests", "check-config-example", "doctor-json")


@pytest.fixture(scope="module")
def testbed(suite: str, builds: Builds) -> Iterator[Container]:
    built = builds.of(suite)
    c = Container(name="gtp5g-autopkgtest", suite=suite)
    try:
        c.boot()
        shutil.copy(built.deb, c.path("/root/") / built.deb.name)
        source = next(built.deb.parent.glob("gtp5g-operator_*.tar.xz"))
        subprocess.run(["tar", "-C", str(c.path("/root")), "-xf", str(source)], check=True)
        c.run("apt-get update -q && apt-get install -y -q --no-install-recommends "
              "autopkgtest", timeout=900)
        yield c
    finally:
        c.stop()


def test_autopkgtest_passes_every_test(testbed: Container, suite: str, builds: Builds) -> None:
    deb = builds.of(suite).deb.name
    src = testbed.run("ls -d /root/gtp5g-operator-*/").stdout.strip()
    r = testbed.run(f"autopkgtest --summary-file=/root/summary /root/{deb} {src} -- null 2>&1",
                    check=False, timeout=1800)
    summary = testbed.run("cat /root/summary", check=False).stdout
    results: Dict[str, str] = dict(line.split()[:2] for line in summary.splitlines()
                                   if len(line.split()) >= 2)
    failed = [t for t in TESTS if results.get(t) != "PASS"]
    assert not failed, "\n".join(output_of(r.stdout, t)[-4000:] for t in failed) + summary
    assert r.returncode == 0, r.stdout[-5000:]
    FINDINGS.setdefault(suite, []).append(
        "autopkgtest (null testbed = the booted container): "
        + ", ".join(f"{t} {v}" for t, v in results.items()))


def output_of(log: str, test: str) -> str:
    """What one test printed, from autopkgtest's log (between its [--- and ---] marks)."""
    start = log.find(f"test {test}: [---")
    end = log.find(f"test {test}:  - - - - - - - - - - results", start)
    return log[start:end] if start >= 0 else log[-3000:]
