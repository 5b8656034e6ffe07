"""Each suite's .deb, built once per test session, for every suite's container."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pytest

from tests.system.builder import PREVIOUS_RELEASE, Built, build, has_commit, lintian_tags
from tests.system.container import SUITES, why_unavailable

REPO = Path(__file__).resolve().parent.parent.parent

# What the walks measured, printed at the end of the run: suite -> lines.
FINDINGS: Dict[str, List[str]] = {}


class Builds:
    """Each suite's package, built once per session in that suite's clean root
    (tests/system/builder.py; cached across sessions by source).  A build that
    failed is not tried again in the session: every test that needs it fails
    at once with the first failure's reason."""

    def __init__(self) -> None:
        self._built: Dict[Tuple[str, Optional[str]], Built] = {}
        self._failed: Dict[Tuple[str, Optional[str]], str] = {}

    def of(self, suite: str) -> Built:
        """This tree's package for `suite`; its lintian said no E or W."""
        return self._once((suite, None), lambda: self._checked(build(suite)))

    @staticmethod
    def _checked(built: Built) -> Built:
        tags = lintian_tags(built.lintian)
        assert tags == [], f"{built.suite}'s lintian: {tags}"
        return built

    def _once(self, key: Tuple[str, Optional[str]], make: Callable[[], Built]) -> Built:
        if key in self._failed:
            pytest.fail(f"the {key[0]} build failed earlier in this session: "
                        f"{self._failed[key]}", pytrace=False)
        if key not in self._built:
            try:
                self._built[key] = make()
            except (AssertionError, RuntimeError, subprocess.SubprocessError, OSError) as exc:
                self._failed[key] = str(exc)[-3000:]
                raise
        return self._built[key]

    def previous_release(self) -> Built:
        """The previous release as fleets installed it: built on bookworm (0.1.0
        shipped one .deb for bookworm and trixie), its tests not rerun."""
        version, commit = PREVIOUS_RELEASE
        if not has_commit(commit):
            pytest.skip(f"the previous release {version} is commit {commit}, which this "
                        "clone does not have (a shallow clone or an export: no git history)")
        return self._once(("bookworm", commit), lambda: build("bookworm", commit, check=False))


@pytest.fixture(scope="session")
def builds() -> Builds:
    why = why_unavailable(None)
    if why:
        pytest.skip(f"system tests: {why}")
    if shutil.which("git") is None:
        pytest.skip("system tests: git is missing (the builds take the tree's files from it)")
    inside = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--is-inside-work-tree"],
                            capture_output=True, text=True)
    if inside.stdout.strip() != "true":
        pytest.skip(f"system tests: {REPO} is not a git work tree (the builds take the "
                    "tree's files and the previous release from git)")
    return Builds()


@pytest.fixture(scope="module")
def deb(suite: str, builds: Builds) -> Path:
    """This tree's package as `suite` builds it (the unit where its debhelper puts
    it); `suite` is each test module's own parametrized fixture."""
    return builds.of(suite).deb


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FINDINGS:
        terminalreporter.section("packaged service: measured per suite")
        for suite, lines in FINDINGS.items():
            for line in lines:
                terminalreporter.write_line(f"{suite}: {line}")


@pytest.fixture(scope="module", params=list(SUITES))
def suite(request: pytest.FixtureRequest) -> str:
    """Each Debian release the system tests walk (bookworm, trixie), or a skip saying
    why this machine cannot boot it."""
    why = why_unavailable(request.param)
    if why:
        pytest.skip(f"system tests ({request.param}, {SUITES[request.param]}): {why}")
    return str(request.param)
