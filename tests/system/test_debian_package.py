"""What each suite's build holds, as a Debian Developer checks it before an upload.

The package, the wheel and the sdist are built by the suite itself
(tests/system/builder.py: its debhelper, hatchling and lintian); this reads
them: lintian's verdict, the unit where the suite's debhelper puts it, the
conffile that never changes, the documentation, the license, the version.
"""

from __future__ import annotations

import gzip
import re
import subprocess
import tarfile
import zipfile
from pathlib import Path
from typing import List

import pytest

from gtp5g_operator import __version__
from tests.system.builder import Built, lintian_tags, worktree_files
from tests.system.conftest import FINDINGS, REPO, Builds
from tests.system.container import SUITES

pytestmark = pytest.mark.system

DOC = "usr/share/doc/gtp5g-operator"
# The only override: Debian 12's lintian knows policy up to 4.6.2 and warns
# about the current Standards-Version (a warning, not an error; unused on 13).
ALLOWED_OVERRIDES = {"newer-standards-version"}


@pytest.fixture(scope="module", params=list(SUITES))
def built(request: pytest.FixtureRequest, builds: Builds) -> Built:
    return builds.of(str(request.param))


def deb_files(deb: Path) -> List[str]:
    out = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                         check=True).stdout
    names = subprocess.run(["tar", "-t"], input=out, capture_output=True, check=True).stdout
    return [n.decode().removeprefix("./") for n in names.splitlines()]


def deb_file(deb: Path, path: str) -> bytes:
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                         check=True).stdout
    return subprocess.run(["tar", "-xO", f"./{path}"], input=tar, capture_output=True,
                          check=True).stdout


def control_field(deb: Path, field: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), field], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_lintian_of_the_suite_says_no_error_or_warning(built: Built) -> None:
    assert lintian_tags(built.lintian) == [], built.lintian[-3000:]
    info = lintian_tags(built.lintian, "I")
    FINDINGS.setdefault(built.suite, []).append(
        f"lintian --pedantic on source + binary: no E/W; info: {'; '.join(info) or 'none'}")


def test_no_override_hides_an_error() -> None:
    overridden = set()
    for path in [*REPO.glob("debian/*lintian-overrides"), REPO / "debian/source/lintian-overrides"]:
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    overridden.add(line.split(":", 1)[1].split()[0])
    assert overridden <= ALLOWED_OVERRIDES, overridden


def test_the_unit_is_where_the_suites_debhelper_puts_it(built: Built) -> None:
    units = [f for f in deb_files(built.deb) if f.endswith("/gtp5g-operator.service")]
    expected = ("lib/systemd/system/gtp5g-operator.service" if built.suite == "bookworm"
                else "usr/lib/systemd/system/gtp5g-operator.service")
    assert units == [expected], units
    # the one source of the unit is systemd/, debian/ only links to it
    assert deb_file(built.deb, expected) == (REPO / "systemd/gtp5g-operator.service").read_bytes()
    assert (REPO / "debian/gtp5g-operator.service").resolve() == (
        REPO / "systemd/gtp5g-operator.service").resolve()


def test_the_only_conffile_is_the_unchanging_pointer(built: Built) -> None:
    conffiles = subprocess.run(["dpkg-deb", "-I", str(built.deb), "conffiles"],
                               capture_output=True, text=True, check=True).stdout.split()
    assert conffiles == ["/etc/gtp5g-operator/config.toml"]
    shipped = deb_file(built.deb, "etc/gtp5g-operator/config.toml")
    assert shipped == (REPO / "packaging/config.toml.conffile").read_bytes()
    assert "etc/gtp5g-operator/config.d/" in deb_files(built.deb)


def test_documentation_license_and_homepage_are_shipped(built: Built) -> None:
    files = set(deb_files(built.deb))
    for doc in ("README.md.gz", "README.Debian", "NEWS.Debian.gz", "changelog.gz",
                "copyright", "LICENSE.gz"):
        assert f"{DOC}/{doc}" in files, doc
    # read (and checked by check-config) as it is: not compressed
    example = deb_file(built.deb, f"{DOC}/examples/config.toml")
    assert example == (REPO / "packaging/config.toml").read_bytes()
    license_text = gzip.decompress(deb_file(built.deb, f"{DOC}/LICENSE.gz"))
    assert license_text == (REPO / "LICENSE").read_bytes()
    assert b"Apache License" in license_text and b"Version 2.0" in license_text
    assert control_field(built.deb, "Homepage").startswith("https://")
    assert not [f for f in files if re.search(r"(^|/)(tests|testbed)/", f)]  # no test files


def test_the_version_is_the_same_everywhere_in_the_build(built: Built) -> None:
    assert control_field(built.deb, "Version") == __version__
    metadata = deb_file(built.deb, "usr/lib/python3/dist-packages/gtp5g_operator-"
                                   f"{__version__}.dist-info/METADATA").decode()
    assert f"\nVersion: {__version__}\n" in metadata


def test_wheel_and_sdist_carry_the_license_and_the_spdx_expression(built: Built) -> None:
    """Built by this suite's hatchling (Debian 12: 1.12.2, Debian 13: 1.27)."""
    dist = built.deb.parent / "dist"
    wheel = next(dist.glob("gtp5g_operator-*.whl"))
    sdist = next(dist.glob("gtp5g_operator-*.tar.gz"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        licenses = [n for n in names if n.endswith("/LICENSE")]
        assert len(licenses) == 1 and z.read(licenses[0]) == (REPO / "LICENSE").read_bytes()
    assert "\nLicense-Expression: Apache-2.0\n" in metadata, metadata[:800]
    assert f"\nVersion: {__version__}\n" in metadata
    with tarfile.open(sdist) as t:
        members = t.getnames()
        assert f"gtp5g_operator-{__version__}/LICENSE" in members
        pkg_info = t.extractfile(f"gtp5g_operator-{__version__}/PKG-INFO")
        assert pkg_info is not None and b"License-Expression: Apache-2.0" in pkg_info.read()
    assert not [m for m in members if "/.git/" in m or "/out/" in m or "/.venv/" in m]
    FINDINGS.setdefault(built.suite, []).append(
        f"wheel and sdist by the suite's hatchling: {wheel.name}, {sdist.name}, LICENSE in both")


def clone_of_the_tree(clone: Path) -> List[str]:
    """A git clone of this tree's files (tracked or new, not ignored) made at `clone`;
    returns those files."""
    files = worktree_files()
    tar = subprocess.run(["tar", "-C", str(REPO), "--null", "-T", "-", "-cf", "-"],
                         input=b"\0".join(f.encode() for f in files), capture_output=True,
                         check=True).stdout
    clone.mkdir()
    subprocess.run(["tar", "-C", str(clone), "-xf", "-"], input=tar, check=True)
    subprocess.run(["git", "-C", str(clone), "init", "-q"], check=True)
    subprocess.run(["git", "-C", str(clone), "add", "-A"], check=True)
    return files


def make_deb_with(clone: Path, out: Path, stand_in: str, env: str = "") -> None:
    """`clone`'s packaging/build-deb into `out`, with `stand_in` (a shell script) as
    dpkg-buildpackage: bound over it in a private mount namespace, with
    dpkg-checkbuilddeps content (nothing is installed on the host)."""
    stub = out.parent / f"{out.name}-dpkg-buildpackage"
    stub.write_text("#!/bin/sh\n" + stand_in)
    stub.chmod(0o755)
    content = out.parent / f"{out.name}-true"
    content.write_text("#!/bin/sh\nexit 0\n")
    content.chmod(0o755)
    r = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-ec",
         f"mount --bind {stub} /usr/bin/dpkg-buildpackage && "
         f"mount --bind {content} /usr/bin/dpkg-checkbuilddeps && "
         f"LINTIAN=no {env} {clone}/packaging/build-deb {out}"],
        capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_make_deb_takes_the_trees_files_not_what_gitignore_names(tmp_path: Path) -> None:
    """`make deb` in a developer's clone after `make test` (hypothesis' .hypothesis/)
    and a wheel build (dist/): packaging/build-deb hands dpkg-buildpackage the
    tree's files only, else they went into the source package.  dpkg-buildpackage
    is a stand-in recording what it was given."""
    clone = tmp_path / "clone"
    files = clone_of_the_tree(clone)
    for junk in (".hypothesis/examples/0a1b/2c3d", f"dist/gtp5g_operator-{__version__}.tar.gz"):
        (clone / junk).parent.mkdir(parents=True, exist_ok=True)
        (clone / junk).write_text("not source\n")
    record = tmp_path / "given.txt"
    make_deb_with(clone, tmp_path / "out",
                  "find . ! -type d -printf '%P\\n' | sort > \"$RECORD\"\n"
                  f"touch ../gtp5g-operator_{__version__}_all.deb\n", env=f"RECORD={record}")
    given = record.read_text().split()
    assert not [f for f in given if f.startswith((".hypothesis/", "dist/"))], given
    assert sorted(given) == sorted(f for f in files if not f.startswith("bench/results/"))


def test_the_source_package_does_not_depend_on_the_umask_of_the_clone(tmp_path: Path) -> None:
    """The same commit cloned under umask 022 and under umask 002 (a user with a
    private group: files 0664, directories 0775) gave two different .tar.xz and
    .dsc: dpkg-source records each file's mode as it finds it.  The real
    dpkg-source builds both; dpkg-buildpackage is a stand-in that runs only it."""
    built = {}
    for umask, modes in (("022", "go-w"), ("002", "g+w")):
        clone = tmp_path / f"clone-{umask}"
        clone_of_the_tree(clone)
        subprocess.run(["chmod", "-R", modes, str(clone)], check=True)
        out = tmp_path / f"out-{umask}"
        make_deb_with(clone, out, 'dir=$(basename "$PWD") && cd .. && '
                      'dpkg-source -b "$dir" >/dev/null\n'
                      f"touch gtp5g-operator_{__version__}_all.deb\n")
        built[umask] = {f.name: f.read_bytes() for f in out.glob("gtp5g-operator_*")
                        if f.suffix in (".dsc", ".xz")}
    assert sorted(built["022"]) == [f"gtp5g-operator_{__version__}.dsc",
                                    f"gtp5g-operator_{__version__}.tar.xz"], sorted(built["022"])
    assert built["002"] == built["022"]
