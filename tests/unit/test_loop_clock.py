"""The loop's deadlines with an injected clock: no sleeping, no waiting."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List

from gtp5g_operator.config import Config, TraceConfig
from gtp5g_operator.daemon import TRACE_REST, Daemon


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Path, clock: Clock, env: Dict[str, str]) -> Daemon:
    fifo = tmp_path / "trace_pipe"
    os.mkfifo(fifo)
    cfg = Config(trace=TraceConfig(pipe=str(fifo)))
    d = Daemon(cfg, "test.toml", env=env, clock=clock, wall_clock=clock)
    d.setup()
    return d


def test_deadlines_drive_the_turns(tmp_path: Path) -> None:
    clock = Clock()
    sent: List[str] = []
    d = make(tmp_path, clock, {"WATCHDOG_USEC": "4000000"})  # ping every 2 s
    d.notifier.send = lambda *fields: sent.extend(fields)  # type: ignore[method-assign]
    try:
        d.run_once()  # the first ping is due at once
        assert "WATCHDOG=1" in sent and d._next_deadline() == 102.0
        sent.clear()
        clock.now = 101.9
        d.run_once()  # select(0.1) on an idle FIFO, nothing due yet
        assert sent == []
        clock.now = 102.0
        d.run_once()
        assert sent[0] == "WATCHDOG=1" and d._next_deadline() == 104.0
        clock.now = 105.0  # the liveness pass (every 5 s) is due with the next ping
        d.run_once()
        assert d._next_deadline() == 107.0  # next ping at 107, liveness at 110
    finally:
        d.close()


def test_a_small_turn_rests_the_trace_fd(tmp_path: Path) -> None:
    clock = Clock()
    d = make(tmp_path, clock, {})
    try:
        w = os.open(tmp_path / "trace_pipe", os.O_WRONLY)
        os.write(w, b"          nr-gnb-1       [000] ..s21  1.0: e: m\n")
        d.run_once()  # reads the line; a small turn
        assert d._registered_fd is None and d._next_deadline() == 100.0 + TRACE_REST
        clock.now += TRACE_REST
        d.run_once()
        assert d._registered_fd == d.source.fd  # watched again
        assert d.source.lines == 1
        os.close(w)
    finally:
        d.close()

