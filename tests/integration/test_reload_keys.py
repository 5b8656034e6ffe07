"""`systemctl reload` key by key, as an admin uses it: each key of the schema changed
alone in one running daemon, then back.  Each reload is bracketed for systemd
(RELOADING=1 with MONOTONIC_USEC, then READY=1), says what changed, and is in
state.json by the time READY=1 is sent; a rejected one too.  Once back where it
started, nothing a value wrote is left behind: the daemon's files are those a fresh
start with that configuration makes."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

from gtp5g_operator.config.parse import sections
from testbed.harness import DaemonProcess, wait_until
from testbed.tls import make_ca_and_server_cert
from tests.conftest import Env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def every_key(env: Env, tmp: Path) -> List[Tuple[str, str, Any]]:
    """(section, key, another valid value) for every key of the schema."""
    (tmp / "tls").mkdir(parents=True)
    fifo = tmp / "another-trace-pipe"
    os.mkfifo(fifo)
    key = tmp / "same-key.pem"
    key.write_bytes(env.keys["public"].read_bytes())
    key.chmod(0o644)
    password = tmp / "another-password"
    password.write_text("0ther-Passw0rd\n")
    password.chmod(0o600)
    ca = make_ca_and_server_cert(tmp / "tls")["ca"]
    return [
        ("trace", "pipe", str(fifo)), ("trace", "format", "text"),
        ("trace", "allow_pid_namespace", True),
        ("match", "comm", ["nr-gnb", "nr-softmodem"]), ("match", "exe", ["/usr/bin/nr-gnb"]),
        ("match", "uid", [0]),
        ("api", "url", f"http://127.0.0.1:{free_port()}"), ("api", "flavor", "v0"),
        ("api", "public_key", str(key)), ("api", "timeout", 2.0),
        ("api", "ca_file", str(ca)), ("api", "node_name", "node-b"),
        ("api", "username", "operator"), ("api", "decision_maker_url", "http://127.0.0.1:9"),
        ("api", "password_file", str(password)),
        ("strategy", "priority", 2), ("strategy", "execution_time_ns", 7_000_000),
        ("strategy", "targets", "tgid"), ("strategy", "mode", "merge"),
        ("strategy", "resync_interval", 4.0), ("strategy", "liveness_interval", 120.0),
        ("strategy", "clear_on_stop", True),
        ("log", "level", "info"),
        ("metrics", "listen", f"127.0.0.1:{free_port()}"), ("metrics", "allow_remote", True),
        ("metrics", "textfile", str(tmp / "gtp5g_operator.prom")),
    ]


def files(env: Env) -> Dict[str, List[str]]:
    return {d: sorted(os.listdir(env.tmp / d)) if (env.tmp / d).exists() else []
            for d in ("run", "state")}


def test_every_key_reloads_alone_and_back_leaving_what_a_fresh_start_would(
        env: Env, tmp_path: Path) -> None:
    keys = every_key(env, tmp_path / "values")
    assert {f"{s}.{k}" for s, k, _ in keys} == {  # a new key is walked too
        f"{s}.{f.name}" for s, cls in sections().items() for f in dataclasses.fields(cls)}
    password = tmp_path / "password"  # api.username needs one: this is where it is
    password.write_text("s3cret-Passw0rd\n")
    password.chmod(0o600)
    base: Dict[str, Dict[str, Any]] = {
        "strategy": {"liveness_interval": 60.0},  # published by the reload, not by a pass
        "api": {"password_file": str(password)}}
    d = env.start(**base)  # type: ignore[arg-type]
    env.api.wait_post(lambda s: True)
    state = env.tmp / "run" / "state.json"
    counts = {"ok": 0, "error": 0}
    loaded = [json.loads(state.read_text())["config"]["loaded_at"]]

    def reload(text: str, says: str, ok: bool = True) -> Dict[str, Any]:
        n, mark = len(env.notify.all()), len(d.log())
        env.config_path.write_text(text)
        sent = time.monotonic()
        d.signal(signal.SIGHUP)
        ready = env.notify.wait("READY", "1", after=n)
        got = env.notify.timed()[n:]
        stamps = [m for _, m in got if m.get("RELOADING") == "1"]
        assert stamps and "STATUS" in ready, (says, got)
        usec = int(stamps[0]["MONOTONIC_USEC"])
        assert sent * 1e6 <= usec <= got[-1][0] * 1e6 + 1, (says, sent, usec)
        said = wait_until(lambda: [line for line in d.log()[mark:].splitlines()
                                   if "reload" in line], 20, says)
        assert says in said[0], (says, said)
        counts["ok" if ok else "error"] += 1
        published: Dict[str, Any] = json.loads(state.read_text())
        # In state.json once READY=1 is sent: nothing waits for a liveness pass.
        assert published["counts"]["reloads"] == counts, (says, published["counts"])
        assert (published["config"]["loaded_at"] > loaded[-1]) == ok, says
        loaded.append(published["config"]["loaded_at"])
        return published

    env.write_config(**base)
    start_text = env.config_path.read_text()
    before = files(env)
    for section, name, value in keys:
        env.write_config(**{**base, section: {**base.get(section, {}), name: value}})
        text = env.config_path.read_text()
        published = reload(text, f"{section}.{name}")
        if (section, name) in (("strategy", "mode"), ("strategy", "targets")):
            assert published["config"][name] == value
        if (section, name) == ("api", "url"):
            assert published["api"]["url"] == value
        if (section, name) == ("trace", "pipe"):
            assert published["trace"]["path"] == value
        if (section, name) == ("metrics", "listen"):
            wait_until(lambda: listening(int(value.rsplit(":", 1)[1])), 20,  # noqa: B023
                       "the endpoint listening")
        reload("[strategy]\nexecution_time_ns = \"20ms\"\n",
               "reload rejected, keeping the running configuration", ok=False)
        reload(start_text, f"{section}.{name}")
    assert d.proc.poll() is None
    after = files(env)
    textfile = tmp_path / "values" / "gtp5g_operator.prom"
    port = int(dict((n, v) for _, n, v in keys)["listen"].rsplit(":", 1)[1])
    assert not textfile.exists() and not listening(port)
    d.stop()
    assert set(after["state"]) <= {"owned.json"}, after  # merge mode's: a start reads it
    n = len(env.notify.all())
    fresh = DaemonProcess(env.config_path, env.notify, env.tmp / "fresh.log")
    try:
        env.notify.wait("READY", "1", after=n, timeout=30)
        assert after["run"] == files(env)["run"], (before, after, files(env))
    finally:
        fresh.stop()


def test_a_new_log_level_under_sigusr2s_debug_says_when_it_takes_effect(env: Env) -> None:
    """SIGUSR2's debug logging outlasts a reload (it is switched off by SIGUSR2 only):
    a reload of log.level then said "log.level changed" and went on logging at debug,
    silent about when the new level would hold."""
    d = env.start(log={"level": "info"})
    d.signal(signal.SIGUSR2)
    d.wait_log("debug logging on (SIGUSR2)")
    n = len(env.notify.all())
    env.write_config(log={"level": "warning"})
    d.signal(signal.SIGHUP)
    env.notify.wait("READY", "1", after=n)
    d.wait_log("log.level = warning is in force once debug logging is switched off (SIGUSR2)")
    d.signal(signal.SIGUSR2)
    d.wait_log("debug logging off (back to warning)")
