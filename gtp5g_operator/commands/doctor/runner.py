"""Run every check in order and print one line per check (or JSON).

The groups run in the issue's order; what a later group needs from an
earlier one (the configuration, the live targets, the service's state and
identity, the read-back) is passed along explicitly.  Doctor waits once: the
trace counters and, when the running service has no CPU-wait window to show,
the live tasks' schedstat are read at both ends of the same window.  A group
that breaks unexpectedly becomes one FAIL line rather than a traceback: the
rest of the report is still worth having.
"""

from __future__ import annotations

import logging
import shutil
import time
from typing import Callable, List, Optional, Sequence, Type

from ...config import Config, Vocabulary
from ...core.boost_verdict import scheduler_finding
from ...core.sched_ext import read_scheduler
from ...gthulhu.registry import FLAVORS
from ...gthulhu.writer import ApiWriter
from ...service.runtime_files import daemon_alive, published_dir, read_state, state_dir
from ...service.vocabulary import VOCABULARY
from .api import ApiProbe, not_loaded
from .config import config_checks
from .cpu_wait import CpuWait
from .environment import environment_checks, other_user_process
from .identity import Questions, ask, judge_as
from .model import Check, fail
from .options import Options
from .output import exit_status, format_json, format_text
from .scheduler import scheduler_checks
from .service import service_checks, unit_hidden
from .targets import Target, find_targets, targets_checks
from .trace import TraceSite, locate, trace_checks, watch


def guarded(group: str, run: Callable[[], List[Check]]) -> List[Check]:
    try:
        return run()
    except Exception as exc:  # a bug or an unforeseen file: say so, keep reporting
        return [fail(group, f"doctor could not check this: {type(exc).__name__}: {exc}",
                     "please report this as a bug")]


def run_checks(options: Options, systemctl: Optional[str] = None,
               flavors: Sequence[Type[ApiWriter]] = FLAVORS) -> List[Check]:
    """`flavors`: the registry (a test registers a flavor of its own)."""
    vocabulary = Vocabulary(flavors, VOCABULARY.readers)
    systemctl = systemctl or shutil.which("systemctl")
    outcome = config_checks(options.config, vocabulary=vocabulary,
                            hidden=unit_hidden(systemctl))
    config, proc = outcome.config, options.proc
    site = locate(config.trace, options.tracefs, proc)
    directory = options.runtime_dir or published_dir()
    state, problem = read_state(directory)
    pid = state.get("pid") if state is not None else None
    alive = daemon_alive(pid, proc, directory)
    targets = find_targets(proc, config.match)
    checks = list(outcome.checks)
    checks += guarded("environment", lambda: _environment(
        proc, config, site, targets, pid if alive else None))
    cpu = CpuWait(state if alive else None, proc,
                  [task for t in targets if t.boosted for task in t.tasks], options.window)
    cpu.sample()
    window = watch(site.directory, options.window, anyway=cpu.live is not None)
    cpu.sample()
    checks += guarded("trace", lambda: trace_checks(
        site, window, pid if alive and isinstance(pid, int) else None))
    checks += targets_checks(config.match, targets)
    scheduler = read_scheduler(options.sysfs)
    blocked = scheduler_finding(scheduler)  # nothing reads what the server lists
    api = ApiProbe(config, targets, state, state_dir(), flavors=flavors,
                   scheduler=scheduler) if outcome.loaded else None
    checks += guarded("api", api.run if api is not None else not_loaded)
    comparison = api.comparison if api is not None else None
    checks += guarded("cpu wait", lambda: cpu.checks(options.max_wait, comparison))
    checks += guarded("scheduler", lambda: scheduler_checks(options.sysfs, scheduler))
    checks += guarded("service", lambda: service_checks(
        alive, config.strategy.resync_interval, targets, time.time(), state, problem,
        systemctl, config.files or (config.source,), options.runtime_dir is None,
        blocked.message if blocked is not None else ""))
    return checks


def _environment(proc: str, config: Config, site: TraceSite, targets: List[Target],
                 service_pid: Optional[int]) -> List[Check]:
    """What the service's identity may read, asked of the kernel as that identity."""
    who = judge_as(proc, service_pid)
    other = other_user_process(proc, targets, who.uid)
    paths = site.access_paths()
    answers = ask(who, Questions(tuple(paths), other[0] if other else None, proc))
    return environment_checks(proc, who, answers, other, config.trace.allow_pid_namespace,
                              paths, config.match.exe)


def doctor(options: Options) -> int:
    # The library logs what the daemon would (tokens obtained, clock skew); every
    # finding is in a check line already, so none of it goes to stderr.
    logging.getLogger("gtp5g_operator").addHandler(logging.NullHandler())
    checks = run_checks(options)
    print(format_json(checks) if options.as_json else format_text(checks), flush=True)
    return exit_status(checks)
