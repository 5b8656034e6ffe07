"""Command line: `gtp5g-operator [--config PATH] [run | check-config | status | doctor]`."""

from __future__ import annotations

import argparse
import io
import logging
import os
import shutil
import signal
import sys
from typing import TYPE_CHECKING, AbstractSet, List, Optional, Union

from . import __version__
from .commands.doctor.options import CONFIG_HELP, RUNTIME_DIR_HELP, options_from
from .commands.doctor.options import add_parser as add_doctor
from .config import DEFAULT_CONFIG_PATH, ConfigError
from .core.procfs import namespace_refusal
from .service.logsetup import setup_logging, stderr_is_journal
from .service.signals import HANDLED, stop_status
from .service.vocabulary import load

if TYPE_CHECKING:
    from .service.daemon import Daemon

EX_CONFIG = 78  # sysexits.h; the unit's RestartPreventExitStatus= stops a crash loop on it
EX_OSERR = 71  # sysexits.h: the system refused what the start needs
EX_TEMPFAIL = 75  # sysexits.h: another daemon uses the state or runtime directory

log = logging.getLogger("gtp5g_operator")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gtp5g-operator",
        description="Keep Gthulhu scheduling strategies equal to the live nr-gnb tasks "
                    "seen in the kernel's trace buffer.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", default=DEFAULT_CONFIG_PATH, metavar="PATH",
                        help=f"configuration file (TOML; default {DEFAULT_CONFIG_PATH})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    here = argparse.SUPPRESS  # a subcommand's --config overrides the global one
    run = sub.add_parser("run", help="run the daemon in the foreground (the default)",
                         description="Run the daemon in the foreground (systemd's "
                                     "Type=notify). Exit 78 on an invalid configuration, "
                                     "or in a PID namespace other than the initial one "
                                     "(unless trace.allow_pid_namespace is set); exit 75 "
                                     "while another daemon uses the state or runtime "
                                     "directory; exit 71 when the system refuses what the "
                                     "start needs (file descriptors, memory); exit 128+N "
                                     "after a clean stop by a signal N other than SIGTERM "
                                     "and SIGINT (systemd restarts it).")
    run.add_argument("--config", default=here, metavar="PATH",
                     help=f"{CONFIG_HELP}; its directory's config.d/*.toml are read after it")
    check = sub.add_parser(
        "check-config", help="validate the configuration and the files it names",
        description="Validate the main file, its drop-ins (config.d/*.toml) and every file "
                    "they name, exactly as the daemon would; print ok, or the error and exit "
                    "78 (EX_CONFIG).")
    check.add_argument("--config", default=here, metavar="PATH", help=CONFIG_HELP)
    check.add_argument("--print", action="store_true", dest="print_config",
                       help="print the effective configuration, each value with the file "
                            "that set it (or \"default\")")
    status = sub.add_parser(
        "status", help="show the running daemon's state",
        description="Show the running daemon's state from the state.json it keeps in its "
                    "runtime directory. Exit 3 when the daemon is not running (no "
                    "state.json, or a stale one); exit 1 when state.json cannot be read "
                    "or is not the daemon's, or the unit runs without one.")
    status.add_argument("--json", action="store_true", help="print the raw state (JSON)")
    status.add_argument("--runtime-dir", default=None, metavar="DIR", help=RUNTIME_DIR_HELP)
    add_doctor(sub, here)
    return parser


def main(argv: Optional[List[str]] = None, held: Optional[AbstractSet[int]] = None) -> int:
    """`held`: the signal mask found before __main__ held the daemon's signals, given back
    to every command but `run` (whose loop takes them)."""
    _never_fail_on_text()
    args = build_parser().parse_args(argv)
    if held is not None and args.command not in (None, "run"):
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    if args.command == "status":
        return _status(args)
    if args.command == "doctor":
        from .commands.doctor.runner import doctor

        return doctor(options_from(args))
    if args.command == "check-config":
        return _check_config(args.config, args.print_config)
    return _run(args.config)


def _never_fail_on_text() -> None:
    """What we print holds text others chose: a process's path or name (any bytes,
    read back as lone surrogates), a server's strings.  Under a strict UTF-8
    locale one such character would end the report with a traceback: show it
    escaped instead."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def _status(args: argparse.Namespace) -> int:
    from .commands.doctor.service import probe_unit
    from .commands.status import show_status
    from .service.runtime_files import published_dir

    # The unit speaks for its own directory only, not for one given with --runtime-dir
    unit = None if args.runtime_dir else lambda: probe_unit(shutil.which("systemctl"))
    code, text = show_status(args.runtime_dir or published_dir(), args.json, unit)
    print(text, file=sys.stdout if code == 0 else sys.stderr)
    return code


def _check_config(path: str, print_config: bool = False) -> int:
    try:
        config = load(path)
    except ConfigError as exc:
        # Under systemd (ExecReload=) the journal reads <3> as priority "err".
        prefix = "<3>" if stderr_is_journal(os.environ, sys.stderr) else ""
        print(f"{prefix}error: {exc}", file=sys.stderr)
        return EX_CONFIG  # as `run` exits on the same configuration
    # The configuration is valid wherever it is checked (a package build, a config
    # management run in a container); that `run` would refuse to start *here* is said.
    refusal = namespace_refusal(config.trace.allow_pid_namespace)
    if refusal:
        print(f"warning: run would not start here: {refusal}", file=sys.stderr)
    if print_config:
        from .config.render import effective_config

        print(effective_config(config), end="")
    else:
        print("ok")
    return 0


def _run(path: str) -> int:
    # Until the daemon installs its handlers (SignalWaker.install unblocks them), a signal
    # it handles waits: by default SIGHUP, SIGUSR1 or SIGUSR2 during the start would end
    # the process (a `systemctl kill -s HUP` or a state report right after a restart).
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    setup_logging()
    try:
        daemon = _start(path)
    except (OSError, MemoryError, ImportError) as exc:
        # What a limit or a full system leaves the start without (RLIMIT_NOFILE,
        # RLIMIT_AS: a module or a shared library that cannot be opened or mapped): one
        # line, not a traceback, and systemd's restart may find the resources back.  Once
        # running, the loop's components outlive these (service/guard.py).
        why = str(exc) or type(exc).__name__
    else:
        if isinstance(daemon, int):
            return daemon
        return daemon.run() or stop_status(daemon.signals.stopped_by)
    # Logged once the handler has let go of the exception: its traceback holds the failed
    # start's frames (a module half imported), and under LimitAS= logging the line then
    # raised MemoryError too ("--- Logging error ---", a traceback, and no line at all).
    log.error("cannot start: %s", why)
    return EX_OSERR


def _start(path: str) -> Union[int, Daemon]:
    """The daemon, set up and about to say READY=1; or the exit status of a refusal."""
    try:
        config = load(path)
    except ConfigError as exc:
        log.error("invalid configuration, not starting: %s", exc)
        return EX_CONFIG
    setup_logging(config.log.level)
    refusal = namespace_refusal(config.trace.allow_pid_namespace)
    if refusal:
        log.error("not starting: %s", refusal)
        return EX_CONFIG
    from .service.daemon import Daemon
    from .service.runtime_files import (
        AlreadyRunning,
        check_runtime_directory,
        hold_state_directory,
        runtime_dir,
        state_dir,
    )

    try:
        # The runtime directory first: its state.json names the daemon publishing there
        # (by default the one holding the state directory too), which /proc/locks cannot
        # where /proc shows PIDs only (ProcSubset=pid).  The lock is held until the process ends:
        # before anything is written or sent.
        check_runtime_directory(runtime_dir())
        hold_state_directory(state_dir())
    except AlreadyRunning as exc:
        log.error("not starting: %s", exc)
        return EX_TEMPFAIL
    daemon = Daemon(config, path)
    try:
        daemon.setup()
    except BaseException:
        daemon.close()  # what it opened and published (state.json) goes with it
        raise
    return daemon


def entry(held: Optional[AbstractSet[int]] = None) -> None:
    try:
        code = main(held=held)
        if sys.stdout is not None:  # None: fd 1 closed at start (a wrapper's `exec >&-`)
            sys.stdout.flush()  # a reader gone is found here, not at the interpreter's exit
    except BrokenPipeError:
        # `doctor | head`: the reader left before the report's end.  A filter ends
        # quietly then (SIGPIPE's status), not with a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 128 + signal.SIGPIPE
    sys.exit(code)
