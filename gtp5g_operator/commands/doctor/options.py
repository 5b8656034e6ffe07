"""The doctor's options: what the command line gives, with the roots it may inject.

Kept apart from the checks so that building the command-line parser (which
the daemon does at every start) imports nothing of them.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional

from ...config.schema import DEFAULT_CONFIG_PATH

MAX_WINDOW = 60.0


@dataclass(frozen=True)
class Options:
    config: str = DEFAULT_CONFIG_PATH
    proc: str = "/proc"
    sysfs: str = "/sys"
    tracefs: Optional[str] = None  # the tracing directory; None: from trace.pipe
    runtime_dir: Optional[str] = None  # None: $RUNTIME_DIRECTORY, else /run/gtp5g-operator
    window: float = 1.0  # seconds to watch the trace counters
    as_json: bool = False


def _window(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.0 <= value <= MAX_WINDOW:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_WINDOW:g} seconds")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print the checks as a JSON list of objects")
    for flag, what in (("--proc", "the proc file system (default /proc)"),
                       ("--sysfs", "sysfs, for sched_ext (default /sys)"),
                       ("--tracefs", "the tracing directory holding trace_pipe (default: "
                                     "where trace.pipe points)"),
                       ("--runtime-dir", "where the daemon keeps state.json (default: "
                                         "$RUNTIME_DIRECTORY, else /run/gtp5g-operator)")):
        parser.add_argument(flag, default=None, metavar="DIR",
                            help=f"{what}; for inspecting another root or for tests")
    parser.add_argument("--window", type=_window, default=1.0, metavar="SECONDS",
                        help="how long to watch the trace counters for arriving events "
                             "(default 1.0)")


def options_from(args: argparse.Namespace) -> Options:
    return Options(config=args.config, proc=args.proc or "/proc", sysfs=args.sysfs or "/sys",
                   tracefs=args.tracefs, runtime_dir=args.runtime_dir, window=args.window,
                   as_json=args.json)
