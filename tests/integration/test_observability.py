"""Metrics (endpoint and textfile), `status`, and the merge / clear modes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Set, Tuple

import pytest

from gtp5g_operator import __version__
from testbed.fake_gthulhu import FakeGthulhu
from testbed.harness import (
    REPO,
    SYSTEM_PYTHON,
    DaemonProcess,
    GnbProcess,
    TraceWriter,
    public_copy,
    wait_until,
)
from testbed.tracelines import gtp5g_line
from tests.conftest import Env

prometheus_client = pytest.importorskip("prometheus_client",
                                        reason="metrics need prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse(text: str) -> Dict[str, float]:
    """{'name{label="v"}': value} for every sample."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def scrape(port: int) -> Dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return parse(r.read().decode())


def pids(strategies: List[Dict[str, Any]]) -> Set[int]:
    return {s["pid"] for s in strategies if "pid" in s}  # selector strategies have none


def test_metrics_endpoint_and_textfile_follow_the_scenario(
        env: Env, gnb: Callable[..., GnbProcess], tmp_path: Path) -> None:
    port = free_port()
    textfile = tmp_path / "gtp5g_operator.prom"
    d = env.start(metrics={"listen": f"127.0.0.1:{port}", "textfile": str(textfile)})
    env.api.wait_post(lambda s: s == [])
    before = wait_until(lambda: scrape(port).get('gtp5g_operator_pushes_total{result="ok"}')
                        and scrape(port), 20, "first push counted")
    assert before["gtp5g_operator_tracked_processes"] == 0
    if not os.path.isdir("/sys/kernel/sched_ext"):  # this kernel: strategies have no effect
        assert before['gtp5g_operator_scheduler_enabled{ops=""}'] == 0
    assert before[f'gtp5g_operator_build_info{{version="{__version__}"}}'] == 1
    g = gnb(threads=("nr-gnb-rlc",))
    env.writer.write("".join(gtp5g_line("nr-gnb", t, g.pid) for t in g.tids) + "junk\n")
    env.api.wait_post(lambda s: pids(s) == set(g.tids))
    ok = 'gtp5g_operator_pushes_total{result="ok"}'

    def after_the_push() -> Dict[str, float]:
        # The server saw the POST before the daemon read its answer and counted it:
        # wait for the metrics of the push, not only of the tracked process.
        now = scrape(port)
        return now if now["gtp5g_operator_tracked_processes"] == 1 and now[ok] > before[ok] \
            else {}

    after = wait_until(after_the_push, 20, "tracked process and its push in metrics")
    assert after["gtp5g_operator_tracked_tasks"] == 2
    assert after["gtp5g_operator_trace_lines_total"] == 2  # the junk line is not a trace line
    assert after["gtp5g_operator_trace_bytes_total"] > 100
    assert after["gtp5g_operator_detect_to_push_seconds_count"] == 2
    assert 0 < after["gtp5g_operator_detect_to_push_seconds_sum"] < 2
    assert after["gtp5g_operator_token_refreshes_total"] == 1
    assert after["gtp5g_operator_last_successful_push_timestamp_seconds"] > 1.7e9
    # the textfile: same metrics, atomically replaced, readable by node-exporter
    file_values = wait_until(lambda: textfile.exists() and parse(textfile.read_text()).get(
        "gtp5g_operator_tracked_processes") == 1 and parse(textfile.read_text()), 20,
        "textfile with the tracked process")
    assert file_values["gtp5g_operator_tracked_tasks"] == 2
    assert textfile.stat().st_mode & 0o777 == 0o644
    # a reload is counted by result
    d.signal(signal.SIGHUP)
    wait_until(lambda: scrape(port).get('gtp5g_operator_config_reloads_total{result="ok"}')
               == 1, 20, "reload counted")
    # an over-long line (its newline arrives late, so it must be held) is dropped, counted
    env.writer.write(b"x" * (64 * 1024))
    time.sleep(0.2)
    env.writer.write(b"\n")
    wait_until(lambda: scrape(port)["gtp5g_operator_trace_dropped_lines_total"] == 1, 20,
               "dropped line counted")


def test_a_textfile_no_longer_configured_is_removed(env: Env, tmp_path: Path) -> None:
    """node-exporter would export a file left behind for ever: the one the service no
    longer keeps is removed, whether a reload or a restart moved the setting — and only
    that one (the record in the state directory says which)."""
    first, second, third = (tmp_path / f"{n}.prom" for n in ("first", "second", "third"))
    stranger = tmp_path / "someone-elses.prom"
    stranger.write_text("# another exporter's file\n")
    d = env.start(metrics={"textfile": str(first)})
    wait_until(first.exists, 30, "the first textfile")
    env.write_config(metrics={"textfile": str(second)})
    d.signal(signal.SIGHUP)
    wait_until(lambda: second.exists() and not first.exists(), 30,
               "the second textfile, the first removed")
    d.stop()
    env.start(metrics={"textfile": str(third)})  # the setting changed while stopped
    wait_until(lambda: third.exists() and not second.exists(), 30,
               "the third textfile, the second removed")
    assert stranger.exists() and not first.exists()


def test_a_textfile_in_a_missing_directory_is_said_and_the_directory_not_made(
        env: Env, tmp_path: Path) -> None:
    """The textfile's directory is node-exporter's: a typo in it ("node_exporter") must
    be one warning naming the file and the key, not a directory of the daemon's making
    that nobody reads (it made one, and said nothing).  Written once it exists."""
    directory = tmp_path / "node_exporter"
    textfile = directory / "gtp5g_operator.prom"
    d = env.start(metrics={"textfile": str(textfile)})
    d.wait_log(f"cannot write {textfile}: No such file or directory (metrics.textfile)")
    assert not directory.exists()
    directory.mkdir()
    wait_until(lambda: textfile.exists() and "gtp5g_operator_build_info" in textfile.read_text(),
               30, "the textfile written once its directory exists")
    d.wait_log(f"{textfile} written again")


def test_a_textfile_node_exporter_would_not_read_is_warned_about(
        env: Env, tmp_path: Path) -> None:
    """node-exporter's textfile collector reads only *.prom files (and a purge removes
    only those): a metrics.textfile named otherwise was written at every push, never
    exported, and nothing said so.  Warned at start and by a reload that sets it; the
    file is still written (a metrics file is no reason to stop boosting the gNB)."""
    textfile = tmp_path / "gtp5g_operator.txt"
    d = env.start(metrics={"textfile": str(textfile)})
    said = (f"metrics.textfile {textfile} does not end in .prom: node-exporter's textfile "
            "collector reads only *.prom files")
    d.wait_log(said)
    wait_until(textfile.exists, 30, "the textfile written anyway")
    other = tmp_path / "other.txt"
    n = len(env.notify.all())
    env.write_config(metrics={"textfile": str(other)})
    d.signal(signal.SIGHUP)
    env.notify.wait("READY", "1", after=n)
    d.wait_log(f"metrics.textfile {other} does not end in .prom")
    assert d.log().count("does not end in .prom") == 2


def test_a_reload_that_turns_the_endpoint_off_leaves_no_metrics_file(
        env: Env, tmp_path: Path) -> None:
    """metrics.prom in the runtime directory is what the endpoint serves.  A reload that
    set metrics.listen to "" left it there with the values of that moment (a start
    without the endpoint has none): a frozen copy beside the live textfile, and the
    first thing a later endpoint served."""
    port, textfile = free_port(), tmp_path / "gtp5g_operator.prom"
    served = env.tmp / "run" / "metrics.prom"
    d = env.start(metrics={"listen": f"127.0.0.1:{port}", "textfile": str(textfile)})
    wait_until(lambda: served.exists() and textfile.exists(), 30, "the metrics published")
    n = len(env.notify.all())
    env.write_config(metrics={"textfile": str(textfile)})
    d.signal(signal.SIGHUP)
    env.notify.wait("READY", "1", after=n)
    assert not served.exists()
    wait_until(lambda: parse(textfile.read_text()).get(
        'gtp5g_operator_config_reloads_total{result="ok"}') == 1, 30, "the textfile kept")
    n = len(env.notify.all())
    env.write_config(metrics={"listen": f"127.0.0.1:{port}"})  # and back: served again
    d.signal(signal.SIGHUP)
    env.notify.wait("READY", "1", after=n)
    wait_until(lambda: scrape(port).get('gtp5g_operator_config_reloads_total{result="ok"}')
               == 2, 30, "the metrics of now served")


def test_metrics_refuse_a_remote_address_unless_allowed(env: Env) -> None:
    env.config_path.write_text("")
    env.write_config(metrics={"listen": "0.0.0.0:9469"})
    d = env.start(ready=False)
    assert d.proc.wait(10) == 78
    assert "metrics.listen: 0.0.0.0:9469 is not a loopback address" in d.log()


def run_status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gtp5g_operator", "status", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_status_shows_a_path_that_is_not_utf8_under_a_strict_locale(
        env: Env, gnb: Callable[..., GnbProcess], tmp_path: Path) -> None:
    """Any local user can run an nr-gnb from a directory whose name is not UTF-8: its
    path, read back from /proc, must not end `status` with a UnicodeEncodeError."""
    odd = os.path.join(os.fsencode(tmp_path), b"bad\xff")
    os.mkdir(odd)
    interpreter = os.path.join(odd, b"python3")
    shutil.copy2(os.fsencode(SYSTEM_PYTHON), interpreter)
    rundir = env.tmp / "run"
    env.start()
    g = gnb(threads=(), executable=os.fsdecode(interpreter))
    env.writer.write(gtp5g_line("nr-gnb", g.pid, g.pid))
    env.api.wait_post(lambda s: pids(s) == {g.pid})
    strict = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONIOENCODING": "utf-8:strict",
              "LC_ALL": "C.UTF-8"}
    out = wait_until(lambda: (r := subprocess.run(
        [sys.executable, "-m", "gtp5g_operator", "status", "--runtime-dir", str(rundir)],
        cwd=REPO, capture_output=True, text=True, timeout=30, env=strict)).returncode == 0
        and str(g.pid) in r.stdout and r, 20, "status with the process")
    assert "Traceback" not in out.stderr
    assert "bad\\udcff" in out.stdout or "bad\\xff" in out.stdout, out.stdout


def test_status_of_a_running_daemon_and_of_none(env: Env,
                                                 gnb: Callable[..., GnbProcess]) -> None:
    rundir = env.tmp / "run"
    out = run_status("--runtime-dir", str(rundir))
    assert out.returncode == 3 and "gtp5g-operator is not running" in out.stderr
    d = env.start()
    g = gnb(threads=("gnb worker",))
    env.writer.write("".join(gtp5g_line("nr-gnb", t, g.pid) for t in g.tids))
    env.api.wait_post(lambda s: pids(s) == set(g.tids))
    table = wait_until(lambda: (r := run_status("--runtime-dir", str(rundir))).returncode == 0
                       and str(g.pid) in r.stdout and r.stdout, 20, "status with the process")
    assert f"PID {d.pid}" in table and f"config:     {env.config_path}" in table
    row = next(line for line in table.splitlines() if line.startswith(str(g.pid)))
    assert row.split()[1] == "nr-gnb" and str(g.threads["gnb worker"]) in row
    assert "last push:  ok, 2 entries" in table
    raw = json.loads(run_status("--json", "--runtime-dir", str(rundir)).stdout)
    assert raw["processes"][0]["tids"] == sorted(g.tids)
    assert raw["api"]["token_expires_at"] > raw["started_at"]
    state_text = (rundir / "state.json").read_text()
    token = env.api.posts()[-1].authorization.split(" ", 1)[1]
    assert token not in state_text and "BEGIN PUBLIC KEY" not in state_text
    d.stop()
    out = run_status("--runtime-dir", str(rundir))
    assert out.returncode == 3 and "not running" in out.stderr
    # a daemon that died without cleaning up leaves a stale file: still "not running"
    (rundir / "state.json").write_text(state_text.replace(f'"pid": {d.pid}', '"pid": 999999'))
    out = run_status("--runtime-dir", str(rundir))
    assert out.returncode == 3 and "stale" in out.stderr


def test_status_as_another_user_where_proc_hides_the_daemon(env: Env,
                                                           public_tmp: Path) -> None:
    """A monitoring agent runs `status` as its own user; with /proc mounted hidepid=
    (hardened hosts) the service's process is invisible to it, and status said "not
    running" (exit 3) while the daemon ran."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or not os.path.exists(
            SYSTEM_PYTHON):
        pytest.skip("needs root, unshare(1) and a system python3 to act as another user")
    rundir = public_tmp / "run"
    d = env.start(env={"RUNTIME_DIRECTORY": str(rundir)})
    wait_until(lambda: (rundir / "state.json").exists(), 20, "state.json")
    package = public_copy(REPO / "gtp5g_operator")
    status = (f"cd / && PYTHONPATH={package} {SYSTEM_PYTHON} -m gtp5g_operator status "
              f"--runtime-dir {rundir}")
    out = subprocess.run(
        ["unshare", "--mount", "sh", "-c", "mount -t proc -o hidepid=invisible proc /proc "
         f"&& su -s /bin/sh nobody -c '{status}'"], capture_output=True, text=True, timeout=30)
    if "hidepid" in out.stderr and "mount" in out.stderr:
        pytest.skip(f"cannot mount /proc with hidepid here: {out.stderr.strip()}")
    assert out.returncode == 0, out.stderr
    assert f"PID {d.pid}, running since" in out.stdout
    d.proc.kill()  # a crash leaves state.json: its PID is gone, hidden or not
    d.proc.wait()
    out = subprocess.run(
        ["unshare", "--mount", "sh", "-c", "mount -t proc -o hidepid=invisible proc /proc "
         f"&& su -s /bin/sh nobody -c '{status}'"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 3 and "stale" in out.stderr


def test_status_from_a_monitoring_agent_whose_unit_has_its_own_runtime_directory(
        env: Env) -> None:
    """systemd gives every unit with RuntimeDirectory= a $RUNTIME_DIRECTORY (zabbix's agent
    often has one): `status` run by such an agent looked for state.json there and said
    "not running" (exit 3) beside a daemon publishing in /run/gtp5g-operator."""
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("nsenter")):
        pytest.skip("needs root, unshare(1) and nsenter(1) for a private /run")
    # the daemon with its default runtime directory, in a /run of its own
    env.write_config()
    d = DaemonProcess(env.config_path, env.notify, env.tmp / "daemon.log",
                      {"RUNTIME_DIRECTORY": ""}, prefix=(
                          "unshare", "--mount", "sh", "-c",
                          'mount -t tmpfs tmpfs /run && exec "$@"', "private-run"))
    env.daemons.append(d)

    def status(runtime_directory: str) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items() if k != "RUNTIME_DIRECTORY"}
        return subprocess.run(
            ["nsenter", "--mount", f"--target={d.pid}", "sh", "-c",
             'mkdir -p /run/agent && exec "$@"', "agent", sys.executable, "-m",
             "gtp5g_operator", "status"], cwd=REPO, capture_output=True, text=True,
            timeout=30, env={**environ, "PYTHONPATH": str(REPO),
                             "RUNTIME_DIRECTORY": runtime_directory})

    assert wait_until(lambda: status("").returncode == 0, 20, "status from a shell")
    out = status("/run/agent")
    assert out.returncode == 0 and f"PID {d.pid}, running since" in out.stdout, out.stderr


OTHER = {"pid": 1, "priority": False, "execution_time": 7}
SELECTOR = {"priority": True, "execution_time": 3, "selectors": [{"key": "app", "value": "x"}]}


def test_merge_keeps_other_writers_across_pushes_restarts_and_clear(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    api: FakeGthulhu = env.api
    api.strategies = [OTHER, SELECTOR]
    api.selector_pids = [5001, 5002]  # GET returns the selector strategy expanded twice
    d = env.start(strategy={"mode": "merge", "clear_on_stop": True})
    g = gnb(threads=())
    env.writer.write(gtp5g_line("nr-gnb", g.pid, g.pid))
    env.api.wait_post(lambda s: g.pid in pids(s))
    wait_until(lambda: api.strategies is not None and sorted(
        map(json.dumps, api.strategies)) == sorted(map(json.dumps, [
            OTHER, SELECTOR, {"pid": g.pid, "priority": True, "execution_time": 20_000_000}])),
        5, "merged list on the server")
    # the daemon goes away uncleanly while its process dies; it must clean up after restart
    d.proc.kill()
    d.proc.wait()
    dead = g.pid
    g.stop()
    env.writer.close()
    owned = json.loads((env.tmp / "state" / "owned.json").read_text())
    assert owned["pids"] == [dead]
    d2 = env.start(strategy={"mode": "merge", "clear_on_stop": True})
    env.api.wait_for(lambda: api.strategies is not None and dead not in pids(api.strategies))
    assert OTHER in api.strategies and SELECTOR in api.strategies
    g2 = gnb(threads=())
    env.writer.write(gtp5g_line("nr-gnb", g2.pid, g2.pid))
    env.api.wait_for(lambda: g2.pid in pids(api.strategies or []))
    api.strategies = [*api.strategies, {"pid": 2, "priority": True, "execution_time": 9}]
    n = len(api.posts())
    d2.signal(signal.SIGTERM)  # clear_on_stop in merge mode: only our entries go
    assert d2.proc.wait(5) == 0
    assert len(api.posts()) > n
    remaining = api.strategies
    assert OTHER in remaining and SELECTOR in remaining
    assert {"pid": 2, "priority": True, "execution_time": 9} in remaining
    assert g2.pid not in pids(remaining)


# --- /health -----------------------------------------------------------------------------


def probe(port: int, method: str = "GET", path: str = "/health"
          ) -> Tuple[int, Dict[str, Any], float]:
    """(status, JSON body or {}, seconds the answer took); status 0: nobody listens."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            code, raw = r.status, r.read()
    except urllib.error.HTTPError as err:
        code, raw = err.code, err.read()
    except urllib.error.URLError:  # not listening (yet)
        code, raw = 0, b""
    took = time.monotonic() - t0
    return code, json.loads(raw) if raw.strip().startswith(b"{") else {}, took


def test_health_is_200_when_healthy_and_503_stalled_while_the_daemon_is_stopped(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    port = free_port()
    d = env.start(metrics={"listen": f"127.0.0.1:{port}"},
                  strategy={"resync_interval": 1.5})
    g = gnb(threads=())
    env.writer.write(gtp5g_line("nr-gnb", g.pid, g.pid))
    env.api.wait_post(lambda s: pids(s) == {g.pid})
    code, body, _ = wait_until(lambda: (r := probe(port))[1].get("tracked_tasks") == 1 and r,
                               5, "a healthy /health with the task")
    assert code == 200 and body["status"] == "ok"
    assert body["last_push"]["ok"] is True and body["last_push"]["age_s"] < 3
    assert body["trace"]["format"] == "text" and body["api"]["flavor"] == "v0"
    assert body["scheduler"]["enabled"] is False  # no sched_ext here: reported, still 200
    assert probe(port, "HEAD")[0] == 200
    assert probe(port, "POST")[0] == 404 and probe(port, path="/other")[0] == 404
    d.signal(signal.SIGSTOP)
    try:
        code, body, _ = wait_until(lambda: (r := probe(port))[0] == 503 and r, 10,
                                   "503 while stopped")
        assert body["status"] == "stalled"
        took = [probe(port)[2] for _ in range(3)]
        assert max(took) < 1.0, took  # the probe is answered although the loop is stopped
    finally:
        d.signal(signal.SIGCONT)
    wait_until(lambda: probe(port)[0] == 200, 10, "200 again after SIGCONT")


def test_health_names_the_api_when_it_is_down(env: Env) -> None:
    port = free_port()
    env.start(metrics={"listen": f"127.0.0.1:{port}"}, strategy={"resync_interval": 1.5})
    wait_until(lambda: probe(port)[0] == 200, 20, "healthy first")
    env.api.stop()
    _, body, _ = wait_until(lambda: (r := probe(port))[0] == 503 and r, 15,
                               "503 with the API down")
    assert body["status"] == "api-unreachable"
    assert body["last_push"]["ok"] is False and body["last_push"]["error_kind"] == "connect"


def test_health_is_not_stalled_while_a_reload_lengthens_the_wait_on_a_hung_api(
        env: Env) -> None:
    """A reload raising api.timeout (1 s to 6 s) and changing a strategy value while the
    API hangs: the push in the reload's turn waits the new 6 s, as promised.  The turn's
    heartbeat had promised the next turn within the old 1 s, so /health said 503
    "stalled" for the last seconds of every such wait (a reload moving from one hung
    server to another did the same: its leave, then its push, in one turn), while the
    watchdog, pinged before each exchange, was fed."""
    port = free_port()
    metrics = {"listen": f"127.0.0.1:{port}"}
    d = env.start(api={"timeout": 1.0}, metrics=metrics, strategy={"resync_interval": 60.0})
    env.api.wait_post(lambda s: True)
    state = env.tmp / "run" / "state.json"
    wait_until(lambda: state.exists() and json.loads(state.read_text())["boost"]["verified"])
    wait_until(lambda: probe(port)[0] == 200, 20, "healthy first")
    env.api.fault = "hang"
    env.write_config(api={"timeout": 6.0}, metrics=metrics,
                     strategy={"resync_interval": 60.0, "execution_time_ns": 5_000_000})
    n = len(env.api.posts())
    d.signal(signal.SIGHUP)
    wait_until(lambda: len(env.api.posts()) > n, 10, "the reload's push (it hangs)")
    answers = []
    while "push failed: timeout" not in d.log():
        answers.append(probe(port)[1].get("status"))
        assert len(answers) < 400, d.log()  # 40 s: the push ends within its 6 s
        time.sleep(0.1)
    assert "stalled" not in answers, answers


def test_a_metrics_port_in_use_is_an_error_line_and_a_retry_at_start_and_reload(
        env: Env) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        d = env.start(metrics={"listen": f"127.0.0.1:{port}"})  # READY, not a crash loop
        d.wait_log(f"cannot listen on 127.0.0.1:{port}")
        assert d.proc.poll() is None
        free = free_port()
        env.write_config(metrics={"listen": f"127.0.0.1:{free}"})
        d.signal(signal.SIGHUP)  # a reload moves the endpoint
        wait_until(lambda: probe(free)[0] in (200, 503), 10, "the endpoint on the new port")
        env.write_config(metrics={"listen": f"127.0.0.1:{port}"})
        d.signal(signal.SIGHUP)  # and back onto the busy one: said again, still alive
        wait_until(lambda: d.log().count(f"cannot listen on 127.0.0.1:{port}") == 2, 10,
                   "the second bind failure")
        assert d.proc.poll() is None
    finally:
        busy.close()
    wait_until(lambda: probe(port)[0] in (200, 503), 30, "the endpoint once the port is free")


def test_a_trace_source_that_cannot_be_opened_is_said_where_an_admin_looks(
        env: Env, tmp_path: Path) -> None:
    """The trace is the only input: while it cannot be opened every push is "ok (0
    entries)", and systemctl status looked healthy.  STATUS= and `status` name why."""
    later = tmp_path / "later" / "trace_pipe"
    env.start(env={"WATCHDOG_USEC": "400000"}, trace={"pipe": str(later)})

    def last_status() -> str:
        return [m["STATUS"] for _, m in env.notify.timed() if "STATUS" in m][-1]

    wait_until(lambda: "trace source NOT OPEN (cannot open trace source" in last_status()
               and "No such file or directory" in last_status(), 20, "STATUS naming why")
    out = run_status("--runtime-dir", str(env.tmp / "run"))
    assert out.returncode == 0 and "NOT OPEN: cannot open trace source" in out.stdout
    later.parent.mkdir()
    os.mkfifo(later)
    writer = TraceWriter(later)
    writer.open()  # returns once the daemon has opened it
    try:
        wait_until(lambda: "NOT OPEN" not in last_status(), 20, "STATUS without NOT OPEN")
    finally:
        writer.close()


def test_a_runtime_directory_removed_under_the_daemon_is_published_again(
        env: Env, public_tmp: Path) -> None:
    """A refused start of the service (exit 75: this daemon, run by hand, holds the
    state directory) makes systemd remove RuntimeDirectory= at that unit's stop, and
    tmpfiles or an admin's rm can do the same: the daemon's heartbeat, state.json and
    health.json were gone for good, /health answered 503 and `status` "not running"
    while its loop turned and its pushes succeeded."""
    port = free_port()
    rundir = public_tmp / "run"  # as /run is: every user may search its parent
    env.start(env={"RUNTIME_DIRECTORY": str(rundir)},
              metrics={"listen": f"127.0.0.1:{port}"}, strategy={"resync_interval": 1.5})
    wait_until(lambda: probe(port)[0] == 200, 20, "healthy first")
    shutil.rmtree(rundir)
    _, body, _ = wait_until(lambda: (r := probe(port))[0] == 200 and r, 20,
                            "/health 200 again")
    assert body["status"] == "ok" and body["loop_turned_s_ago"] is not None
    assert {"state.json", "health.json", "heartbeat"} <= set(os.listdir(rundir))
    assert run_status("--runtime-dir", str(rundir)).returncode == 0


def test_a_heartbeat_that_could_not_be_made_again_is_tried_again(
        env: Env, public_tmp: Path) -> None:
    """The heartbeat removed, and its remaking failing once (here a directory in its
    place; a full tmpfs, the directory removed again mid-way): the daemon took that for
    "never made at start" and never tried again, /health 503 "stalled" for good once
    the obstacle was gone."""
    port = free_port()
    rundir = public_tmp / "run"
    d = env.start(env={"RUNTIME_DIRECTORY": str(rundir)},
                  metrics={"listen": f"127.0.0.1:{port}"}, strategy={"resync_interval": 1.5})
    wait_until(lambda: probe(port)[0] == 200, 20, "healthy first")
    (rundir / "heartbeat").unlink()
    (rundir / "heartbeat").mkdir()
    wait_until(lambda: d.log().count("cannot create") >= 2, 20, "a second try")
    (rundir / "heartbeat").rmdir()
    wait_until(lambda: probe(port)[0] == 200, 20, "/health 200 again")
    assert d.log().count("WARNING cannot create") == 1, d.log()  # said once, not every pass


def _columns(text: str) -> int:
    """How many terminal columns `text` takes (wcwidth's rule for what the test uses):
    East Asian wide and full-width characters two, combining marks none."""
    import unicodedata
    return sum(0 if unicodedata.combining(c) else
               2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def test_a_path_of_wide_characters_cannot_move_a_tracked_processs_uid_in_status(
        env: Env, gnb: Callable[..., GnbProcess], tmp_path: Path) -> None:
    """Any local user can have an nr-gnb of theirs tracked (no allow-list) from a path of
    wide characters (two columns each, one in Python's len) and blanks that print
    (U+2800).  The table padded its columns by len, and EXE came before UID: the path
    pushed the row's real uid under ACTIVE TIDS and put a '0' of its own under UID."""
    odd = tmp_path / ("g" + "\u5168" * 6 + "\u2800" * 12 + "0")
    odd.mkdir()
    shutil.copy2(os.path.realpath(SYSTEM_PYTHON), odd / "python3")
    env.start()
    g = gnb(threads=(), executable=str(odd / "python3"))
    env.writer.write(gtp5g_line("nr-gnb", g.pid, g.pid))
    env.api.wait_post(lambda s: pids(s) == {g.pid})
    table = wait_until(lambda: (r := run_status("--runtime-dir", str(env.tmp / "run")))
                       .returncode == 0 and str(g.pid) in r.stdout and r.stdout, 20,
                       "status with the process")
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("TGID"))
    row = next(line for line in lines if line.startswith(f"{g.pid} "))
    uid = str(os.getuid())
    at = row.index(f"  {uid}  ") + 2  # the uid cell: the path holds no run of spaces
    assert _columns(row[:at]) == _columns(header[:header.index("UID")]), (header, row)


def test_what_changes_between_pushes_and_passes_is_in_every_output_at_once(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    """state.json, /health, /metrics and STATUS= are one snapshot, published by a push,
    a reload or a liveness pass.  A gNB that came or went while a failing API held pushes
    back, and a trace source that closed or opened again, waited for the next liveness
    pass (here a minute): the metrics said `trace_open 1` and /health listed an exited
    gNB's tasks while the journal said otherwise."""
    port = free_port()
    env.api.fault = "503"  # every request, and no try again for a minute
    env.api.status_headers[503] = [("Retry-After", "60")]
    env.start(api={"flavor": "v0"}, metrics={"listen": f"127.0.0.1:{port}"},
              strategy={"resync_interval": 60.0, "liveness_interval": 60.0})
    state = env.tmp / "run" / "state.json"

    def outputs() -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, float], str]:
        return (json.loads(state.read_text()), probe(port)[1], scrape(port),
                [m["STATUS"] for _, m in env.notify.timed() if "STATUS" in m][-1])

    def agree(tasks: int, trace_open: bool) -> bool:
        s, health, metrics, status = outputs()
        return (s["last_push"] is not None and s["last_push"]["ok"] is False
                and sum(len(p["tids"]) for p in s["processes"]) == tasks
                and health.get("tracked_tasks") == tasks
                and metrics["gtp5g_operator_tracked_tasks"] == tasks
                and f"{tasks} task(s)" in status
                and s["trace"]["open"] is trace_open
                and health["trace"]["open"] is trace_open
                and metrics["gtp5g_operator_trace_open"] == int(trace_open)
                and ("NOT OPEN" not in status) is trace_open)

    wait_until(lambda: agree(0, True), 10, "the failed first push published")
    g = gnb(threads=("nr-gnb-rlc",))
    env.writer.write("".join(gtp5g_line("nr-gnb", t, g.pid) for t in g.tids))
    wait_until(lambda: agree(2, True), 10, "the new gNB in every output")
    g.stop()
    wait_until(lambda: agree(0, True), 10, "the gNB's exit in every output")
    os.unlink(env.trace_pipe)
    env.writer.close()  # end of file: the source closes, and cannot open again
    wait_until(lambda: agree(0, False), 10, "the closed trace source in every output")
    os.mkfifo(env.trace_pipe)
    wait_until(lambda: agree(0, True), 15, "the trace source open again in every output")


def test_tracing_turned_off_shows_in_every_output_not_the_journal_alone(env: Env) -> None:
    """tracing_on = 0 (or the bpf_printk event off): the source stays open and the kernel
    records nothing into it.  The journal said "no gNB task can be seen", while /health's
    trace.problem was "", STATUS= said nothing and the trace_open metric, whose HELP says
    "0: no gNB task can be seen", stayed 1: the documented alert on it never fired.  (A
    FIFO's directory stands in for the tracing instance: its tracing_on a plain file.)"""
    port = free_port()
    d = env.start(metrics={"listen": f"127.0.0.1:{port}"})
    tracing_on = env.trace_pipe.parent / "tracing_on"

    def outputs(off: bool) -> bool:
        health, metrics = probe(port)[1], scrape(port)
        status = [m["STATUS"] for _, m in env.notify.timed() if "STATUS" in m][-1]
        return (("tracing is off" in health["trace"]["problem"]) is off
                and health["trace"]["open"] is True
                and metrics["gtp5g_operator_trace_open"] == int(not off)
                and ("; NO TRACE LINES (tracing is off (" in status) is off)

    wait_until(lambda: outputs(False), 20, "the open trace source in every output")
    tracing_on.write_text("0\n")
    d.wait_log("tracing is off (")
    wait_until(lambda: outputs(True), 20, "tracing off in every output")
    out = run_status("--runtime-dir", str(env.tmp / "run")).stdout
    assert "(text, open, NO TRACE LINES: tracing is off (" in out, out
    tracing_on.write_text("1\n")
    d.wait_log("the kernel records trace lines in ")
    wait_until(lambda: outputs(False), 20, "tracing on again in every output")


def test_a_rejected_reload_is_said_by_status_and_status_until_one_is_accepted(
        env: Env) -> None:
    """`systemctl reload` succeeds whatever the daemon thinks of the files: a rejected
    reload was said by the journal and a metric's count only, while STATUS= and
    `status` looked as after an accepted one (the files on disk were not running).
    The metrics say it as long too: an alert on the rejected count rising resolved once
    its range had passed, the rejected files still not running."""
    textfile = env.tmp / "gtp5g_operator.prom"
    d = env.start(metrics={"textfile": str(textfile)})
    state = env.tmp / "run" / "state.json"

    def last_reload_successful() -> float:
        return parse(textfile.read_text())["gtp5g_operator_config_last_reload_successful"]

    def reload() -> str:
        n = len(env.notify.all())
        d.signal(signal.SIGHUP)
        return env.notify.wait("READY", "1", after=n)["STATUS"]

    good = env.config_path.read_text()
    env.config_path.write_text(good + "[strategy]\npriority = \"high\"\n")
    assert "last reload REJECTED" in reload()
    assert json.loads(state.read_text())["config"]["reload_rejected_at"] > 1.7e9
    assert last_reload_successful() == 0
    out = run_status("--runtime-dir", str(env.tmp / "run"))
    assert out.returncode == 0 and "; last reload REJECTED " in out.stdout, out.stdout
    env.config_path.write_text(good)
    assert "REJECTED" not in reload()
    assert json.loads(state.read_text())["config"]["reload_rejected_at"] is None
    assert last_reload_successful() == 1
    assert "REJECTED" not in run_status("--runtime-dir", str(env.tmp / "run")).stdout
