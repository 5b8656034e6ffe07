"""The loop's turns with an injected clock: no sleeping, no waiting.

The daemon is built whole (every component) with a recording writer in
place of the HTTP one, so the turns cover pushes, pings, the liveness pass,
the trace source's rest and reloads.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import selectors
import signal
from pathlib import Path
from typing import Any, Collection, Dict, Iterator, List, Sequence, Tuple

import pytest

from gtp5g_operator.commands.status import format_status
from gtp5g_operator.config import Config, TraceConfig
from gtp5g_operator.core.component import Component
from gtp5g_operator.core.tracker import ProcessView
from gtp5g_operator.gthulhu.errors import ApiError
from gtp5g_operator.service.daemon import FIRST_PUSH_DELAY, Daemon
from gtp5g_operator.service.publisher import WallTime
from gtp5g_operator.service.pusher import COALESCE
from gtp5g_operator.service.vocabulary import load as load_config
from gtp5g_operator.trace.source import REST
from testbed.fake_gthulhu import FakeGthulhu
from testbed.harness import GnbProcess, write_config
from testbed.tracelines import gtp5g_line
from tests.doubles import Clock, RecordingWriter


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Tuple[Path, Clock, List[str]]]:
    fifo = tmp_path / "trace_pipe"
    os.mkfifo(fifo)
    yield fifo, Clock(), []


def make(tmp_path: Path, fifo: Path, clock: Clock, sent: List[str],
         env: Dict[str, str], **config: Any) -> Tuple[Daemon, RecordingWriter]:
    writer = RecordingWriter()
    cfg = Config(trace=TraceConfig(pipe=str(fifo)), **config)
    full_env = {"RUNTIME_DIRECTORY": str(tmp_path / "run"), **env}
    d = Daemon(cfg, str(tmp_path / "config.toml"), env=full_env, clock=clock,
               wall_clock=clock, make_writer=lambda c: writer)
    d.notifier.send = lambda *fields: sent.extend(fields)  # type: ignore[method-assign]
    d.setup()
    return d, writer


def test_deadlines_drive_pings_pushes_and_the_liveness_pass(
        tmp_path: Path, world: Tuple[Path, Clock, List[str]]) -> None:
    fifo, clock, sent = world
    d, writer = make(tmp_path, fifo, clock, sent, {"WATCHDOG_USEC": "4000000"})  # ping: 2 s
    try:
        d.run_once()  # the first ping is due at once; the first push after FIRST_PUSH_DELAY
        assert "WATCHDOG=1" in sent and writer.writes == []
        assert d._next_deadline() == 100.0 + FIRST_PUSH_DELAY
        clock.now += FIRST_PUSH_DELAY
        d.run_once()
        assert writer.writes == [[]]  # the empty set: stale strategies are cleared
        assert d._next_deadline() == 102.0  # next ping; resync at 110.25, liveness at 105
        sent.clear()
        clock.now = 101.9
        d.run_once()  # select(0.1) on an idle FIFO, nothing due yet
        assert sent == []
        clock.now = 102.0
        d.run_once()
        assert sent[0] == "WATCHDOG=1" and d._next_deadline() == 104.0
        clock.now = 110.25
        d.run_once()  # ping and resync push
        assert writer.writes == [[], []]
    finally:
        d.close()


def test_a_new_task_is_pushed_after_the_coalescing_window(
        tmp_path: Path, world: Tuple[Path, Clock, List[str]]) -> None:
    fifo, clock, sent = world
    d, writer = make(tmp_path, fifo, clock, sent, {})
    g = GnbProcess(threads=("nr-gnb-rlc",))
    w = os.open(fifo, os.O_WRONLY)
    try:
        clock.now += FIRST_PUSH_DELAY
        d.run_once()
        os.write(w, "".join(gtp5g_line("nr-gnb", t, g.pid) for t in g.tids).encode())
        d.run_once()  # reads the lines: the tracker adds the tasks, a push is due soon
        assert d.pusher.next_deadline() == clock.now + COALESCE
        clock.now += COALESCE
        d.run_once()
        assert sorted(writer.writes[-1]) == sorted(g.tids)
    finally:
        os.close(w)
        g.stop()
        d.close()


class DownWriter(RecordingWriter):
    """Its server is unreachable while `down` is set."""

    down = True

    def write(self, views: Sequence[ProcessView], deadline: float) -> int:
        if self.down:
            raise ApiError("connect", "cannot reach http://127.0.0.1:9")
        return super().write(views, deadline)


def test_an_outage_keeps_the_detection_times_of_live_tasks_only(
        tmp_path: Path, world: Tuple[Path, Clock, List[str]]) -> None:
    """A new task's detection time waits for the first push that reaches the server
    (detect_to_push_seconds); a task that exits before then never gets there.  With
    the API down, a gNB restarting over and over left every task it ever had in that
    table (the real daemon: 9,150 entries, 540 KB, after 150 restarts of 61 tasks in
    75 s while 61 were live), growing with the outage up to MAX_PENDING (4.5 MB)."""
    fifo, clock, _ = world
    writer = DownWriter()
    cfg = Config(trace=TraceConfig(pipe=str(fifo)))
    d = Daemon(cfg, str(tmp_path / "config.toml"), env={"RUNTIME_DIRECTORY": str(tmp_path / "run")},
               clock=clock, wall_clock=clock, make_writer=lambda c: writer)
    d.notifier.send = lambda *fields: None  # type: ignore[method-assign]
    d.setup()
    w = os.open(fifo, os.O_WRONLY)
    gnbs: List[GnbProcess] = []
    try:
        clock.now += FIRST_PUSH_DELAY
        d.run_once()
        for _ in range(6):  # restarts during the outage
            if gnbs:
                gnbs[-1].stop()
            g = GnbProcess(threads=(), workers=8)
            gnbs.append(g)
            os.write(w, "".join(gtp5g_line("nr-gnb", t, g.pid) for t in g.tids).encode())
            d.run_once()  # the tracker adds the new gNB's tasks
            clock.now += cfg.strategy.resync_interval  # past any retry's backoff
            d.run_once()  # the push fails
            assert d.pusher.last is not None and not d.pusher.last.ok
        assert d.tracker.task_count == len(g.tids)
        assert len(d.publisher._pending) == len(g.tids)  # was 6 gNBs' worth
        writer.down = False
        clock.now += cfg.strategy.resync_interval
        d.run_once()
        assert d.pusher.last is not None and d.pusher.last.ok
        assert sum(d.publisher.histograms["detect_to_push_seconds"].counts) == len(g.tids)
        assert not d.publisher._pending
    finally:
        os.close(w)
        for g in gnbs:
            g.stop()
        d.close()


def test_a_small_turn_rests_the_trace_fd(tmp_path: Path,
                                         world: Tuple[Path, Clock, List[str]]) -> None:
    fifo, clock, sent = world
    d, _ = make(tmp_path, fifo, clock, sent, {})
    w = os.open(fifo, os.O_WRONLY)
    try:
        os.write(w, b"          nr-gnb-1       [000] ..s21  1.0: e: m\n")
        d.run_once()  # reads the line; a small turn
        assert not d.trace.watched_fds() and d._next_deadline() == 100.0 + REST
        clock.now += REST
        d.run_once()
        assert d.trace.watched_fds() == d.trace.source._fds  # watched again
        assert d.trace.counters.lines == 1
    finally:
        os.close(w)
        d.close()


def test_several_sighups_in_one_turn_are_one_reload(
        tmp_path: Path, world: Tuple[Path, Clock, List[str]]) -> None:
    fifo, clock, sent = world
    write_config(tmp_path / "config.toml", trace={"pipe": str(fifo)},
                 api={"flavor": "v0", "public_key": str(tmp_path / "k.pem")})
    d, _ = make(tmp_path, fifo, clock, sent, {})
    reloads: List[int] = []
    d.reload = lambda: reloads.append(1)  # type: ignore[method-assign]
    d.signals._actions = (d.reload, *d.signals._actions[1:])
    try:
        for _ in range(5):
            os.kill(os.getpid(), signal.SIGHUP)
        d.run_once()
        assert reloads == [1]
    finally:
        d.close()


class Ordered(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Reports ready fds in registration order, to make a race deterministic."""

    def select(self, timeout: Any = None) -> Any:
        events = super().select(timeout)
        order = list(self.get_map())
        return sorted(events, key=lambda e: order.index(e[0].fileobj))


class Closer(Component):
    """Watches its own pipe; reading it closes the victim's fd (as a reload that
    replaces the trace source would)."""

    def __init__(self, fd: int, victim: Victim) -> None:
        self.fd, self.victim = fd, victim
        self.fds = (fd,)

    def watched_fds(self) -> Collection[int]:
        return self.fds

    def on_readable(self, fd: int) -> None:
        os.read(fd, 100)
        self.victim.close()


class Victim(Component):
    def __init__(self, fd: int) -> None:
        self.fds: Tuple[int, ...] = (fd,)
        self.reads = 0

    def watched_fds(self) -> Collection[int]:
        return self.fds

    def on_readable(self, fd: int) -> None:
        assert fd in self.fds, "called for an fd it no longer owns"
        self.reads += 1

    def close(self) -> None:
        if self.fds:
            os.close(self.fds[0])
            self.fds = ()


def test_no_callback_runs_for_an_fd_an_earlier_callback_closed(
        tmp_path: Path, world: Tuple[Path, Clock, List[str]]) -> None:
    fifo, clock, sent = world
    d, _ = make(tmp_path, fifo, clock, sent, {})
    d.selector.close()
    d.selector = Ordered()
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    victim = Victim(r2)
    closer = Closer(r1, victim)
    real = d.components
    d.components = [closer, victim]
    try:
        os.write(w1, b"x")
        os.write(w2, b"y")
        d.run_once()  # both ready: the closer runs first and closes the victim's fd
        assert victim.reads == 0 and victim.fds == ()
        d._sync_watched()  # and the loop stops watching it without an error
        assert r2 not in {key.fd for key in d.selector.get_map().values()}
    finally:
        for fd in (r1, w1, w2):
            os.close(fd)
        d.components = real
        d.close()


def test_close_restores_signal_handlers_and_the_wakeup_fd(
        tmp_path: Path, world: Tuple[Path, Clock, List[str]]) -> None:
    fifo, clock, sent = world
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    d, _ = make(tmp_path, fifo, clock, sent, {})
    assert signal.getsignal(signal.SIGINT) is not before[signal.SIGINT]
    d.close()
    assert {s: signal.getsignal(s) for s in before} == before
    assert signal.set_wakeup_fd(-1) == -1  # no wakeup fd left behind


class Unexpected(ArithmeticError):
    """A type no component expects (as a decode that was not total would raise)."""


# Every component of the daemon, in its order (the README's fault table says "for each
# of the nine components"; the exit watch was left out of this test and of that count).
COMPONENTS = ["exit watch", "signals", "watchdog", "trace", "liveness pass",
              "metrics endpoint", "log level", "publisher", "pusher"]


def test_the_guard_tests_cover_every_component_and_the_readme_counts_them(
        tmp_path: Path, world: Tuple[Path, Clock, List[str]]) -> None:
    fifo, clock, sent = world
    d, _ = make(tmp_path, fifo, clock, sent, {})
    try:
        assert [c.name for c in d.components] == COMPONENTS
    finally:
        d.close()
    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    words = {8: "eight", 9: "nine", 10: "ten", 11: "eleven", 12: "twelve"}
    said = re.findall(r"for each of the (\w+) components", readme)
    assert said == [words.get(len(COMPONENTS), str(len(COMPONENTS)))]


@pytest.mark.parametrize("name", COMPONENTS)
def test_a_bug_in_any_component_is_logged_once_and_the_loop_goes_on(
        tmp_path: Path, world: Tuple[Path, Clock, List[str]], name: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """An unexpected exception out of any component's run_due or on_readable: logged
    once with its traceback at ERROR as a bug, that component rests with a growing
    backoff (never a busy loop), and the loop, the watchdog and the rest go on; once
    the bug is gone it runs again."""
    fifo, clock, sent = world
    d, writer = make(tmp_path, fifo, clock, sent, {"WATCHDOG_USEC": "2000000"})  # ping: 1 s
    guard = next(c for c in d.components if c.name.startswith(name))
    inner = guard.inner  # type: ignore[attr-defined]
    calls: List[float] = []

    def boom(*_: Any) -> None:
        calls.append(clock.now)
        raise Unexpected("a hostile value nobody checked")

    real_run, real_read, real_deadline = inner.run_due, inner.on_readable, inner.next_deadline
    inner.run_due = inner.on_readable = boom
    inner.next_deadline = lambda: clock.now  # always due: the guard alone keeps it quiet
    w = os.open(fifo, os.O_WRONLY)
    try:
        caplog.set_level(logging.DEBUG)
        for _ in range(60):  # 30 s of turns
            os.write(w, b"          nr-gnb-1       [000] ..s21  1.0: e: m\n")
            d.run_once()
            clock.now += 0.5
        bugs = [r for r in caplog.records if r.levelno == logging.ERROR
                and r.getMessage().startswith("bug: ")]
        said = [r.getMessage().split(" raised ")[0] for r in bugs]
        assert 1 <= len(bugs) == len(set(said)), said  # once per place (run_due, on_readable)
        assert all(r.exc_info is not None and "Unexpected" in r.getMessage() for r in bugs)
        assert 2 <= len(calls) <= 8, calls  # rests of 1, 2, 4, 8, 16 s: not every turn
        gaps = [b - a for a, b in itertools.pairwise(calls)]
        assert all(b >= a for a, b in itertools.pairwise(gaps)), gaps  # growing rests
        if name != "watchdog":
            assert sent.count("WATCHDOG=1") >= 25  # the pings went on, every second
        if name != "pusher":
            assert writer.writes  # the push went on
        inner.run_due, inner.on_readable, inner.next_deadline = (
            real_run, real_read, real_deadline)
        before = len(calls)
        clock.now += 61.0
        for _ in range(4):
            d.run_once()
            clock.now += 0.5
        assert len(calls) == before and guard.resting_until is None  # type: ignore
    finally:
        os.close(w)
        d.close()


YEARS_2 = 2 * 365 * 86400.0


def test_published_times_follow_a_step_of_the_wall_clock(
        tmp_path: Path, world: Tuple[Path, Clock, List[str]], api: FakeGthulhu,
        keys: Dict[str, Path]) -> None:
    """A boot without a working RTC: the daemon starts with the wall clock two years
    behind, and NTP steps it right.  Every time state.json held (so `status`, `doctor`
    and the metrics' last-success time) stayed in the old clock's terms: "running since
    2024-12-07 13:01:47 (17520h ago)" of a daemon started seconds before, the gNB's
    SINCE and the token's "valid until" as far off.  Published times are now those of
    the monotonic times the loop keeps, in the wall clock's terms of the moment."""
    fifo, clock, sent = world
    wall = Clock(1_800_000_000.0 - YEARS_2)
    cfg = load_config(str(write_config(
        tmp_path / "config.toml", trace={"pipe": str(fifo)},
        api={"url": api.url, "public_key": str(keys["public"]), "flavor": "v0"})))
    env = {"RUNTIME_DIRECTORY": str(tmp_path / "run"), "STATE_DIRECTORY": str(tmp_path / "st")}
    d = Daemon(cfg, str(tmp_path / "config.toml"), env=env, clock=clock, wall_clock=wall)
    d.notifier.send = lambda *fields: sent.extend(fields)  # type: ignore[method-assign]
    d.setup()
    g = GnbProcess(threads=("nr-gnb-rlc",))
    w = os.open(fifo, os.O_WRONLY)
    try:
        os.write(w, "".join(gtp5g_line("nr-gnb", t, g.pid) for t in g.tids).encode())
        clock.now += FIRST_PUSH_DELAY
        wall.now += FIRST_PUSH_DELAY
        d.run_once()  # reads the lines, pushes the gNB's tasks
        assert d.pusher.last is not None and d.pusher.last.ok and d.pusher.last.count == 2
        started = clock.now
        wall.now += YEARS_2  # NTP steps the wall clock
        clock.now += cfg.strategy.liveness_interval
        wall.now += cfg.strategy.liveness_interval
        d.run_once()  # the liveness pass publishes
        state = json.loads((tmp_path / "run" / "state.json").read_text())
        since = wall.now - (clock.now - started)  # when they happened, by today's clock
        times = {"started_at": state["started_at"], "loaded_at": state["config"]["loaded_at"],
                 "process since": state["processes"][0]["since"],
                 "last push": state["last_push"]["at"],
                 "last success": state["last_success_at"]}
        assert times == pytest.approx(dict.fromkeys(times, since), abs=1.0)
        assert state["api"]["token_expires_at"] == pytest.approx(since + 3600, abs=1.0)
        text = format_status(state, wall.now, clock.now)
        assert "running since" in text and "17520h" not in text and "(5s ago)" in text
    finally:
        os.close(w)
        g.stop()
        d.close()


def test_status_says_no_gnb_is_tracked_rather_than_waiting_for_a_first_window(
        tmp_path: Path, world: Tuple[Path, Clock, List[str]]) -> None:
    """CPU wait on a host with no gNB tracked, minutes after the start: `status` said
    "not measured yet (the first window is 60 s)" for as long as no gNB ran (or after
    it stopped), as if a measure were coming."""
    fifo, clock, sent = world
    d, _ = make(tmp_path, fifo, clock, sent, {})
    try:
        for _ in range(30):  # two and a half CPU-wait windows of liveness passes
            clock.now += d.config.strategy.liveness_interval
            d.run_once()
        state = json.loads((tmp_path / "run" / "state.json").read_text())
        assert state["processes"] == [] and state["cpu_wait"]["last_window"] == []
        lines = [ln for ln in format_status(state, clock.now, clock.now).splitlines()
                 if ln.startswith("CPU wait:")]
        assert lines == ["CPU wait:   nothing to measure: no gNB task is tracked"]
    finally:
        d.close()


def test_wall_time_moves_with_a_step_and_not_with_slewing() -> None:
    """Published times change when the wall clock steps, not when NTP slews it (or the two
    clocks are read a few µs apart): state.json is rewritten only when the state changes."""
    mono, wall = Clock(100.0), Clock(1_800_000_000.0)
    times = WallTime(mono, wall)
    assert times.of(90.0) == 1_800_000_000.0 - 10.0
    wall.now += 0.9  # slewed, or read late
    assert times.of(90.0) == 1_800_000_000.0 - 10.0
    wall.now -= 3600.9  # stepped an hour back
    assert times.of(90.0) == 1_800_000_000.0 - 3600.0 - 10.0
