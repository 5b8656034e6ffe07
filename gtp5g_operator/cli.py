"""Command line: `gtp5g-operator [--config PATH] [run|check-config]`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

from . import __version__
from .config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from .logsetup import setup_logging, stderr_is_journal

EX_CONFIG = 78  # sysexits.h; the unit's RestartPreventExitStatus= stops a crash loop on it

log = logging.getLogger("gtp5g_operator")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gtp5g-operator",
        description="Keep Gthulhu scheduling strategies equal to the live nr-gnb tasks "
                    "seen in trace_pipe.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", default=DEFAULT_CONFIG_PATH, metavar="PATH",
                        help="configuration file (TOML)")
    parser.add_argument("command", nargs="?", default="run", choices=("run", "check-config"),
                        help="run the daemon in the foreground, or only validate the "
                             "configuration")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        try:
            load_config(args.config)
        except ConfigError as exc:
            # Under systemd (ExecReload=) the journal reads <3> as priority "err".
            prefix = "<3>" if stderr_is_journal(os.environ, sys.stderr) else ""
            print(f"{prefix}error: {exc}", file=sys.stderr)
            return 1
        print("ok")
        return 0
    setup_logging()
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        log.error("invalid configuration, not starting: %s", exc)
        return EX_CONFIG
    setup_logging(config.log.level)
    from .daemon import Daemon

    return Daemon(config, args.config).run()


def entry() -> None:
    sys.exit(main())
