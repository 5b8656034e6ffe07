"""The library versions we claim, tested: the oldest (Ubuntu 22.04's) and the newest.

For each matrix entry a venv is made (cached under
/var/cache/gtp5g-operator-tests/venvs/<entry>-<hash>, the hash covering the
interpreter and the exact versions) with those versions and pytest, and the
unit and integration tests run in it from the source tree (PYTHONPATH).

* ubuntu-22.04-oldest: packaging/constraints-ubuntu-22.04.txt (what jammy
  ships) on Python 3.10 (jammy's python3).
* newest: packaging/constraints-newest.txt resolved to the newest PyPI
  releases at test time, on the newest Python found.

Also: the floors declared in pyproject.toml and debian/control are the same,
and they are the versions the oldest entry tests.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from packaging.requirements import Requirement

from tests.compat.conftest import FINDINGS, missing

if sys.version_info >= (3, 11):
    import tomllib
else:  # the fallback the package uses too (a module-level alias: vermin accepts it)
    import tomli as tomllib

pytestmark = pytest.mark.compat

REPO = Path(__file__).resolve().parent.parent.parent
SUITES_MARKERS = "not system and not kernel and not faults and not compat"
# PyPI name -> Debian package, for the runtime dependencies and the metrics extra
DEBIAN_NAMES = {
    "pyjwt": "python3-jwt",
    "cryptography": "python3-cryptography",
    "sdnotify": "python3-sdnotify",
    "tomli": "python3-tomli",
    "prometheus-client": "python3-prometheus-client",
}


def _cache_dir() -> Path:
    if "GTP5G_TEST_CACHE" in os.environ:
        return Path(os.environ["GTP5G_TEST_CACHE"]) / "venvs"
    system = Path("/var/cache/gtp5g-operator-tests")
    if os.access(system.parent, os.W_OK):
        return system / "venvs"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / \
        "gtp5g-operator-tests" / "venvs"


@dataclass(frozen=True)
class Entry:
    name: str
    constraints: str  # under packaging/
    pythons: Tuple[str, ...]  # acceptable interpreter versions, preferred first
    pinned: bool  # exact pins (==) as written, or resolved to the newest now


MATRIX = (
    Entry("ubuntu-22.04-oldest", "constraints-ubuntu-22.04.txt", ("3.10",), pinned=True),
    Entry("newest", "constraints-newest.txt", ("3.14", "3.13", "3.12", "3.11"), pinned=False),
)


# --- interpreters ----------------------------------------------------------------------------


def _python_version(exe: str) -> Optional[str]:
    """'3.10.13' when `exe` runs and can make venvs with pip, else None."""
    try:
        r = subprocess.run([exe, "-c", "import sys, venv, ensurepip; "
                                       "print('%d.%d.%d' % sys.version_info[:3])"],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def _candidates(minor: str) -> Iterator[str]:
    env = os.environ.get(f"GTP5G_PYTHON_{minor.replace('.', '_')}")
    if env:
        yield env
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == minor:
        yield sys.executable
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if pyenv.is_dir():
        builds = [p for p in pyenv.glob(f"{minor}.*") if re.fullmatch(r"\d+\.\d+\.\d+", p.name)]
        for build in sorted(builds, key=lambda p: int(p.name.split(".")[2]), reverse=True):
            yield str(build / "bin" / f"python{minor}")
    for d in ("/usr/local/bin", "/usr/bin"):
        yield f"{d}/python{minor}"
    found = shutil.which(f"python{minor}")
    if found:
        yield found


def find_python(versions: Tuple[str, ...]) -> Optional[Tuple[str, str]]:
    """(executable, full version) of the first of `versions` found here."""
    for minor in versions:
        for exe in _candidates(minor):
            full = _python_version(exe)
            if full and full.rsplit(".", 1)[0] == minor:
                return exe, full
    return None


# --- venvs -----------------------------------------------------------------------------------

PIP_ENV = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1",
           "PIP_REQUIRE_VIRTUALENV": ""}


def _run(argv: List[str], timeout: float = 900, **kwargs: object
         ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PIP_ENV)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                       **kwargs)  # type: ignore[call-overload]
    assert r.returncode == 0, (f"{' '.join(argv)} exited {r.returncode}:\n"
                               f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r  # type: ignore[no-any-return]


@contextlib.contextmanager
def _locked(name: str) -> Iterator[Path]:
    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield cache


def _pins(text: str) -> Dict[str, str]:
    """{canonical name: version} of the `name==version` lines of a requirements text."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[_canon(req.name)] = spec.version
    return pins


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def resolve_newest(python: str, full: str, requirements: Path) -> str:
    """The newest releases of `requirements` for this interpreter, as name==version lines."""
    with _locked(f"resolver-{full}") as cache:
        resolver = cache / f"resolver-{full}"
        if not (resolver / ".complete").exists():
            shutil.rmtree(resolver, ignore_errors=True)
            _run([python, "-m", "venv", str(resolver)])
            (resolver / ".complete").touch()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        _run([str(resolver / "bin" / "python"), "-m", "pip", "install", "--dry-run",
              "--ignore-installed", "--quiet", "--report", str(report), "-r",
              str(requirements)])
        installs = json.loads(report.read_text())["install"]
    return "".join(sorted(f"{i['metadata']['name']}=={i['metadata']['version']}\n"
                          for i in installs))


def venv_for(entry: Entry, python: str, full: str) -> Tuple[Path, Dict[str, str]]:
    """The cached venv of `entry` on `python`: (its python, {name: installed version})."""
    constraints = REPO / "packaging" / entry.constraints
    if entry.pinned:
        wanted = constraints.read_text()
        pins = _pins(wanted)
    else:
        wanted = resolve_newest(python, full, constraints)
        pins = _pins(wanted)
    key = hashlib.sha256(f"{full}\n{wanted}".encode()).hexdigest()[:12]
    with _locked(entry.name) as cache:
        venv = cache / f"{entry.name}-{key}"
        if not (venv / ".complete").exists():
            for old in cache.glob(f"{entry.name}-*"):  # other versions of this entry
                if old.is_dir():
                    shutil.rmtree(old)
            _run([python, "-m", "venv", str(venv)])
            (venv / "requirements.txt").write_text(wanted)
            _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                  "-r", str(venv / "requirements.txt")])
            frozen = _run([str(venv / "bin" / "python"), "-m", "pip", "list",
                           "--format=json"]).stdout
            (venv / ".complete").write_text(frozen)
    installed = {_canon(p["name"]): p["version"]
                 for p in json.loads((venv / ".complete").read_text())}
    for name, version in pins.items():
        assert installed.get(name) == version, (name, version, installed.get(name))
    return venv / "bin" / "python", installed


# --- the matrix ------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", MATRIX, ids=[e.name for e in MATRIX])
def test_unit_and_integration_suites_pass_with(entry: Entry) -> None:
    found = find_python(entry.pythons)
    if found is None:
        missing(f"{entry.name}: no Python {' or '.join(entry.pythons)} interpreter found "
                "(e.g. `pyenv install " + entry.pythons[0] + "`, or set GTP5G_PYTHON_"
                + entry.pythons[0].replace(".", "_") + ")")
        return
    python, full = found
    venv_python, installed = venv_for(entry, python, full)
    ours = ", ".join(f"{n} {installed[n]}" for n in DEBIAN_NAMES if n in installed)
    print(f"{entry.name}: Python {full}; {ours}; pytest {installed.get('pytest')}")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1")
    r = subprocess.run([str(venv_python), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-m", SUITES_MARKERS, "tests/unit", "tests/integration"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    summary = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    FINDINGS.append(f"{entry.name}: Python {full}; {ours}: {summary}")
    assert r.returncode != 5, "no tests collected:\n" + r.stdout[-3000:] + r.stderr[-3000:]
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) > 0, summary


# --- the floors ------------------------------------------------------------------------------


def _pyproject() -> Dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _control_fields() -> List[Dict[str, str]]:
    """debian/control's paragraphs as {field: value} (continuation lines joined)."""
    paragraphs: List[Dict[str, str]] = []
    current: Dict[str, str] = {}
    field = ""
    for line in (REPO / "debian" / "control").read_text().splitlines():
        if not line.strip():
            if current:
                paragraphs.append(current)
            current, field = {}, ""
        elif line.startswith("#"):
            continue
        elif line[0] in " \t":
            current[field] += " " + line.strip()
        else:
            field, _, value = line.partition(":")
            current[field] = value.strip()
    if current:
        paragraphs.append(current)
    return paragraphs


def _relations(value: str) -> List[List[Tuple[str, str]]]:
    """'a (>= 1) | b, c' -> [[('a', '>= 1'), ('b', '')], [('c', '')]] (substvars dropped)."""
    groups = []
    for group in value.split(","):
        alternatives = []
        for alt in group.split("|"):
            m = re.fullmatch(r"\s*([a-z0-9][a-z0-9+.-]*)(?::any)?\s*(?:\(\s*([<>=]+)\s*([^)\s]+)"
                             r"\s*\))?\s*(?:<[^>]*>)?\s*", alt)
            if m:
                alternatives.append((m.group(1), f"{m.group(2)} {m.group(3)}"
                                     if m.group(2) else ""))
        if alternatives:
            groups.append(alternatives)
    return groups


def _floor(req: Requirement) -> str:
    floors = [s.version for s in req.specifier if s.operator == ">="]
    assert len(floors) == 1 and len(req.specifier) == 1, f"{req}: one floor (>=) wanted"
    return floors[0]


def test_declared_floors_agree_and_are_the_tested_oldest() -> None:
    project = _pyproject()["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    metrics = [Requirement(r) for r in project["optional-dependencies"]["metrics"]]
    source, binary = _control_fields()[0], _control_fields()[1]
    depends = _relations(binary["Depends"])
    recommends = _relations(binary.get("Recommends", ""))
    oldest = _pins((REPO / "packaging" / "constraints-ubuntu-22.04.txt").read_text())
    lines = []

    for req, relations in [(r, depends) for r in declared] + [(r, recommends) for r in metrics]:
        name, floor = _canon(req.name), _floor(req)
        deb = DEBIAN_NAMES[name]
        assert oldest.get(name) == floor, (
            f"pyproject.toml: {req}: the floor is not the version tested as the oldest "
            f"(packaging/constraints-ubuntu-22.04.txt: {name}=={oldest.get(name)})")
        groups = [g for g in relations if any(pkg == deb for pkg, _ in g)]
        assert len(groups) == 1, f"debian/control: {deb} should appear once"
        (group,) = groups
        assert (deb, f">= {floor}") in group, (
            f"debian/control: {deb} should be versioned (>= {floor}) as {req} is: {group}")
        if req.marker is not None:
            # tomli; python_version < "3.11"  <->  python3 (>= 3.11) | python3-tomli (>= V)
            m = re.fullmatch(r'python_version\s*<\s*"(\d+\.\d+)"', str(req.marker))
            assert m, f"{req}: only a python_version < X marker is mapped to Debian"
            assert group == [("python3", f">= {m.group(1)}"), (deb, f">= {floor}")], (
                f"debian/control: expected 'python3 (>= {m.group(1)}) | {deb} (>= {floor})', "
                f"got {group}")
        else:
            assert len(group) == 1, f"debian/control: {deb} has alternatives: {group}"
        lines.append(f"{req.name} >= {floor} = {deb} (>= {floor})")

    # every versioned python3-* relation in control comes from pyproject
    named = {DEBIAN_NAMES[_canon(r.name)] for r in declared + metrics}
    for group in depends + recommends:
        for pkg, _version in group:
            if pkg.startswith("python3-"):
                assert pkg in named, f"debian/control: {pkg} is not in pyproject.toml"

    python_floor = project["requires-python"]
    assert re.fullmatch(r">=\s*3\.\d+", python_floor), python_floor
    # Absent since 0.2.0: every Debian release the package is built on ships a
    # newer Python (lintian: drop-python-version-declaration).  When present,
    # it must say what pyproject says.
    x_python = source.get("X-Python3-Version", python_floor)
    assert x_python.replace(" ", "") == python_floor.replace(" ", ""), (
        f"debian/control X-Python3-Version {x_python!r} != requires-python {python_floor!r}")
    FINDINGS.append("floors (pyproject.toml = debian/control = Ubuntu 22.04): Python "
                    f"{python_floor}; " + "; ".join(lines))
