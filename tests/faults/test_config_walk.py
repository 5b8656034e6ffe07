"""Issue #13, class 2: nothing the configuration says may kill the daemon.

Every key of the schema (`gtp5g_operator.config.parse._SCHEMA`, so a key
added later is walked too) is tried with a battery of hostile values
(robust_support.hostile_values: every TOML type, NaN and the infinities,
64-bit extremes, NUL and control characters, 5,000-character strings, every
kind of file — FIFO, device, socket, directory, symlink loop, 1.2 MB file,
tracefs's non-pipe `trace` —, broken URLs and listen addresses).

The verdict of `load_config` — what `check-config` runs — must be a
`ConfigError` or a configuration the daemon runs with:

* rejected: the real daemon exits 78 before READY=1 with one error line, and
  a reload with it is refused while the daemon keeps running;
* accepted: the real daemon starts, keeps running and stops cleanly, and a
  reload with it leaves it running.

The reload walk runs every (key, value) through one real daemon; the start
walk starts a real daemon for every accepted pair and for a sample of the
rejected ones (their verdict is `load_config`'s, which both check-config and
the start call; the sample proves that path end to end).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from gtp5g_operator.config import ConfigError
from gtp5g_operator.service.vocabulary import load as load_config
from testbed.harness import GnbProcess, SchedulingLag
from tests.conftest import Env, base_config
from tests.faults.robust_support import (
    Fleet,
    HostileFiles,
    Launched,
    LogTail,
    Sections,
    batches,
    busy_tcp_port,
    check_config,
    dumps,
    error_lines,
    hostile_values,
    ready_count,
    schema_keys,
    wait_ready_count,
    with_value,
)
from tests.faults.test_faults import lines_for, pids, ping_gaps

pytestmark = pytest.mark.faults

KEYS = schema_keys()
WATCHDOG_USEC = "2000000"  # WatchdogSec=2s: pings every second
# Named in the issue: among the rejected starts that are run for real.
ISSUE_EXAMPLES = {
    "api.url": {"url port 65536", "url port 99999", "url userinfo"},
    "trace.pipe": {"regular file", "char device null", "tracefs trace file",
                   "regular trace_pipe"},
    "api.public_key": {"FIFO"}, "api.ca_file": {"FIFO"},
}


def verdict(config: Path) -> Optional[str]:
    """None when load_config (check-config, the start, a reload) accepts the file,
    else its one-line error.  Any other exception is a crash: the start would
    print a traceback and exit 1, and a reload would kill the daemon."""
    try:
        load_config(str(config))
    except ConfigError as exc:
        return str(exc)
    return None


def walk_base(env: Env) -> Sections:
    return base_config(env.trace_pipe, env.api.url, env.keys["public"],
                       log={"level": "info"})


@pytest.fixture
def light_base(tmp_path: Path, keys: Dict[str, Path]) -> Sections:
    """A valid configuration for load_config alone (no API, no daemon)."""
    fifo = tmp_path / "trace_pipe"
    os.mkfifo(fifo)
    return base_config(fifo, "http://127.0.0.1:9", keys["public"], log={"level": "info"})


@pytest.fixture
def busy_port() -> Iterator[int]:
    sock = busy_tcp_port()
    yield int(sock.getsockname()[1])
    sock.close()


def key_id(key: Tuple[str, str, Any]) -> str:
    return f"{key[0]}.{key[1]}"


# --- what check-config decides ------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS, ids=key_id)
def test_load_rejects_or_accepts_but_never_raises(light_base: Sections, tmp_path: Path,
                                                  busy_port: int,
                                                  key: Tuple[str, str, Any]) -> None:
    section, name, default = key
    fx = HostileFiles(tmp_path / "fx")
    config = tmp_path / "walk.toml"
    for label, value in hostile_values(default, fx, busy_port):
        config.write_text(dumps(with_value(light_base, section, name, value)))
        try:
            problem = verdict(config)
        except Exception as exc:  # anything but a ConfigError is the defect
            pytest.fail(f"{section}.{name} = {label}: load_config raised {exc!r}, not a "
                        "ConfigError (the start would exit 1 with a traceback)")
        if problem is not None:
            assert "\n" not in problem, f"{section}.{name} = {label}: {problem!r}"


def test_check_config_cli_agrees_with_load_config(light_base: Sections, tmp_path: Path,
                                                  busy_port: int) -> None:
    """One value per key: the check-config command's verdict is load_config's."""
    fx = HostileFiles(tmp_path / "fx")
    runs = []
    for i, (section, name, default) in enumerate(KEYS):
        values = hostile_values(default, fx, busy_port)
        label, value = values[(7 * i) % len(values)]
        config = tmp_path / f"c{i}.toml"
        config.write_text(dumps(with_value(light_base, section, name, value)))
        runs.append((f"{section}.{name} = {label}", verdict(config), check_config(config)))
    for what, expected, proc in runs:
        out, err = proc.communicate(timeout=20)
        if expected is None:
            assert (proc.returncode, out.strip()) == (0, "ok"), f"{what}: {err}"
        else:
            assert proc.returncode == 78 and expected in err, f"{what}: {out} {err}"
            assert "Traceback" not in err


# --- reload: every key, every value, one running daemon -----------------------------------------


def test_every_key_with_hostile_values_through_reload(env: Env, tmp_path: Path, busy_port: int,
                                                      gnb: Callable[..., GnbProcess],
                                                      lag: SchedulingLag) -> None:
    fx = HostileFiles(tmp_path / "fx")
    base = walk_base(env)
    env.config_path.write_text(dumps(base))
    d = env.start(env={"WATCHDOG_USEC": WATCHDOG_USEC})
    t0 = time.monotonic()
    tail = LogTail(d.log_path)
    tail.new()
    count = ready_count(env.notify)
    problems: List[str] = []
    tried = accepted = 0

    def reload(text: str, what: str) -> str:
        nonlocal count
        env.config_path.write_text(text)
        d.signal(signal.SIGHUP)
        count += 1
        try:
            wait_ready_count(env.notify, count, timeout=10)
        except AssertionError:
            raise AssertionError(f"{what}: no READY=1 after the reload (exit "
                                 f"{d.proc.poll()}):\n{tail.new()[-3000:]}") from None
        return tail.new()

    try:
        for section, name, default in KEYS:
            for label, value in hostile_values(default, fx, busy_port):
                what = f"{section}.{name} = {label}"
                text = dumps(with_value(base, section, name, value))
                env.config_path.write_text(text)
                expected = verdict(env.config_path)
                logged = reload(text, what)
                tried += 1
                assert d.proc.poll() is None, f"{what}: the daemon died:\n{logged[-3000:]}"
                rejected = "reload rejected, keeping the running configuration" in logged
                if "Traceback" in logged:
                    problems.append(f"{what}: traceback in the log:\n{logged[-2000:]}")
                if rejected != (expected is not None):
                    problems.append(f"{what}: check-config says {expected or 'ok'!r}, the "
                                    f"reload {'rejected it' if rejected else 'applied it'}")
                if not rejected:  # back to the base configuration, files as they were
                    accepted += 1
                    reload(dumps(base), f"{what}, then back")
                    fx.reset()
    finally:
        tail.close()
    assert not problems, "\n".join(problems)
    assert d.proc.poll() is None
    # Still itself: a changed value is pushed at once; the watchdog was fed throughout.
    env.config_path.write_text(dumps(with_value(base, "strategy", "execution_time_ns",
                                                7_654_321)))
    d.signal(signal.SIGHUP)
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    env.api.wait_post(lambda s: pids(s) == {g.pid}
                      and {e["execution_time"] for e in s} == {7_654_321}, timeout=10)
    gaps = ping_gaps(env, t0)
    assert gaps and max(gaps) < 2.0 + lag.worst, f"a ping gap of {max(gaps):.2f} s"
    assert tried > 20 * len(KEYS) and accepted > 0, (tried, accepted)


# --- start: every accepted value, a sample of the rejected ones ---------------------------------


def accepted_cases(env: Env, tmp_path: Path, busy_port: int) -> List[Tuple[str, str]]:
    """(label, config text): every value check-config accepts, several keys per start.

    A start costs a third of a CPU second and this walk accepts ~100 values,
    so values of different keys share a start: each accepted value goes into
    the first combination that lacks its key and that check-config still
    accepts with it (keys checked together, like api.timeout and
    strategy.resync_interval, then end up apart).  Each start names files of
    its own.
    """
    probe = tmp_path / "probe.toml"
    fx_probe = HostileFiles(tmp_path / "fxp")
    Pick = Tuple[Tuple[str, str, Any], str]

    def sections_for(picks: List[Pick], fx: HostileFiles) -> Sections:
        sections = walk_base(env)
        for (section, name, default), label in picks:
            value = dict(hostile_values(default, fx, busy_port))[label]
            sections = with_value(sections, section, name, value)
        return sections

    def accepted(picks: List[Pick]) -> bool:
        probe.write_text(dumps(sections_for(picks, fx_probe)))
        return verdict(probe) is None

    combos: List[List[Pick]] = []
    for key in KEYS:
        for label, _ in hostile_values(key[2], fx_probe, busy_port):
            if not accepted([(key, label)]):
                continue
            for combo in combos:
                if all(k != key for k, _ in combo) and accepted([*combo, (key, label)]):
                    combo.append((key, label))
                    break
            else:
                combos.append([(key, label)])
    return [(", ".join(f"{k[0]}.{k[1]} = {label}" for k, label in combo),
             dumps(sections_for(combo, HostileFiles(tmp_path / f"fx{i}"))))
            for i, combo in enumerate(combos)]


def rejected_cases(env: Env, tmp_path: Path, busy_port: int) -> List[Tuple[str, str]]:
    """(label, config text): per key one value check-config refuses — the first
    (a wrong type) or the last (a hostile string, path or list), key by key —
    and the issue's examples."""
    probe = tmp_path / "probe.toml"
    fx = HostileFiles(tmp_path / "fxr")
    cases: List[Tuple[str, str]] = []
    for k, (section, name, default) in enumerate(KEYS):
        rejected = []
        for label, value in hostile_values(default, fx, busy_port):
            text = dumps(with_value(walk_base(env), section, name, value))
            probe.write_text(text)
            if verdict(probe) is not None:
                rejected.append((label, text))
        wanted = ISSUE_EXAMPLES.get(f"{section}.{name}", set())
        pick = 0 if k % 2 == 0 else len(rejected) - 1
        cases += [(f"{section}.{name} = {label}", text) for i, (label, text)
                  in enumerate(rejected) if i == pick or label in wanted]
    return cases


def test_every_accepted_hostile_value_starts_and_keeps_running(env: Env, tmp_path: Path,
                                                               busy_port: int) -> None:
    cases = accepted_cases(env, tmp_path, busy_port)
    assert cases, "the battery should hold values that are valid"
    problems = run_and_stop(Fleet(tmp_path / "f"), cases, survive=1.0, width=8)
    assert not problems, "\n\n".join(problems)


def run_and_stop(fleet: Fleet, cases: List[Tuple[str, str]], survive: float,
                 width: int) -> List[str]:
    """Start every case (at most `width` at once); each must send READY=1, be
    running `survive` seconds later (two liveness passes, the first push, the
    metrics endpoint's start), then stop cleanly on SIGTERM: exit 0, no
    state.json left."""
    pending = list(cases)
    starting: List[Tuple[Launched, float]] = []
    running: List[Tuple[Launched, float]] = []
    problems: List[str] = []
    try:
        while pending or starting or running:
            while pending and len(starting) + len(running) < width:
                label, text = pending.pop(0)
                item = fleet.launch(label, text, {"WATCHDOG_USEC": WATCHDOG_USEC})
                starting.append((item, time.monotonic()))
            now = time.monotonic()
            for entry in list(starting):
                item, launched = entry
                if item.ready():
                    starting.remove(entry)
                    running.append((item, now))
                elif item.daemon.proc.poll() is not None or now - launched > 20:
                    starting.remove(entry)
                    problems.append(f"{item.label}: accepted by check-config but no READY "
                                    f"(exit {item.daemon.proc.poll()}):\n{item.log()[-1500:]}")
                    item.daemon.stop()
            for entry in list(running):
                item, ready = entry
                if now - ready >= survive:
                    running.remove(entry)
                    problems += still_running(item)
                    if item.daemon.proc.poll() is None:
                        item.daemon.signal(signal.SIGTERM)
                        problems += stopped_cleanly(item)
                    item.notify.close()
            time.sleep(0.01)
    finally:
        fleet.close()
    return problems


def still_running(item: Launched) -> List[str]:
    log = item.log()
    if item.daemon.proc.poll() is not None:
        return [f"{item.label}: died after READY=1 (exit {item.daemon.proc.returncode}):\n"
                f"{log[-1500:]}"]
    return [f"{item.label}: traceback:\n{log[-1500:]}"] if "Traceback" in log else []


def stopped_cleanly(item: Launched) -> List[str]:
    try:
        code: Optional[int] = item.daemon.proc.wait(10)
    except subprocess.TimeoutExpired:
        code = None
    problems = []
    if code != 0:
        problems.append(f"{item.label}: SIGTERM gave exit {code}:\n{item.log()[-1500:]}")
    if (item.directory / "run" / "state.json").exists():
        problems.append(f"{item.label}: state.json left behind after a clean stop")
    return problems


def test_rejected_hostile_values_exit_78_before_ready(env: Env, tmp_path: Path,
                                                      busy_port: int) -> None:
    cases = rejected_cases(env, tmp_path, busy_port)
    assert len(cases) >= len(KEYS)
    problems: List[str] = []
    for n, batch in enumerate(batches(cases, 16)):
        fleet = Fleet(tmp_path / f"b{n}")
        try:
            launched = [fleet.launch(label, text) for label, text in batch]
            for item in launched:
                try:
                    code: Optional[int] = item.daemon.proc.wait(20)
                except subprocess.TimeoutExpired:
                    code = None
                log = item.log()
                errors = error_lines(log)
                if code != 78 or item.ready() or len(errors) != 1 or "Traceback" in log:
                    problems.append(f"{item.label}: exit {code}, READY "
                                    f"{'sent' if item.ready() else 'not sent'}, "
                                    f"{len(errors)} error line(s):\n{log[-1500:]}")
        finally:
            fleet.close()
    assert not problems, "\n\n".join(problems)


# --- class 3 on the configuration's own files: FIFOs, devices, oversize ---------------------------


SPECIAL_KINDS = ("FIFO", "FIFO with a silent writer", "socket", "directory", "1.2 MB file",
                 "symlink to a FIFO") + (("char device zero",) if os.geteuid() == 0 else ())


def make_special(kind: str, path: Path, keep: List[Any]) -> None:
    if kind.startswith("FIFO"):
        os.mkfifo(path)
        if kind == "FIFO with a silent writer":  # a writer that never writes or closes
            keep.append(os.open(path, os.O_RDWR | os.O_NONBLOCK))
    elif kind == "char device zero":
        os.mknod(path, 0o600 | 0o020000, os.makedev(1, 5))
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.listen(1)
        keep.append(sock)
    elif kind == "directory":
        path.mkdir()
    elif kind == "1.2 MB file":
        path.write_text("# padding\n" * 120_000)
        os.chmod(path, 0o600)
    elif kind == "symlink to a FIFO":
        os.mkfifo(str(path) + ".target")
        os.symlink(str(path) + ".target", path)
    else:
        raise ValueError(kind)


ROLES = ("configuration", "api.public_key", "api.ca_file", "api.password_file")


def role_sections(env: Env, role: str, special: Path) -> Sections:
    """A configuration with `special` as the file of `role` (not the configuration)."""
    sections = walk_base(env)
    if role == "api.public_key":
        sections["api"]["public_key"] = str(special)
    elif role == "api.ca_file":
        sections["api"]["ca_file"] = str(special)
    elif role == "api.password_file":
        sections["api"].update(flavor="manager", username="operator",
                               password_file=str(special))
    return sections


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    else:
        path.unlink()


@pytest.mark.parametrize("role", ROLES)
def test_special_files_as_config_key_ca_or_password_never_hang(
        env: Env, tmp_path: Path, role: str, lag: SchedulingLag) -> None:
    """check-config, the start and a reload each answer at once, with one error
    line naming the file, for every kind of file that is not a regular one (or
    is too big): only regular files are read, without blocking."""
    d = env.start(env={"WATCHDOG_USEC": WATCHDOG_USEC})
    t0 = time.monotonic()
    keep: List[Any] = []
    fleet = Fleet(tmp_path / "f")
    try:
        for i, kind in enumerate(SPECIAL_KINDS):
            what = f"{role} = {kind}"
            special = tmp_path / f"s{i}"
            make_special(kind, special, keep)
            config = special
            if role != "configuration":
                config = tmp_path / f"c{i}.toml"
                config.write_text(dumps(role_sections(env, role, special)))
            # check-config
            proc = check_config(config)
            try:
                _, err = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:  # the defect itself
                proc.kill()
                proc.communicate()
                pytest.fail(f"{what}: check-config hangs")
            assert proc.returncode == 78, f"{what}: {err}"
            assert str(special) in err and "Traceback" not in err, f"{what}: {err}"
            # the start
            item = fleet.launch(what, config_path=config)
            try:
                code = item.daemon.proc.wait(5)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{what}: the start hangs:\n{item.log()}")
            assert code == 78 and not item.ready(), f"{what}: exit {code}:\n{item.log()}"
            assert str(special) in item.log() and len(error_lines(item.log())) == 1
            # a reload of the running daemon
            named = env.config_path if role == "configuration" else special
            if role == "configuration":
                env.config_path.unlink()
                make_special(kind, env.config_path, keep)
            else:
                env.config_path.write_text(config.read_text())
            n = ready_count(env.notify)
            d.signal(signal.SIGHUP)
            wait_ready_count(env.notify, n + 1, timeout=15)
            d.wait_log(f"reload rejected, keeping the running configuration: {named}",
                       timeout=15)
            remove(env.config_path)
            env.config_path.write_text(dumps(walk_base(env)))
        assert d.proc.poll() is None
        env.notify.wait("WATCHDOG", "1", timeout=10, after=len(env.notify.all()))
        gaps = ping_gaps(env, t0)
        assert gaps and max(gaps) < 2.0 + lag.worst, gaps
    finally:
        fleet.close()
        for held in keep:
            if isinstance(held, int):
                os.close(held)
            else:
                held.close()


@pytest.mark.parametrize("role", ("configuration", "api.public_key"))
def test_size_limit_is_an_error_not_a_truncation(env: Env, tmp_path: Path, role: str) -> None:
    """Exactly 1 MiB is read whole; one byte more is an error naming the size (a
    1.2 MB configuration used to be read up to 1 MiB and the rest ignored)."""
    limit = 1 << 20
    results: Dict[int, Optional[str]] = {}
    for size in (limit, limit + 1):
        target = tmp_path / f"{role}-{size}"
        if role == "configuration":
            head = dumps(walk_base(env)).encode()
            target.write_bytes(head + b"#" * (size - len(head) - 1) + b"\n")
            config = target
        else:
            pem = env.keys["public"].read_bytes()
            target.write_bytes(pem + b"\n" * (size - len(pem)))
            config = tmp_path / f"c-{size}.toml"
            config.write_text(dumps(with_value(walk_base(env), "api", "public_key",
                                               str(target))))
        os.chmod(target, 0o600)
        assert target.stat().st_size == size
        results[size] = verdict(config)
    assert results[limit] is None, results[limit]
    too_big = results[limit + 1]
    assert too_big is not None and "larger than" in too_big, too_big
    # and a key that grew past the limit on disk is also refused by a reload
    d = env.start()
    if role == "configuration":
        env.config_path.write_bytes((tmp_path / f"{role}-{limit + 1}").read_bytes())
    else:
        env.config_path.write_text(dumps(with_value(walk_base(env), "api", "public_key",
                                                    str(tmp_path / f"{role}-{limit + 1}"))))
    d.signal(signal.SIGHUP)
    d.wait_log("reload rejected, keeping the running configuration", timeout=20)
    assert "larger than" in d.log().split("reload rejected", 1)[1]
    assert d.proc.poll() is None
