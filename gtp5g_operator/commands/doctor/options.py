"""The doctor's command line: its options, their help, and the roots it may inject.

Kept apart from the checks so that building the command-line parser (which
the daemon does at every start) imports nothing of them.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ...config.schema import DEFAULT_CONFIG_PATH

MAX_WINDOW = 60.0
DEFAULT_MAX_WAIT = 40.0  # % of runnable time: measured here, a gNB-like process waits <= 35 %
#                          alone on its CPU, >= 52 % beside one equal busy loop
DESCRIPTION = (
    "Check everything a boost depends on, in order: the configuration and its files, "
    "what the service's identity may read (asked of the kernel), the trace source, the "
    "targets on this host, the API and what the scheduler will boost, how long the "
    "gNB's tasks wait for a CPU, the sched_ext scheduler and the running service. One "
    "line per check (ok, warn or FAIL, what was seen, and after -> what to do). It "
    "changes nothing and reads no trace event.")
# Help that cli.py's other commands share with doctor's options: one wording of each.
CONFIG_HELP = f"main configuration file (default {DEFAULT_CONFIG_PATH})"
RUNTIME_DIR_HELP = ("where the daemon keeps state.json (default: $RUNTIME_DIRECTORY when it "
                    "holds one, else /run/gtp5g-operator)")
EPILOG = ("exit status: 0 when no check failed (warnings allowed), 1 when at least one "
          "failed, 2 when the command line is wrong.")


@dataclass(frozen=True)
class Options:
    config: str = DEFAULT_CONFIG_PATH
    proc: str = "/proc"
    sysfs: str = "/sys"
    tracefs: Optional[str] = None  # the tracing directory; None: from trace.pipe
    runtime_dir: Optional[str] = None  # None: runtime_files.published_dir()
    window: float = 1.0  # seconds to watch the trace counters and CPU wait
    max_wait: float = DEFAULT_MAX_WAIT / 100  # share of runnable time spent waiting
    as_json: bool = False


def _number(what: str, low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of {what}: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g} {what}")
        return value
    return parse


def add_parser(sub: Any, config_default: Any) -> argparse.ArgumentParser:
    """The `doctor` subcommand (`sub`: the main parser's subparsers)."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "doctor", help="check everything the service needs (changes nothing); exit 1 if a "
                       "check failed", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--config", default=config_default, metavar="PATH", help=CONFIG_HELP)
    parser.add_argument("--json", action="store_true",
                        help="print the checks as a JSON list of {name, subject, level, saw, "
                             "advice}; levels ok, warn, fail")
    parser.add_argument("--window", type=_number("seconds", 0.0, MAX_WINDOW), default=1.0,
                        metavar="SECONDS",
                        help="how long to watch the trace counters for arriving events and, "
                             "when the service has no CPU-wait window yet, the gNB's tasks "
                             "for CPU wait (default 1.0)")
    parser.add_argument("--max-wait", type=_number("%", 0.0, 100.0), default=DEFAULT_MAX_WAIT,
                        metavar="PERCENT",
                        help="warn when the gNB's tasks waited for a CPU more than this share "
                             f"of their runnable time (default {DEFAULT_MAX_WAIT:g})")
    for flag, what in (("--proc", "the proc file system (default /proc)"),
                       ("--sysfs", "sysfs, for sched_ext (default /sys)"),
                       ("--tracefs", "the tracing directory holding trace_pipe (default: "
                                     "where trace.pipe points)"),
                       ("--runtime-dir", RUNTIME_DIR_HELP)):
        parser.add_argument(flag, default=None, metavar="DIR",
                            help=f"{what}; for inspecting another root or for tests")
    return parser


def options_from(args: argparse.Namespace) -> Options:
    return Options(config=args.config, proc=args.proc or "/proc", sysfs=args.sysfs or "/sys",
                   tracefs=args.tracefs, runtime_dir=args.runtime_dir, window=args.window,
                   max_wait=args.max_wait / 100, as_json=args.json)
