"""Exponential backoff with full jitter, capped: every retried source uses it
so that nothing ever retries in a busy loop."""

from __future__ import annotations

import random
from typing import Callable


class Backoff:
    def __init__(self, initial: float, cap: float,
                 rand: Callable[[], float] = random.random) -> None:
        self.initial = initial
        self.cap = cap
        self._rand = rand
        self.failures = 0

    def next_delay(self) -> float:
        """Delay before the next try after one more failure."""
        self.failures += 1
        ceiling = min(self.cap, self.initial * float(2 ** min(self.failures - 1, 30)))
        # Half fixed, half random: spreads retries of many hosts yet never
        # retries sooner than half the nominal delay.
        return ceiling * (0.5 + 0.5 * self._rand())

    def reset(self) -> None:
        self.failures = 0
