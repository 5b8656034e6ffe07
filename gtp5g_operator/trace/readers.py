"""The trace readers this service has: one ordered list, and the rule that picks one.

`trace.format = "auto"` walks `READERS` in order and takes the first that can
read the configured source (today raw, the binary per-CPU ring buffer, then
text, `trace_pipe` itself); a reader that turns out not to work at open time
hands over to the next one in the list.  The daemon (`feed`) and `doctor` both
choose through here, so the rule exists once.  A new reader is a module with
its `TraceSource` subclass and one line in `READERS`.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Type

from ..config.paths import resolve_pipe
from ..config.schema import AUTO, TraceConfig
from .raw_reader import RawTraceSource
from .source import TraceSource
from .text_reader import TextTraceSource

Reader = Type[TraceSource]
READERS: Tuple[Reader, ...] = (RawTraceSource, TextTraceSource)


def reader_named(kind: str, readers: Sequence[Reader] = READERS) -> Optional[Reader]:
    return next((r for r in readers if r.kind == kind), None)


def choose(config: TraceConfig, readers: Sequence[Reader] = READERS,
           proc: str = "/proc") -> Reader:
    """The reader for `trace.format` and what `trace.pipe` points at now."""
    named = reader_named(config.format, readers) if config.format != AUTO else None
    return named or first_able(resolve_pipe(config.pipe), readers, proc)


def first_able(pipe: str, readers: Sequence[Reader], proc: str = "/proc") -> Reader:
    """The first of `readers` that can read `pipe` (resolved), else the last."""
    return next((r for r in readers if not r.problem(pipe, proc)), readers[-1])
