"""The minimum Python that pyproject.toml declares (requires-python), proven statically.

Two tools, because each sees what the other misses (tried on the constructs
below, vermin 1.9 and ruff 0.17):

* vermin knows which standard-library modules, members and keyword
  arguments each Python has (datetime.UTC, tomllib, ExceptionGroup,
  zip(strict=), enum.StrEnum, itertools.batched, ...).  It does not evaluate
  `if sys.version_info >= ...` guards, but it accepts the usual fallback
  `import tomli as tomllib` at module level (the alias makes the name the
  module's own); anything else newer behind a guard needs a `# novm` comment;
* ruff, given the target version, rejects newer *syntax* (match, except*,
  PEP 695 type parameters, PEP 701 f-strings) whatever Python runs it, and
  FA102 flags PEP 604 unions in annotations evaluated at run time.

Blind spots (none matters at 3.10): `X | Y` used as a value (e.g.
isinstance(x, int | str)) and methods called on a variable (n.bit_count()),
both 3.10 features; the unit and integration suites also run on Python 3.10
(test_library_versions.py), which catches these at run time.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest

from tests.compat.conftest import FINDINGS, missing

pytestmark = pytest.mark.compat

REPO = Path(__file__).resolve().parent.parent.parent


def declared_minimum() -> Tuple[int, int]:
    text = (REPO / "pyproject.toml").read_text()
    m = re.search(r'^requires-python\s*=\s*">=\s*(\d+)\.(\d+)"', text, re.M)
    assert m, "pyproject.toml: requires-python = \">=3.N\" expected"
    return int(m.group(1)), int(m.group(2))


def checked_paths() -> List[Path]:
    """The package, and the code `make demo` and the tests run on the same Python."""
    return [p for p in (REPO / "gtp5g_operator", REPO / "testbed", REPO / "tests")
            if p.is_dir()]


def _tool(argv: List[str], name: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300)
    if "No module named" in r.stderr and name in r.stderr:
        missing(f"{name} is not installed in this environment (pip install -e '.[test]')")
    return r


def vermin(paths: List[Path], minimum: Tuple[int, int]) -> subprocess.CompletedProcess[str]:
    return _tool(["-c", "import sys, vermin; sys.exit(vermin.main())",
                  "--no-tips", "--violations", f"-t={minimum[0]}.{minimum[1]}-", "--processes=1",
                  *map(str, paths)], "vermin")


def ruff(paths: List[Path], minimum: Tuple[int, int]) -> subprocess.CompletedProcess[str]:
    # --isolated: only the target version and FA102, not the project's lint rules
    # (syntax that needs a newer Python is always reported)
    return _tool(["-m", "ruff", "check", "--isolated", "--no-cache", "--output-format",
                  "concise", "--target-version", f"py{minimum[0]}{minimum[1]}", "--select", "FA102",
                  *map(str, paths)], "ruff")


def violations(paths: List[Path], minimum: Tuple[int, int]) -> List[str]:
    """What needs more than `minimum`, as the tools' lines (empty: nothing)."""
    found = []
    v = vermin(paths, minimum)
    if v.returncode != 0:
        found.append("vermin:\n" + (v.stdout + v.stderr).strip())
    r = ruff(paths, minimum)
    if r.returncode != 0:
        found.append("ruff:\n" + (r.stdout + r.stderr).strip())
    return found


def test_the_code_needs_no_newer_python_than_declared() -> None:
    minimum = declared_minimum()
    paths = checked_paths()
    assert REPO / "gtp5g_operator" in paths
    found = violations(paths, minimum)
    assert found == [], (f"pyproject.toml declares requires-python >= {minimum[0]}.{minimum[1]}"
                         ", but:\n" + "\n".join(found))
    FINDINGS.append(f"minimum Python {minimum[0]}.{minimum[1]}: vermin and ruff find nothing "
                    f"newer in {', '.join(p.name + '/' for p in paths)}")


# (id, the Python that first has it, code); each is checked against the declared minimum:
# flagged when it needs more, accepted when it does not.
PLANTED = [
    ("removeprefix", (3, 9), 'def f(s):\n    return s.removeprefix("x")\n'),
    ("match-statement", (3, 10), "def f(x):\n    match x:\n        case 1:\n            return 1\n"
                                 "    return 0\n"),
    ("zip-strict", (3, 10), "def f(a, b):\n    return list(zip(a, b, strict=True))\n"),
    ("int-bit-count", (3, 10), "def f(n):\n    return int.bit_count(n)\n"),
    ("dataclass-slots", (3, 10), "from dataclasses import dataclass\n\n\n"
                                 "@dataclass(slots=True)\nclass A:\n    x: int\n"),
    ("pep604-runtime-annotation", (3, 10), "def f(x: int | None) -> int:\n    return 0\n"),
    ("tomllib-with-fallback", (3, 0), "import sys\n\nif sys.version_info >= (3, 11):\n"
                                      "    import tomllib\nelse:\n"
                                      "    import tomli as tomllib\n"),
    ("tomllib-unguarded", (3, 11), "import tomllib\n"),
    ("datetime-UTC", (3, 11), "import datetime\n\n\ndef f():\n"
                              "    return datetime.datetime.now(datetime.UTC)\n"),
    ("ExceptionGroup", (3, 11), 'def f():\n    raise ExceptionGroup("x", [ValueError()])\n'),
    ("except-star", (3, 11), "def f():\n    try:\n        pass\n    except* ValueError:\n"
                             "        pass\n"),
    ("typing-Self", (3, 11), "from typing import Self\n"),
    ("enum-StrEnum", (3, 11), "import enum\n\n\nclass C(enum.StrEnum):\n    A = 'a'\n"),
    ("pep695-generic", (3, 12), "def f[T](x: T) -> T:\n    return x\n"),
    ("pep701-fstring", (3, 12), 'def f(d):\n    return f"{d["k"]}"\n'),
    ("itertools-batched", (3, 12), "import itertools\n\n\ndef f(x):\n"
                                   "    return list(itertools.batched(x, 2))\n"),
    ("copy-replace", (3, 13), "import copy\n\n\ndef f(x):\n    return copy.replace(x)\n"),
]


@pytest.mark.parametrize("needs, code", [(n, c) for _, n, c in PLANTED],
                         ids=[i for i, _, _ in PLANTED])
def test_the_check_flags_what_needs_more_than_the_minimum(tmp_path: Path, needs: Tuple[int, int],
                                                          code: str) -> None:
    """The check can fail: each construct is planted in a module of its own and must be
    flagged exactly when it needs a newer Python than the declared minimum."""
    minimum = declared_minimum()
    module = tmp_path / "planted.py"
    module.write_text('"""planted"""\n\n' + code)
    found = violations([module], minimum)
    if needs > minimum:
        assert found, f"{code!r} needs {needs} > {minimum}, but the check let it pass"
    else:
        assert found == [], f"{code!r} runs on {minimum}, but the check refused it: {found}"


@pytest.mark.parametrize("code", [c for _, n, c in PLANTED if n == (3, 10)],
                         ids=[i for i, n, _ in PLANTED if n == (3, 10)])
def test_the_check_would_hold_a_lower_minimum_too(tmp_path: Path, code: str) -> None:
    """Had we declared 3.9, the check would refuse 3.10 constructs (so 3.10 is a choice)."""
    module = tmp_path / "planted.py"
    module.write_text('"""planted"""\n\n' + code)
    assert violations([module], (3, 9))
