"""Trace lines in ftrace's exact layout, for tests, the demo and benchmarks."""

from __future__ import annotations

from typing import Optional


def trace_line(comm: str, tid: int, msg: str, tgid: Optional[int] = None,
               record_tgid: bool = False, cpu: int = 0, ts: float = 1000.0,
               event: str = "bpf_trace_printk", flags: str = "..s21") -> str:
    """One line as trace_pipe prints it (comm right-aligned in 16, TID in 7)."""
    head = f"{comm:>16}-{tid:<7} "
    if record_tgid:
        head += f"({tgid:>7}) " if tgid is not None else "(-------) "
    return f"{head}[{cpu:03d}] {flags} {ts:12.6f}: {event}: {msg}\n"


def gtp5g_line(comm: str, tid: int, tgid: int, **kw: object) -> str:
    """A gtp5g-tracer line of the fentry/gtp5g_encap_recv probe."""
    msg = f"fentry/gtp5g_encap_recv: PID={tid}, TGID={tgid}, CPU=0"
    return trace_line(comm, tid, msg, tgid=tgid, **kw)  # type: ignore[arg-type]
