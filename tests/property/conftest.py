"""Hypothesis profiles for the property tests: a fixed budget of examples.

GTP5G_HYPOTHESIS_PROFILE picks one; the default is "ci" when CI is set (as in
the CI run), else "dev".

* ci: `derandomize`, so a CI run tries the same examples every time (a
  failure is reproduced by re-running it) and no example database;
* dev: random examples at the same budget, with a database under
  .hypothesis/ that replays a failure found on this machine first;
* thorough: 50x the examples, random, for a soak by hand
  (GTP5G_HYPOTHESIS_PROFILE=thorough make test ... or pytest tests/property).

No per-example `deadline` in any of them: an example that is slow only
because the CI host is loaded must not fail.  tests/property/bounds.py puts a
generous, enforced bound on each call instead.
"""

from __future__ import annotations

import os

import pytest

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover - the `test` extra installs it
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise  # CI=true: these properties are the point, their tool must be there
    settings = None  # type: ignore[assignment,misc]

EXAMPLES = 100  # per property: all of tests/property cost ~20 s of CPU on a 2-vCPU VM

if settings is not None:
    _common = {
        "deadline": None,
        # a loaded host makes generation look slow; the bounds judge the code, not the host
        "suppress_health_check": [HealthCheck.too_slow],
        "print_blob": True,
    }
    settings.register_profile("ci", max_examples=EXAMPLES, derandomize=True, database=None,
                              **_common)  # type: ignore[arg-type]
    settings.register_profile("dev", max_examples=EXAMPLES, **_common)  # type: ignore[arg-type]
    settings.register_profile("thorough", max_examples=50 * EXAMPLES,
                              **_common)  # type: ignore[arg-type]
    _default = "ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "dev"
    settings.load_profile(os.environ.get("GTP5G_HYPOTHESIS_PROFILE", _default))
else:  # pragma: no cover
    collect_ignore_glob = ["test_*.py"]

    def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
        terminalreporter.write_line("tests/property not run: hypothesis is not installed "
                                    "(pip install -e '.[test]')")
