"""Run every check in order and print one line per check (or JSON).

The groups run in the issue's order; what a later group needs from an
earlier one (the configuration, the live targets) is passed along
explicitly.  A group that breaks unexpectedly becomes one FAIL line rather
than a traceback: the rest of the report is still worth having.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, List, Optional

from ...service.runtime_files import runtime_dir, state_dir
from .api import api_checks
from .config import config_checks
from .environment import environment_checks, read_creds
from .model import Check, fail
from .options import Options
from .output import exit_status, format_json, format_text
from .scheduler import scheduler_checks
from .service import read_state, service_checks
from .targets import find_targets, targets_checks
from .trace import locate, trace_checks


def guarded(group: str, run: Callable[[], List[Check]]) -> List[Check]:
    try:
        return run()
    except Exception as exc:  # a bug or an unforeseen file: say so, keep reporting
        return [fail(group, f"doctor could not check this: {type(exc).__name__}: {exc}",
                     "please report this as a bug")]


def run_checks(options: Options, sleep: Callable[[float], None] = time.sleep,
               systemctl: Optional[str] = None) -> List[Check]:
    outcome = config_checks(options.config)
    config = outcome.config
    site = locate(config.trace, options.tracefs, options.proc)
    creds = read_creds(options.proc)
    state, problem = read_state(options.runtime_dir or runtime_dir())
    targets = find_targets(options.proc, config.match)
    checks = list(outcome.checks)
    checks += guarded("environment", lambda: environment_checks(
        options.proc, creds, config.trace.allow_pid_namespace, site.access_paths(),
        config.match.exe))
    checks += guarded("trace", lambda: trace_checks(site, options.window, sleep))
    checks += targets_checks(config.match, targets)
    checks += guarded("api", lambda: api_checks(config, outcome.loaded, targets, state,
                                                state_dir()))
    checks += guarded("scheduler", lambda: scheduler_checks(options.sysfs))
    checks += guarded("service", lambda: service_checks(
        options.proc, options.runtime_dir or runtime_dir(), config.strategy.resync_interval,
        targets, time.time(), state, problem, systemctl))
    return checks


def doctor(options: Options) -> int:
    # The library logs what the daemon would (tokens obtained, clock skew); every
    # finding is in a check line already, so none of it goes to stderr.
    logging.getLogger("gtp5g_operator").addHandler(logging.NullHandler())
    checks = run_checks(options)
    print(format_json(checks) if options.as_json else format_text(checks), flush=True)
    return exit_status(checks)
