"""The process environment a careless admin (or an unusual systemd) gives the daemon:
its umask, its systemd variables, its resource limits.  Each is either handled as
under the unit, or one clear error line and an exit code: never a traceback, never
files that others may rewrite.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from testbed.harness import REPO, DaemonProcess, NotifySocket, wait_until
from tests.conftest import Env
from tests.faults.test_robustness import free_port

pytestmark = pytest.mark.faults


def with_umask(umask: str) -> tuple[str, ...]:
    """A prefix that runs the daemon's command line under `umask` (same PID)."""
    return ("sh", "-c", f'umask {umask} && exec "$@"', "with-umask")


@pytest.mark.parametrize("umask", ["000", "077"])
def test_the_directories_it_makes_are_0755_whatever_the_umask(env: Env, tmp_path: Path,
                                                              umask: str) -> None:
    """Run by hand (no RuntimeDirectory=/StateDirectory=), the daemon makes its own
    directories.  Under umask 000 they were world-writable: anyone could replace
    owned.json and have the daemon delete the entries it names.  Under umask 077
    they were root's alone: the endpoint, which reads them as nobody, never served."""
    env.write_config(strategy={"mode": "merge"})  # merge mode records owned.json
    run, state = tmp_path / "new" / "run", tmp_path / "new" / "state"
    d = DaemonProcess(env.config_path, env.notify, tmp_path / "umask.log",
                      env={"RUNTIME_DIRECTORY": str(run), "STATE_DIRECTORY": str(state)},
                      prefix=with_umask(umask))
    env.daemons.append(d)
    wait_until(lambda: (run / "state.json").exists() and (state / "owned.json").exists(),
               30, "state.json and owned.json")
    for directory in (tmp_path / "new", run, state):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755, directory
    assert stat.S_IMODE((state / "owned.json").stat().st_mode) == 0o600


@pytest.mark.parametrize("variables", [
    {"WATCHDOG_USEC": "²"},
    # Arabic-Indic digits: int() takes them, systemd does not
    {"WATCHDOG_USEC": "\u0661\u0660\u0660\u0660\u0660\u0660"},
    {"WATCHDOG_USEC": "100000", "WATCHDOG_PID": "²"},
    {"JOURNAL_STREAM": "²:1"},
], ids=["usec-superscript", "usec-arabic", "pid-superscript", "journal-stream"])
def test_systemd_variables_that_are_not_decimal_numbers_are_ignored(
        env: Env, variables: dict[str, str]) -> None:
    """str.isdigit() is true of '²', on which int() raised: the daemon died at start
    with a traceback (and check-config, the unit's ExecReload=, too for JOURNAL_STREAM)."""
    d = env.start(env=variables)
    env.api.wait_post(lambda s: True)
    assert not [m for m in env.notify.all() if "WATCHDOG" in m]
    assert "Traceback" not in d.log()
    assert d.stop() == 0


def with_fd_limit(limit: int) -> tuple[str, ...]:
    """A prefix that runs the daemon's command line with RLIMIT_NOFILE = `limit`."""
    code = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, "
            f"({limit}, {limit})); os.execv(sys.argv[1], sys.argv[1:])")
    return (sys.executable, "-c", code)


def readme_fd_range() -> tuple[int, int]:
    """The ends of the fault table's 'too low for the start (LO-HI fds' range (an en dash)."""
    found = re.search(r"too low for the start \((\d+)\u2013(\d+) fds",
                      (REPO / "README.md").read_text(encoding="utf-8"))
    assert found, "README's LimitNOFILE= row"
    return int(found[1]), int(found[2])


@pytest.mark.parametrize("end", ["low", "high", "above"])
def test_too_few_file_descriptors_to_start_is_one_line_and_exit_71(
        env: Env, tmp_path: Path, end: str) -> None:
    """LimitNOFILE= far too low: the start failed opening a socket, the epoll fd or a
    module (prometheus_client, imported late) with a traceback and exit 1.  The ends of
    README's range exit 71 and one more descriptor starts (the endpoint retries): the
    range moved when the start took one more (the state directory's lock), and the
    README said 5 to 8 where 9 and 10 failed too."""
    low, high = readme_fd_range()
    limit = {"low": low, "high": high, "above": high + 1}[end]
    env.write_config(metrics={"listen": f"127.0.0.1:{free_port()}"})
    d = DaemonProcess(env.config_path, env.notify, tmp_path / "nofile.log",
                      prefix=with_fd_limit(limit))
    env.daemons.append(d)
    if end == "above":  # as under the unit: the notify socket is one of them
        env.notify.wait("READY", "1", timeout=30)
        return
    assert d.proc.wait(30) == 71, d.log()  # EX_OSERR
    assert "Traceback" not in d.log()
    errors = [line for line in d.log().splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "cannot start: [Errno 24] Too many open files" in errors[0]
    assert not any(m.get("READY") for m in env.notify.all())


def test_a_start_out_of_memory_is_logged_once_its_frames_are_let_go() -> None:
    """Under a LimitAS= just too low (45 MB on the machine that found it, a band of half a
    megabyte) the line was lost: logged while the handler still held the failed start's
    traceback (a module half imported), logging raised MemoryError too: '--- Logging
    error ---', a traceback, no line, exit 71.  The daemon's own `run`, its start
    replaced by one that fails holding an object, shows when those frames are let go."""
    code = textwrap.dedent("""
        import sys
        from gtp5g_operator import cli
        class Held:
            def __del__(self):
                print("frames let go", file=sys.stderr, flush=True)
        def start(path):
            held = Held()  # what the failed start's frames hold
            raise MemoryError
        cli._start = start
        sys.exit(cli.main(["run", "--config", "/nonexistent"]))""")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    lines = out.stderr.splitlines()
    assert out.returncode == 71 and len(lines) == 2, out.stderr
    assert lines[0] == "frames let go", out.stderr
    assert lines[1].endswith("ERROR   cannot start: MemoryError"), out.stderr


def test_pings_reach_a_notify_socket_bound_again_after_it_went_away(env: Env) -> None:
    """The datagram socket stayed connected to the socket that went away: every later
    notification failed (ECONNREFUSED, then ENOTCONN for good) though one listened at
    NOTIFY_SOCKET again, and the log said 'will keep trying' twice."""
    d = env.start(env={"WATCHDOG_USEC": "400000"})  # a ping every 0.2 s
    env.notify.wait("WATCHDOG", "1")
    env.notify.close()
    env.notify.path.unlink()
    d.wait_log("(will keep trying)")
    env.notify = NotifySocket(env.notify.path)
    env.notify.wait("WATCHDOG", "1", timeout=10)
    d.wait_log("sd_notify works again")
    assert d.log().count("will keep trying") == 1, d.log()
    assert d.stop() == 0


def test_a_closed_stdout_ends_as_it_would_open(env: Env, tmp_path: Path) -> None:
    """fd 1 closed at start (a wrapper's `exec >&-`): Python's sys.stdout is None, and
    the flush entry() makes to find a reader gone died on it: a stop of the running
    daemon ended with an AttributeError traceback and exit 1, as did `check-config`."""
    env.write_config()
    closed = ("sh", "-c", 'exec "$@" >&-', "closed-stdout")
    d = DaemonProcess(env.config_path, env.notify, tmp_path / "closed.log", prefix=closed)
    env.daemons.append(d)
    env.notify.wait("READY", "1", timeout=30)
    assert d.stop() == 0, d.log()
    assert "Traceback" not in d.log()
    out = subprocess.run([*closed, sys.executable, "-m", "gtp5g_operator", "check-config",
                          "--config", str(env.config_path)], cwd=REPO, stderr=subprocess.PIPE,
                         text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr


def test_a_closed_stderr_under_journal_stream_still_starts(env: Env, tmp_path: Path) -> None:
    """fd 2 closed at start (a wrapper's `exec 2>&-`) while JOURNAL_STREAM is set: Python's
    sys.stderr is None, and the check for the journal stream died on it: exit 1 before
    READY=1 with nothing said anywhere (check-config, the unit's ExecReload=, too)."""
    env.write_config()
    d = DaemonProcess(env.config_path, env.notify, tmp_path / "closed.log",
                      env={"JOURNAL_STREAM": "8:12345"},
                      prefix=("sh", "-c", 'exec "$@" 2>&-', "closed-stderr"))
    env.daemons.append(d)
    wait_until(lambda: d.proc.poll() is not None or env.notify.all(), 30, "READY=1 or an exit")
    env.notify.wait("READY", "1", timeout=5)
    env.api.wait_post(lambda s: True)
    assert d.stop() == 0
