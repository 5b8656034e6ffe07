"""The command line, start-up errors, and trace source faults."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from gtp5g_operator import __version__
from testbed.harness import REPO, GnbProcess, TraceWriter
from testbed.tracelines import gtp5g_line
from tests.conftest import Env


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gtp5g_operator", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_version() -> None:
    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"gtp5g-operator {__version__}"


def test_check_config_ok_and_error(env: Env) -> None:
    env.write_config()
    out = run_cli("check-config", "--config", str(env.config_path))
    assert (out.returncode, out.stdout) == (0, "ok\n")
    env.config_path.write_text("[strategy]\ntargets = \"all\"\n")
    out = run_cli("--config", str(env.config_path), "check-config")
    assert out.returncode == 78
    assert out.stderr == (f'error: {env.config_path}: strategy.targets: expected one of '
                          '"tgid", "tid", "both", got "all"\n')


@pytest.mark.parametrize("command", [["check-config", "--print"], ["doctor", "--json"]])
def test_a_report_whose_reader_left_ends_quietly(env: Env, command: list[str]) -> None:
    """`doctor | head`: a reader that leaves before the end made a BrokenPipeError
    traceback (exit 1); a filter ends quietly with SIGPIPE's status."""
    env.write_config()
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte
    try:
        out = subprocess.run([sys.executable, "-m", "gtp5g_operator", "--config",
                              str(env.config_path), *command], cwd=REPO, stdout=write_end,
                             stderr=subprocess.PIPE, text=True, timeout=120,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        os.close(write_end)
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 141


def test_invalid_config_at_start_exits_78_before_ready(env: Env) -> None:
    env.config_path.write_text("[api]\nurl = 5\n")
    d = env.start(ready=False)
    assert d.proc.wait(10) == 78
    assert "invalid configuration, not starting" in d.log() and "api.url" in d.log()
    assert not any("READY" in m for m in env.notify.all())


def test_missing_key_file_exits_78(env: Env, tmp_path: Path) -> None:
    d = env.start(ready=False, api={"public_key": str(tmp_path / "nope.pem")})
    assert d.proc.wait(10) == 78
    assert f"{tmp_path / 'nope.pem'}: cannot read public key" in d.log()


def test_source_missing_at_start_then_created(env: Env, gnb: Callable[..., GnbProcess],
                                              tmp_path: Path) -> None:
    later = tmp_path / "later" / "trace_pipe"
    d = env.start(trace={"pipe": str(later)})  # READY does not wait for the source
    d.wait_log("cannot open trace source")
    time.sleep(1.0)
    assert d.log().count("cannot open trace source") == 1  # retried quietly, with backoff
    later.parent.mkdir()
    os.mkfifo(later)
    d.wait_log("reading trace source", timeout=30)  # its retry found the FIFO
    g = gnb(threads=())
    writer = TraceWriter(later)
    writer.open()  # the daemon has opened it: a reader exists
    writer.write(gtp5g_line("nr-gnb", g.pid, g.pid))
    env.api.wait_post(lambda s: {x["pid"] for x in s} == {g.pid})
    writer.close()


def test_source_eof_is_resumed(env: Env, gnb: Callable[..., GnbProcess]) -> None:
    d = env.start()
    g = gnb(threads=("nr-gnb-rlc",))
    env.writer.write(gtp5g_line("nr-gnb", g.pid, g.pid))
    env.writer.close()  # EOF for the reader
    d.wait_log("reached end of file")
    env.writer.open()  # a new writer: the daemon reopened by itself
    env.writer.write(gtp5g_line("nr-gnb-rlc", g.threads["nr-gnb-rlc"], g.pid))
    env.api.wait_post(lambda s: {x["pid"] for x in s} == set(g.tids))


def test_garbage_and_overlong_lines_are_survived(env: Env,
                                                 gnb: Callable[..., GnbProcess]) -> None:
    d = env.start()
    g = gnb(threads=())
    env.writer.write(b"\x00\xff\xfe random \x80 bytes\n" + os.urandom(4096) + b"\n")
    env.writer.write(b"A" * (1 << 20) + b"\n")  # 1 MiB line: dropped, counted, warned once
    env.writer.write(gtp5g_line("nr-gnb", g.pid, g.pid))
    env.api.wait_post(lambda s: {x["pid"] for x in s} == {g.pid})
    assert d.log().count("dropped a trace line longer than") == 1
    assert d.proc.poll() is None
