"""Run one call on one example under a time and a memory bound, and judge the outcome.

A parser that meets outside data must be total: for any input it returns a
value of its type or raises its own error, within a time and a memory bound.
`check_total` is that property for one example, so that a property for a new
parser is a strategy and one call:

    @given(st.binary())
    def test_scan(data: bytes) -> None:
        check_total(lambda: scan(data, 0, len(data)), returns=tuple)

The bounds replace Hypothesis's per-example `deadline`, which would fail
examples at random on a loaded CI host; these are generous instead, and
enforced rather than only measured:

* time: a SIGALRM timer interrupts a call still running after `seconds` (the
  interpreter and the `re` engine both check for signals while they run, so an
  endless loop or a catastrophic regex ends as a failure, not a hung test run);
* memory: the tracemalloc peak of the call is compared with `peak_bytes`, and
  the process's address space is capped (RLIMIT_AS) at what it uses now plus
  `address_space` while the call runs, so that a runaway allocation in C
  (e.g. a set built from a range of 10**10 CPUs) fails with MemoryError at
  once instead of taking the shared machine's memory first.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import threading
import time
import tracemalloc
from dataclasses import dataclass
from types import FrameType
from typing import Any, Callable, Iterator, Optional, Tuple, Type, TypeVar, Union

T = TypeVar("T")
Types = Union[type, Tuple[type, ...]]
Errors = Tuple[Type[BaseException], ...]


@dataclass(frozen=True)
class Limits:
    seconds: float = 10.0  # wall time of one call: typical calls take a millisecond
    peak_bytes: int = 64 << 20  # tracemalloc peak of one call (inputs are at most 1 MiB)
    address_space: int = 1 << 30  # headroom over the address space in use before the call


DEFAULT = Limits()


class _TimeUp(BaseException):
    """Raised by the alarm inside the call: a BaseException so that no
    `except Exception` in the code under test can swallow it."""


def _address_space_in_use() -> Optional[int]:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only: the bound is then measured, not enforced
        return

    def ring(signum: int, frame: Optional[FrameType]) -> None:
        raise _TimeUp()

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _address_space_cap(headroom: int) -> Iterator[None]:
    in_use = _address_space_in_use()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = None if in_use is None else in_use + headroom
    if cap is None or (soft != resource.RLIM_INFINITY and soft <= cap) or \
            (hard != resource.RLIM_INFINITY and hard < cap):
        yield  # cannot tell the usage, or already capped lower: leave it
        return
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@dataclass(frozen=True)
class Outcome:
    value: Any  # what the call returned (None when it raised)
    error: Optional[BaseException]  # what it raised, or None
    seconds: float
    peak_bytes: int


def run_bounded(call: Callable[[], Any], limits: Limits = DEFAULT) -> Outcome:
    """Run `call` once under `limits`; raise AssertionError when a bound is exceeded."""
    started_tracing = not tracemalloc.is_tracing()
    if started_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    value: Any = None
    error: Optional[BaseException] = None
    start = time.monotonic()
    try:
        with _address_space_cap(limits.address_space), _alarm(limits.seconds):
            try:
                value = call()
            except _TimeUp:
                raise
            except Exception as exc:  # judged by the caller against the allowed errors
                error = exc
    except _TimeUp:
        raise AssertionError(f"still running after {limits.seconds:g} s: a hang "
                             "(or a bound to raise)") from None
    finally:
        elapsed = time.monotonic() - start
        peak = tracemalloc.get_traced_memory()[1] - base
        if started_tracing:
            tracemalloc.stop()
    if elapsed > limits.seconds:  # not interrupted: off the main thread
        raise AssertionError(f"took {elapsed:.1f} s, more than {limits.seconds:g} s")
    if peak > limits.peak_bytes:
        raise AssertionError(f"allocated {peak / 2**20:.1f} MiB at its peak, more than "
                             f"{limits.peak_bytes / 2**20:.0f} MiB")
    return Outcome(value, error, elapsed, peak)


def check_total(call: Callable[[], T], returns: Types, raises: Errors = (),
                limits: Limits = DEFAULT) -> Union[T, BaseException]:
    """The property of a total function, for one example.

    `call` must return an instance of `returns` or raise one of `raises`,
    within `limits`.  Returns the value or the (allowed) exception, for the
    caller's own checks of it.
    """
    outcome = run_bounded(call, limits)
    error = outcome.error
    if error is not None:
        if raises and isinstance(error, raises):
            return error
        allowed = ", ".join(e.__name__ for e in raises) or "nothing"
        raise AssertionError(f"raised {type(error).__name__} (allowed: {allowed}): "
                             f"{str(error)[:300]}") from error
    value: T = outcome.value
    if not isinstance(value, returns):
        raise AssertionError(f"returned {type(value).__name__}, not {returns}")
    return value


def one_line(message: str) -> bool:
    """A message fit for one log line: no line breaks, not empty."""
    return bool(message) and len(message.splitlines()) == 1 and "\n" not in message \
        and "\r" not in message
