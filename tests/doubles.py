"""Test doubles used by more than one test module (where nothing real can run:
the loop tests turn an injected clock, which a real HTTP exchange would not follow)."""

from __future__ import annotations

from typing import List, Sequence

from gtp5g_operator.config import StrategyConfig
from gtp5g_operator.core.tracker import ProcessView
from gtp5g_operator.gthulhu.http import JsonHttp
from gtp5g_operator.gthulhu.writer import ApiWriter


class Clock:
    """An injected monotonic clock that moves only when a test moves it."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingWriter(ApiWriter):
    """Writes nothing anywhere; records the task IDs of every write, sorted."""

    name = "recording"

    def __init__(self) -> None:
        super().__init__(JsonHttp("http://127.0.0.1:9", 1.0), StrategyConfig())
        self.writes: List[List[int]] = []

    def authenticate(self, deadline: float) -> bool:
        return False

    def drop_credentials(self) -> None:
        pass

    def write(self, views: Sequence[ProcessView], deadline: float) -> int:
        self.writes.append(sorted(t for v in views for t in v.tids))
        return len(self.writes[-1])

    def clear(self, deadline: float) -> None:
        pass
