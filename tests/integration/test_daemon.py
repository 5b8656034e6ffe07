"""The real daemon as a subprocess: FIFO trace_pipe, real children, real HTTP API.

Each test asserts what reached the API (or systemd's notify socket) — the
outcomes a user of the service sees.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Set

import pytest

from testbed.fake_gthulhu import FakeGthulhu
from testbed.harness import REPO, DaemonProcess, GnbProcess, SchedulingLag, wait_until
from testbed.tracelines import gtp5g_line, trace_line
from tests.conftest import Env


def pids(strategies: List[Dict[str, Any]]) -> Set[int]:
    return {s["pid"] for s in strategies}


def lines_for(g: GnbProcess, comm: str = "nr-gnb", unknown_first: bool = False) -> str:
    return "".join(gtp5g_line("<...>" if unknown_first and i == 0 else comm, tid, g.pid)
                   for i, tid in enumerate(g.tids))


def test_detection_pushes_process_and_threads_within_a_second(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    env.start()
    g = gnb(threads=("nr-gnb-rlc", "gnb worker"))
    t0 = time.monotonic()
    env.writer.write(lines_for(g, unknown_first=True))  # the first line shows <...>
    post = env.api.wait_post(lambda s: pids(s) == set(g.tids), timeout=3)
    assert post.at - t0 < 1.0
    assert all(s == {"pid": s["pid"], "priority": True, "execution_time": 20_000_000}
               for s in post.body["strategies"])


def test_unknown_comm_lines_alone_are_resolved_through_proc(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    env.start()
    g = gnb(threads=("gnb worker",))
    env.writer.write("".join(trace_line("<...>", t, "tracing_mark_write: x",
                                        event="tracing_mark_write") for t in g.tids))
    env.api.wait_post(lambda s: pids(s) == set(g.tids))


def test_decoys_and_dead_ids_are_never_pushed(env: Env, gnb: Callable[..., GnbProcess]) -> None:
    env.start()
    real = gnb(threads=("nr-gnb-rlc",))
    decoy_x = gnb(name="nr-gnbx", threads=())
    other = gnb(name="nr-ue", threads=("nr-gnb",))  # thread named nr-gnb, process is not
    dead = gnb(threads=())
    dead_pid = dead.pid
    dead.stop()
    env.writer.write(lines_for(decoy_x, "nr-gnb") + lines_for(other, "nr-gnb")
                     + gtp5g_line("nr-gnb", dead_pid, dead_pid) + lines_for(real))
    env.api.wait_post(lambda s: pids(s) == set(real.tids))
    time.sleep(0.3)  # any later push must not contain them either
    for post in env.api.posts():
        assert not pids(post.body["strategies"]) & {decoy_x.pid, *other.tids, dead_pid}


@pytest.mark.parametrize("name", ["nr-gnb\n", "nr-gnb\n\n"])
def test_a_name_that_ends_in_newlines_is_not_the_gnb(
        env: Env, gnb: Callable[..., GnbProcess], name: str) -> None:
    """/proc/PID/comm is the name and one newline; a name that itself ends in
    newlines (prctl allows them) is another name, as 'nr-gnb ' or 'nr-gnbx' is."""
    env.start()
    real = gnb(threads=())
    impostor = gnb(name=name, threads=())
    # the premise: the kernel keeps the name's newlines, and adds one
    assert Path(f"/proc/{impostor.pid}/comm").read_bytes() == name.encode() + b"\n"
    env.writer.write(lines_for(impostor) + lines_for(real))
    env.api.wait_post(lambda s: pids(s) == {real.pid})
    time.sleep(0.3)  # any later push must not contain it either
    assert all(impostor.pid not in pids(p.body["strategies"]) for p in env.api.posts())


@pytest.mark.parametrize("targets,expect", [("tgid", "pid"), ("tid", "threads")])
def test_targets_setting(env: Env, gnb: Callable[..., GnbProcess], targets: str,
                         expect: str) -> None:
    env.start(strategy={"targets": targets})
    g = gnb(threads=("nr-gnb-rlc",))
    env.writer.write(gtp5g_line("nr-gnb-rlc", g.threads["nr-gnb-rlc"], g.pid))
    want = {g.pid} if expect == "pid" else {g.threads["nr-gnb-rlc"]}
    env.api.wait_post(lambda s: pids(s) == want)


def test_thread_exit_then_process_exit_then_empty_set(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    env.start()
    g = gnb(threads=("nr-gnb-rlc", "gnb worker"))
    env.writer.write(lines_for(g))
    env.api.wait_post(lambda s: pids(s) == set(g.tids))
    worker = g.threads["gnb worker"]
    g.exit_thread("gnb worker")
    env.api.wait_post(lambda s: pids(s) == set(g.tids) and worker not in pids(s))
    g.stop()
    post = env.api.wait_post(lambda s: s == [], after=len(env.api.posts()) - 1)
    assert post.body == {"strategies": []}  # the empty set is pushed, clearing the API


def test_a_gnb_first_seen_as_the_trace_source_ends_is_watched_without_a_bug(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    """A new gNB's lines and the FIFO writer's end, read in one turn: the trace source
    closes its fd, and the process is tracked.  At the next turn the exit watch (first
    in the loop's list) opened the process's pidfd, which took the freed number, and
    registered it while the selector still held the trace source's registration of
    that number: "bug: exit watch.fd_failed raised OSError: '8 (FD 8) is already
    registered'" (once in a 12-minute soak with the writer reopening every 45 s), and
    the exit watch rested."""
    d = env.start()

    def new_gnb_then_eof() -> None:
        g = gnb(threads=())
        env.writer.write(lines_for(g))  # waits until the daemon has (re)opened the FIFO
        env.writer.close()  # at once: the daemon reads the lines and the EOF together
        env.api.wait_post(lambda s: g.pid in pids(s))
        g.stop()
        env.api.wait_post(lambda s: g.pid not in pids(s))

    for _ in range(3):
        new_gnb_then_eof()
    assert "bug:" not in d.log(), d.log()


def test_empty_set_is_pushed_at_start(env: Env) -> None:
    env.start()
    env.api.wait_post(lambda s: s == [], timeout=3)


def test_token_refreshed_before_expiry(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    env.api.token_lifetime = 4  # short-lived: renewed at half-life (2 s)
    d = env.start(strategy={"resync_interval": 0.5}, api={"timeout": 0.4})
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    env.api.wait_post(lambda s: pids(s) == {g.pid})
    wait_until(lambda: env.api.tokens_issued >= 3, timeout=8, what="token renewals")
    # every post carried a token that was valid when sent: none was answered 401
    assert "rejected" not in d.log()


def test_401_gets_a_new_token(env: Env, gnb: Callable[..., GnbProcess]) -> None:
    d = env.start(strategy={"resync_interval": 0.5}, api={"timeout": 0.4})
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    env.api.wait_for(lambda: pids(env.api.strategies or []) == {g.pid})  # accepted
    assert env.api.tokens_issued == 1
    env.api.revoke_tokens()  # the server no longer accepts our token
    issued = env.api.tokens_issued
    wait_until(lambda: env.api.tokens_issued > issued, timeout=3, what="a new token after 401")
    n = len(env.api.posts())
    env.api.wait_post(lambda s: pids(s) == {g.pid}, after=n)
    assert "the API refused our credentials (HTTP 401): getting new ones" in d.log()


def test_a_plain_http_api_on_another_host_is_warned_about_at_start(env: Env) -> None:
    # 192.0.2.0/24 is TEST-NET-1: nothing answers there, and nothing needs to
    d = env.start(api={"url": "http://192.0.2.1:8080", "timeout": 0.5})
    d.wait_log("api.url http://192.0.2.1:8080 is plain http:// to another host: the API's "
               "tokens cross the network in clear", timeout=20)
    assert "WARNING" in next(line for line in d.log().splitlines() if "plain http://" in line)
    d.stop()
    loopback = env.start(api={"url": env.api.url})
    env.api.wait_post(lambda s: True)
    assert "plain http://" not in loopback.log()


def test_api_down_then_back(env: Env, gnb: Callable[..., GnbProcess],
                            keys: Dict[str, Path]) -> None:
    port = int(env.api.url.rsplit(":", 1)[1])
    d = env.start(strategy={"resync_interval": 2.0})
    env.wait_pushed(0)  # counted from here: a loaded host may fail and retry the first
    mark = len(d.log())
    env.api.stop()
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    d.wait_log("cannot reach http://127.0.0.1", timeout=20)
    time.sleep(2.5)  # several retries while down: logged once
    assert d.log()[mark:].count("push failed:") == 1
    back = FakeGthulhu(keys["private"].read_bytes(), port=port).start()
    try:
        back.wait_post(lambda s: pids(s) == {g.pid}, timeout=5)
        d.wait_log("API reachable again")
        # the end of the outage names the server as its start did
        assert f"API reachable again at {env.api.url}: pushed 1 entries" in d.log()
    finally:
        back.stop()


def test_sighup_applies_a_good_config_and_rejects_a_bad_one(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    d = env.start()
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    env.api.wait_post(lambda s: pids(s) == {g.pid})
    tokens = env.api.tokens_issued
    n_ready = len(env.notify.all())
    env.write_config(strategy={"execution_time_ns": 5_000_000})
    d.signal(signal.SIGHUP)
    post = env.api.wait_post(lambda s: bool(s) and s[0]["execution_time"] == 5_000_000)
    assert pids(post.body["strategies"]) == {g.pid}  # tracked tasks kept across the reload
    assert env.api.tokens_issued == tokens  # same URL and key: no new token
    reloading = env.notify.wait("RELOADING", "1", after=n_ready)
    assert int(reloading["MONOTONIC_USEC"]) > 0
    env.notify.wait("READY", "1", after=n_ready + 1)
    # now a broken one: rejected, old values stay
    env.config_path.write_text("[strategy]\nexecution_time_ns = \"20ms\"\n")
    d.signal(signal.SIGHUP)
    d.wait_log("reload rejected, keeping the running configuration")
    assert 'strategy.execution_time_ns: expected a positive integer' in d.log()
    n = len(env.api.posts())
    env.writer.write(lines_for(g))
    env.write_config(strategy={"execution_time_ns": 5_000_000, "resync_interval": 0.5},
                     api={"timeout": 0.4})
    d.signal(signal.SIGHUP)
    post = env.api.wait_post(lambda s: bool(s), after=n)
    assert post.body["strategies"][0]["execution_time"] == 5_000_000
    assert d.proc.poll() is None


def test_sigterm_stops_quickly_with_clear_on_stop(env: Env,
                                                  gnb: Callable[..., GnbProcess]) -> None:
    d = env.start(strategy={"clear_on_stop": True})
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    env.api.wait_post(lambda s: pids(s) == {g.pid})
    n = len(env.api.posts())
    d.terminate_within(2.0)
    assert env.api.posts()[n].body == {"strategies": []}
    env.notify.wait("STOPPING", "1")


def test_status_says_stopping_until_the_end_of_the_stop(env: Env) -> None:
    """STOPPING=1 comes with STATUS=stopping; the clear on stop pings the watchdog first
    (a ping older than 1 s, WatchdogSec=8s), and that ping's STATUS= was the running
    line again ("tracking 0 process(es) ... last push ok"): `systemctl status` showed
    the daemon as running for the rest of its stop."""
    d = env.start(env={"WATCHDOG_USEC": "8000000"},  # pings every 4 s; before an exchange
                  strategy={"clear_on_stop": True, "resync_interval": 60.0})  # if 1 s old
    env.api.wait_post(lambda s: True)
    env.wait_pushed(0)
    last_ping = wait_until(lambda: [t for t, m in env.notify.timed() if "WATCHDOG" in m], 20,
                           "a watchdog ping")[-1]
    wait_until(lambda: time.monotonic() - last_ping > 1.2, 5, "that ping 1 s old")
    n = len(env.notify.all())
    d.terminate_within(2.0)
    after = env.notify.all()[env.notify.all().index(env.notify.wait("STOPPING", "1", after=n)):]
    assert any("WATCHDOG" in m for m in after), after  # the clear's ping: the case at hand
    assert {m["STATUS"] for m in after if "STATUS" in m} == {"stopping"}, after


def test_sigterm_without_clear_leaves_strategies(env: Env) -> None:
    d = env.start()
    env.api.wait_post(lambda s: True)
    n = len(env.api.posts())
    d.signal(signal.SIGINT)
    assert d.proc.wait(5) == 0
    assert len(env.api.posts()) == n


def test_sd_notify_ready_watchdog_status(env: Env, gnb: Callable[..., GnbProcess],
                                         lag: SchedulingLag) -> None:
    d = env.start(env={"WATCHDOG_USEC": "400000"})  # ping every 0.2 s
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    env.api.wait_post(lambda s: pids(s) == {g.pid})
    wait_until(lambda: len([m for m in env.notify.all() if m.get("WATCHDOG") == "1"]) >= 5,
               20, "five watchdog pings")
    msgs = env.notify.timed()
    ready = [m for _, m in msgs if m.get("READY") == "1"]
    assert len(ready) == 1 and "STATUS" in ready[0]
    pings = [t for t, m in msgs if m.get("WATCHDOG") == "1"]
    # half the watchdog interval apart; a loaded host may keep the daemon off the CPU
    assert max(b - a for a, b in itertools.pairwise(pings)) < 0.2 + 0.2 + lag.worst
    status = [m["STATUS"] for _, m in msgs if "STATUS" in m][-1]
    assert status.startswith("tracking 1 process(es), 1 task(s); ")
    assert "last push ok (1 entries)" in status
    # api.timeout 1 s against a 0.4 s watchdog: said once, at start
    assert d.log().count("api.timeout (1 s) is too long for WatchdogSec=0.4s") == 1
    d.stop()


# The daemon's own command line, with a signal sent to it once it has read its
# configuration, before it has set up its loop (as `systemctl kill -s HUP` or a request
# for the state could do right after a restart).
SIGNAL_DURING_START = """
import os, sys
from gtp5g_operator import cli

real_load = cli.load

def load_then_signal(*args, **kwargs):
    config = real_load(*args, **kwargs)
    os.kill(os.getpid(), int(sys.argv[1]))
    return config

cli.load = load_then_signal
sys.exit(cli.main(sys.argv[sys.argv.index("--config"):]))
"""


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
                                 signal.SIGTERM], ids=lambda s: signal.Signals(s).name)
def test_a_signal_during_the_start_is_handled_once_the_loop_runs(env: Env, tmp_path: Path,
                                                                  sig: int) -> None:
    """A signal that came before the handlers were installed took its default action:
    SIGHUP, SIGUSR1 and SIGUSR2 ended the daemon (killed by the signal) instead of a
    reload, a report or a debug switch."""
    env.write_config()
    wrapper = tmp_path / "signal_during_start.py"
    wrapper.write_text(SIGNAL_DURING_START)
    d = DaemonProcess(env.config_path, env.notify, tmp_path / "start.log",
                      prefix=(sys.executable, str(wrapper), str(int(sig))))
    env.daemons.append(d)
    if sig == signal.SIGTERM:
        assert d.proc.wait(10) == 0, d.log()  # a clean stop, not a death by the signal
        env.notify.wait("STOPPING", "1", timeout=5)
        assert not (tmp_path / "run" / "state.json").exists()
        return
    wait_until(lambda: d.proc.poll() is not None or env.notify.all(), 30, "READY=1 or an exit")
    assert d.proc.poll() is None, f"exit {d.proc.returncode} (-N: killed by signal N)"
    ready = env.notify.wait("READY", "1", timeout=30)
    expected = {int(signal.SIGHUP): "configuration reloaded: nothing changed",
                int(signal.SIGUSR1): "state: tracking 0 process(es)",
                int(signal.SIGUSR2): "debug logging"}[sig]
    d.wait_log(expected, timeout=10)
    if sig == signal.SIGHUP:  # acknowledged to systemd as any reload, after READY=1
        n = env.notify.all().index(ready)
        env.notify.wait("RELOADING", "1", after=n + 1, timeout=5)
    assert d.proc.poll() is None, d.log()


# `python -m gtp5g_operator` (what the gtp5g-operator command runs too), with a signal
# sent to it while the command line is still being imported: 0.1 s after exec, more
# under the unit's CPUQuota=, before cli.py could hold anything.
SIGNAL_DURING_IMPORT = """
import importlib.abc, os, runpy, sys

SIG = int(sys.argv[1])

class SignalOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "gtp5g_operator.cli":
            os.kill(os.getpid(), SIG)
        return None

sys.meta_path.insert(0, SignalOnImport())
sys.argv = ["gtp5g-operator", *sys.argv[sys.argv.index("--config"):]]
runpy.run_module("gtp5g_operator", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1],
                         ids=lambda s: signal.Signals(s).name)
def test_a_signal_while_the_program_is_imported_waits_for_the_loop(env: Env, tmp_path: Path,
                                                                  sig: int) -> None:
    """SIGHUP or SIGUSR1 in the program's first 0.1 s killed it by its default action, before
    READY=1: a failed start instead of a reload or a report."""
    env.write_config()
    wrapper = tmp_path / "signal_during_import.py"
    wrapper.write_text(SIGNAL_DURING_IMPORT)
    d = DaemonProcess(env.config_path, env.notify, tmp_path / "import.log",
                      prefix=(sys.executable, str(wrapper), str(int(sig))))
    env.daemons.append(d)
    wait_until(lambda: d.proc.poll() is not None or env.notify.all(), 30, "READY=1 or an exit")
    assert d.proc.poll() is None, f"exit {d.proc.returncode} (-N: killed by signal N)"
    env.notify.wait("READY", "1", timeout=30)
    d.wait_log({int(signal.SIGHUP): "configuration reloaded: nothing changed",
                int(signal.SIGUSR1): "state: tracking 0 process(es)"}[sig], timeout=10)
    assert d.stop() == 0, d.log()


def test_other_commands_get_the_signal_mask_back(env: Env, tmp_path: Path) -> None:
    """Only `run` keeps the signals __main__ holds: check-config ends as before."""
    env.write_config()
    out = subprocess.run([sys.executable, "-c", "import signal, sys\n"
                          "from gtp5g_operator import __main__ as m\n"
                          "from gtp5g_operator import cli\n"
                          "held = signal.pthread_sigmask(signal.SIG_BLOCK, m.RELOAD_REPORT_DEBUG)\n"
                          "cli.main(['check-config', '--config', sys.argv[1]], held)\n"
                          "print(sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])))",
                          str(env.config_path)], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert out.stdout.splitlines()[-1] == "[]", out


def test_watchdog_pid_of_another_process_disables_pings(env: Env) -> None:
    env.start(env={"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
    time.sleep(0.6)
    assert not [m for m in env.notify.all() if "WATCHDOG" in m]


def test_runs_without_notify_socket(env: Env, gnb: Callable[..., GnbProcess]) -> None:
    env.write_config()
    from testbed.harness import DaemonProcess
    d = DaemonProcess(env.config_path, None, env.tmp / "plain.log")
    env.daemons.append(d)
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    env.api.wait_post(lambda s: pids(s) == {g.pid}, timeout=5)


def test_journald_priority_prefixes(env: Env, gnb: Callable[..., GnbProcess]) -> None:
    env.write_config()
    log_path = env.tmp / "daemon0.log"
    log_path.touch()
    st = os.stat(log_path)  # the harness opens this same file as the daemon's stderr
    d = env.start(env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    d.wait_log("<6>process")
    lines = d.log().splitlines()
    assert all(line[:3] in ("<6>", "<4>", "<7>", "<3>") for line in lines), lines
    assert any(line.startswith("<4>match.uid is empty: any local user can name") for line in lines)
    assert not any(line[3:7].isdigit() for line in lines)  # no timestamps: journald adds them


def test_token_never_logged(env: Env, gnb: Callable[..., GnbProcess]) -> None:
    d = env.start()
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    post = env.api.wait_post(lambda s: pids(s) == {g.pid})
    token = post.authorization.split(" ", 1)[1]
    d.stop()
    assert "got an API token" in d.log()
    assert token not in d.log() and token.split(".")[2] not in d.log()


def test_a_second_daemon_on_the_same_state_directory_refuses_naming_the_first(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    """A second `gtp5g-operator run` beside the service (by hand, or configuration
    management starting it twice) ran to the end: it replaced the first's heartbeat (the
    first's /health went stalled once it stopped), shared the trace lines, and its
    clear_on_stop posted [] while the first still boosted the gNB."""
    first = env.start(strategy={"clear_on_stop": True})
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    env.api.wait_post(lambda s: pids(s) == {g.pid}, timeout=5)
    heartbeat = (env.tmp / "run" / "heartbeat").stat().st_ino
    requests = len(env.api.received)
    # its own runtime directory: the lock, not the first's state.json, stops it
    second = DaemonProcess(env.config_path, None, env.tmp / "second.log",
                           {"RUNTIME_DIRECTORY": str(env.tmp / "run2")})
    env.daemons.append(second)
    assert second.proc.wait(20) == 75, second.log()
    assert f"not starting: another gtp5g-operator (PID {first.pid}) is running with the " \
           f"state directory {env.tmp / 'state'}" in second.log()
    # the first holds a token for an hour and has pushed its set: any more is the second's
    assert not [r for r in env.api.received[requests:] if r.method == "POST"], \
        "the second daemon spoke to the server"
    assert (env.tmp / "run" / "heartbeat").stat().st_ino == heartbeat
    assert first.proc.poll() is None
    # Pointed at other directories it runs; once the first has stopped, here too.
    (env.tmp / "elsewhere").mkdir()
    other = DaemonProcess(env.config_path, None, env.tmp / "elsewhere" / "daemon.log")
    env.daemons.append(other)
    other.wait_log("reading trace source")
    assert other.stop() == 0 and first.stop() == 0
    third = DaemonProcess(env.config_path, None, env.tmp / "third.log")
    env.daemons.append(third)
    third.wait_log("reading trace source")
    assert third.proc.poll() is None


def test_a_second_daemon_on_the_same_runtime_directory_refuses_naming_the_first(
        env: Env) -> None:
    """A second daemon given another state directory but not another runtime directory
    (STATE_DIRECTORY= alone, by hand) replaced the first's heartbeat with its own and
    removed it at its stop: the first's /health answered 503 "stalled" from then on."""
    first = env.start()
    heartbeat = (env.tmp / "run" / "heartbeat").stat().st_ino
    wait_until(lambda: (env.tmp / "run" / "state.json").exists(), 20, "state.json")
    second = DaemonProcess(env.config_path, None, env.tmp / "second.log",
                           {"STATE_DIRECTORY": str(env.tmp / "state2")})
    env.daemons.append(second)
    assert second.proc.wait(20) == 75, second.log()
    assert f"not starting: another gtp5g-operator (PID {first.pid}) is running with the " \
           f"runtime directory {env.tmp / 'run'}" in second.log()
    assert (env.tmp / "run" / "heartbeat").stat().st_ino == heartbeat
    assert first.proc.poll() is None


# A unit's ProcSubset=pid: a /proc of PID directories only, without /proc/locks.
PROC_SUBSET_PID = ("unshare", "-m", "--propagation", "private", "sh", "-c",
                   'mount -t proc -o subset=pid proc /proc && exec "$@"', "sh")


def test_the_service_refused_beside_a_daemon_run_by_hand_names_it(env: Env) -> None:
    """The service started while a daemon run by hand (the same default directories)
    runs: its /proc (a unit's ProcSubset=pid) has no /proc/locks, and the refusal said 'another
    gtp5g-operator (a process /proc/locks does not name)' though that daemon's PID was
    in the runtime directory's state.json, which it reads all the same."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare to mount a procfs of subset=pid")
    first = env.start()
    wait_until(lambda: (env.tmp / "run" / "state.json").exists(), 20, "state.json")
    second = DaemonProcess(env.config_path, None, env.tmp / "second.log",
                           prefix=PROC_SUBSET_PID)
    env.daemons.append(second)
    assert second.proc.wait(20) == 75, second.log()
    assert f"not starting: another gtp5g-operator (PID {first.pid}) is running" \
        in second.log(), second.log()
    assert first.proc.poll() is None


# Three ways a user locks a directory: flock(1) holding it while its command runs; the
# shell idiom whose flock(1) exits at once, the lock kept by the shell's fd 9 (/proc/locks
# then names a PID that is gone); and a lock hidden from a bounded read of /proc/locks
# behind 20,000 byte-range locks of a file of one's own (one fd, no limit).
MANY_LOCKS = """if 1:
    import fcntl, os, sys, tempfile
    f = tempfile.TemporaryFile()
    for i in range(20000):
        fcntl.lockf(f, fcntl.LOCK_EX, 1, 2 * i)
    fcntl.flock(os.open(sys.argv[1], os.O_RDONLY), fcntl.LOCK_EX)
    print("locked", flush=True)
    sys.stdin.read()
"""
USER_LOCKS = {
    "flock-command": ["sh", "-c", 'exec flock -x "$1" sh -c "echo locked; exec cat"', "sh"],
    "shell-fd": ["sh", "-c", 'exec 9<"$1"; flock -x 9; echo locked; exec cat', "sh"],
    "many-locks": ["/usr/bin/python3", "-c", MANY_LOCKS]}


@pytest.mark.parametrize("how", sorted(USER_LOCKS))
def test_another_users_lock_on_the_state_directory_does_not_stop_the_start(
        env: Env, public_tmp: Path, how: str) -> None:
    """Run by hand (no StateDirectory=), the state directory is made 0755: any local user
    may open it and flock(2) it, and every start after that, a supervisor's restart
    after a crash included, exited 75 'another gtp5g-operator (PID ...) is running'
    naming that user's process.  A daemon must write there: a holder that may not
    (neither root nor the directory's owner), or that is gone, is not one."""
    if os.geteuid() != 0 or shutil.which("flock") is None:
        pytest.skip("needs root and flock (util-linux) to lock as another user")
    if how == "many-locks" and not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("needs /usr/bin/python3 to run as another user")
    state = public_tmp / "state"
    state.mkdir(mode=0o755)
    holder = subprocess.Popen([*USER_LOCKS[how], str(state)], cwd="/",
                              user=65534, group=65534, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        d = env.start(env={"STATE_DIRECTORY": str(state)})
        said = "(exited)" if how == "shell-fd" else "(uid 65534)"
        d.wait_log(f"{said} holds a lock on the state directory {state}, and cannot write")
        assert d.proc.poll() is None
    finally:
        holder.kill()
        holder.wait()


def test_a_users_process_at_a_crashed_daemons_pid_is_not_taken_for_it(env: Env) -> None:
    """A daemon killed (SIGKILL, an OOM kill) leaves state.json naming its PID, which any
    user reads.  A user who got that PID (forking through the PID space) for a process
    with 'gtp5g' in its command line made every start after it exit 75 ('another
    gtp5g-operator (PID ...) is running with the runtime directory'), and `status`
    show the dead daemon's table as running.  The daemon writes state.json: a process
    of another user than its owner is not that daemon."""
    if os.geteuid() != 0 or not os.access("/proc/sys/kernel/ns_last_pid", os.W_OK):
        pytest.skip("needs root to force a PID with /proc/sys/kernel/ns_last_pid")
    first = env.start()
    wait_until(lambda: (env.tmp / "run" / "state.json").exists(), 20, "state.json")
    first.proc.kill()
    first.proc.wait()
    impostor = None
    for _ in range(50):
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(first.pid - 1))
        impostor = subprocess.Popen(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             "sh", "-c", "read x", "gtp5g-operator"], cwd="/", stdin=subprocess.PIPE)
        if impostor.pid == first.pid:
            break
        impostor.kill()
        impostor.wait()
    else:
        pytest.skip(f"could not get PID {first.pid} back (a busy machine took it)")
    assert impostor is not None
    try:
        status = subprocess.run(
            [sys.executable, "-m", "gtp5g_operator", "status", "--runtime-dir",
             str(env.tmp / "run")], capture_output=True, text=True, timeout=30,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
        assert status.returncode == 3 and "stale" in status.stdout + status.stderr, status
        second = DaemonProcess(env.config_path, None, env.tmp / "second.log")
        env.daemons.append(second)
        wait_until(lambda: second.proc.poll() is not None or "reading trace source"
                   in second.log(), 20, "the second daemon to start or exit")
        assert second.proc.poll() is None, second.log()
    finally:
        impostor.kill()
        impostor.wait()


def test_a_write_the_server_refuses_says_what_to_change(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    """An integer priority against the 2025 API (which takes true/false): the ERROR said
    'HTTP 400: Invalid request payload: json: cannot unmarshal' and nothing to do."""
    d = env.start(strategy={"priority": 10})
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    d.wait_log("push failed:")
    failed = [ln for ln in d.log().splitlines() if "push failed:" in ln]
    assert " ERROR " in failed[0] and "strategy.priority = true or false" in failed[0], failed


def test_a_400_to_a_true_or_false_priority_gives_no_priority_advice(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    """With strategy.priority = true (the default, what the 2025 API takes), a 400 from
    something else (a filtering proxy) got the same advice: that the 2025 release takes
    true or false (as written) and later ones an integer (which the 2025 API refuses)."""
    env.api.answers[("POST", "/api/v1/scheduling/strategies")] = (
        400, b'{"success": false, "error": "request rejected by policy"}')
    d = env.start()
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    d.wait_log("push failed:")
    failed = [ln for ln in d.log().splitlines() if "push failed:" in ln]
    assert "HTTP 400: request rejected by policy" in failed[0], failed
    assert "strategy.priority" not in failed[0], failed


@pytest.mark.parametrize("status, body", [
    (200, b'{"success": false, "error": "database is locked"}'),  # bad-answer
    (401, b'{"success": false, "error": "Invalid or expired token"}'),  # token refused
], ids=["garbled-answer", "write-refused"])
def test_a_failing_push_logs_no_line_per_retry(env: Env, gnb: Callable[..., GnbProcess],
                                               status: int, body: bytes) -> None:
    """A write the server keeps failing while its token route works: every retry gets
    a new token (the old one is dropped after a 401 or a garbled answer), and each
    token was an INFO line, one per retry for as long as the failure lasted (24 in
    20 s at resync_interval 1 s; 360 an hour at the default).  The failure is one
    line; the tokens obtained to retry it say nothing above DEBUG."""
    d = env.start(strategy={"resync_interval": 0.5}, api={"timeout": 0.4},
                  log={"level": "info"})
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    env.api.wait_post(lambda s: pids(s) == {g.pid})
    # From here on one failure line (a loaded host may have timed out a push before,
    # and its recovery said "API reachable again" already).
    env.wait_pushed(1)
    mark = len(d.log())
    env.api.answers[("POST", "/api/v1/scheduling/strategies")] = (status, body)

    def tokens() -> int:
        return sum(r.path == "/api/v1/auth/token" for r in env.api.received)

    wait_until(lambda: tokens() >= 8, 30, "eight retries, each with a new token")
    del env.api.answers[("POST", "/api/v1/scheduling/strategies")]
    wait_until(lambda: "API reachable again" in d.log()[mark:], 20, "a push that succeeds")
    d.stop()
    log = d.log()
    assert log.count("got an API token") == 1, log  # the first, at start
    assert log[mark:].count("push failed:") == 1, log


def test_a_gnb_of_many_threads_restarting_is_a_few_lines_not_one_per_thread(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    """Each tracked thread was an INFO line when added and another when it exited: a
    gNB of 1,000 threads logged 2,000 lines a restart, and a few restarts in 30 s
    passed journald's RateLimitBurst (10,000), which then dropped every line of the
    service, the ones that needed a person too.  A restart is a process tracked and a
    process removed; the threads are said at DEBUG."""
    d = env.start(log={"level": "info"})
    env.wait_pushed(0)
    mark = len(d.log())
    seen: List[GnbProcess] = []
    for _ in range(3):
        g = gnb(workers=100)
        env.writer.write(lines_for(g))
        env.api.wait_post(lambda s: pids(s) == set(g.tids), timeout=20)  # noqa: B023 (now)
        g.stop()
        env.api.wait_post(lambda s: s == [], timeout=20, after=len(env.api.posts()) - 1)
        seen.append(g)
    said = d.log()[mark:].splitlines()  # the removal is logged before the empty push
    assert not [ln for ln in said if "task " in ln], said[:5]
    for g in seen:
        assert sum(f"process {g.pid} " in ln for ln in said) == 2, said  # tracked, removed
    assert len(said) == 2 * len(seen), said


def test_a_gnb_restarting_whose_executable_cannot_be_read_is_one_error_not_one_a_restart(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    """match.exe set and no CAP_SYS_PTRACE (a unit override, a container): every gNB
    process of another user is refused, and each one was an ERROR, so a gNB restarting
    every few seconds put an ERROR a restart into `journalctl -p err` for one missing
    capability.  Once per episode; a process tracked ends it."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to drop CAP_SYS_PTRACE")
    env.write_config(match={"exe": ["/usr/bin/nr-gnb"]})
    d = DaemonProcess(env.config_path, env.notify, env.tmp / "daemon.log",
                      prefix=["setpriv", "--bounding-set", "-sys_ptrace", "--"])
    env.daemons.append(d)
    env.notify.wait("READY", "1", timeout=30)
    for _ in range(3):
        g = gnb(threads=(), user=65534)
        env.writer.write(lines_for(g))
        judged = f"process {g.pid} (nr-gnb) "  # the ERROR, or (once said) a DEBUG line
        wait_until(lambda: judged in d.log(), 20, "the process judged")  # noqa: B023
        g.stop()
    errors = [ln for ln in d.log().splitlines() if "may not read its executable" in ln]
    assert len(errors) == 1 and "CAP_SYS_PTRACE" in errors[0], errors


def test_a_public_key_file_that_starts_with_a_byte_order_mark_gets_a_token(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    """An editor's UTF-8 byte order mark before -----BEGIN: check-config took the key
    (cryptography reads past it), Gthulhu's servers do not (Go's pem.Decode), and every
    push was a 401 saying to install the very key that was installed."""
    key = env.tmp / "bom-public-key.pem"
    key.write_bytes(b"\xef\xbb\xbf" + env.keys["public"].read_bytes().replace(b"\n", b"\r\n"))
    key.chmod(0o644)
    d = env.start(api={"public_key": str(key)})
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    env.api.wait_post(lambda s: pids(s) == {g.pid})
    assert "unauthorized" not in d.log()


def test_a_gnb_named_process_that_match_excludes_is_a_warning_once(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    """A process named like the gNB that match.uid excludes (an impostor, or the gNB
    itself after it moved to another uid) was said at DEBUG only: at the shipped log
    level the journal showed a healthy service that tracked nothing, and no reason.
    Now one WARNING naming it and why, not one per trace line or liveness pass; the next
    process tracked ends the episode, and says so."""
    uid = os.getuid()
    d = env.start(match={"uid": [uid + 4242]})  # at debug: each judgement is seen
    env.api.wait_post(lambda s: s == [])
    g = gnb(threads=("nr-gnb-rlc",))
    warning = (f"WARNING process {g.pid} (nr-gnb, exe {os.readlink(f'/proc/{g.pid}/exe')}, "
               f"uid {uid}) is named like the gNB but not tracked: its uid {uid} is not in "
               "match.uid")
    env.writer.write(lines_for(g))
    d.wait_log(warning)

    def judged_again() -> bool:  # each liveness pass forgets the verdict: lines judge again
        env.writer.write(lines_for(g))
        return d.log().count(f"process {g.pid} not tracked: its uid") >= 3

    wait_until(judged_again, 30, "the process judged again after liveness passes",
               interval=0.2)
    assert " ".join(d.log().split()).count(" ".join(warning.split())) == 1, d.log()
    env.write_config(match={"uid": [uid]})
    d.signal(signal.SIGHUP)
    d.wait_log("configuration reloaded: match.uid changed")
    env.writer.write(lines_for(g))
    d.wait_log(f"uid {uid}) matches: tracking it")
    env.api.wait_post(lambda s: pids(s) == set(g.tids))
