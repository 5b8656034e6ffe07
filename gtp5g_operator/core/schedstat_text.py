"""CPU wait in words and in JSON: what `status` prints, the short STATUS= form,
and a window report as state.json holds it (checked field by field when read
back: anything may be in the file `status` is pointed at)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Sequence, Tuple

from .schedstat import Counters, TaskWait, WindowReport, wait_per_slice_ns, wait_share
from .words import finite, printable, shown


def percent(share: float) -> str:
    p = share * 100
    if p == 0 or p >= 0.1:
        return f"{p:.1f} %" if p else "0 %"
    return f"{p:.1g} %"  # 0.04 %: a tiny wait is still not none


def duration(ns: float) -> str:
    return f"{ns / 1e6:.1f} ms" if ns >= 100_000 else f"{ns / 1e3:.0f} µs"


def _worst_words(worst: TaskWait) -> str:
    share = wait_share(worst.counters)
    text = f"worst task {printable(worst.name)} {percent(share or 0.0)}"
    per_slice = wait_per_slice_ns(worst.counters)
    return text if per_slice is None else text + f", {duration(per_slice)} per scheduling"


def describe(report: WindowReport) -> str:
    """e.g. nr-gnb: waited 0.8 % of its runnable time for a CPU over the last 60 s
    (worst task nr-gnb-rlc 2.1 %, 0.4 ms per scheduling)"""
    # doctor's --window may be under a second: "0.2 s", not "0 s"
    seconds = f"{report.seconds:.0f}" if report.seconds >= 1 else f"{report.seconds:.1g}"
    name, over = printable(report.process), f"over the last {seconds} s"
    share = wait_share(report.counters)
    if share is None:
        return f"{name}: not runnable {over}"
    text = f"{name}: waited {percent(share)} of its runnable time for a CPU {over}"
    return text if report.worst is None else text + f" ({_worst_words(report.worst)})"


def status_note(reports: Iterable[WindowReport]) -> str:
    """The STATUS= form, e.g. "CPU wait nr-gnb 0.8 % (worst 2.1 %)"; "" when
    nothing was measured yet."""
    parts = []
    for r in reports:
        share = wait_share(r.counters)
        if share is None:
            continue
        part = f"{printable(r.process)} {percent(share)}"
        worst = None if r.worst is None else wait_share(r.worst.counters)
        parts.append(part if worst is None else part + f" (worst {percent(worst)})")
    return "CPU wait " + ", ".join(parts) if parts else ""


# --- JSON ------------------------------------------------------------------------------


def _counters_json(c: Counters) -> Dict[str, Any]:
    share, per_slice = wait_share(c), wait_per_slice_ns(c)
    return {"run_ns": c.run_ns, "wait_ns": c.wait_ns, "slices": c.slices,
            "wait_share": None if share is None else round(share, 6),
            "wait_per_slice_ns": None if per_slice is None else round(per_slice)}


def report_json(r: WindowReport) -> Dict[str, Any]:
    """The report with its derived numbers (share, wait per scheduling) spelled out."""
    worst = None if r.worst is None else {
        "tid": r.worst.tid, "name": r.worst.name, **_counters_json(r.worst.counters)}
    return {"process": r.process, "seconds": round(r.seconds, 3), "tasks": r.tasks,
            **_counters_json(r.counters), "worst": worst}


def report_from_json(obj: Any, where: str = "cpu_wait") -> WindowReport:
    """A report from `report_json`'s shape; ValueError naming the first bad field."""
    process, seconds, *counters, tasks = _fields(obj, where, ("process", "seconds", *_COUNTERS,
                                                              "tasks"))
    worst, raw = None, obj.get("worst")
    if raw is not None:
        tid, name, *worst_counters = _fields(raw, f"{where}.worst", ("tid", "name", *_COUNTERS))
        worst = TaskWait(tid, name, Counters(*worst_counters))
    return WindowReport(process, float(seconds), Counters(*counters), tasks, worst)


_COUNTERS = ("run_ns", "wait_ns", "slices")
_COUNT = ("an integer from 0 to 2^64-1",
          lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 64)
_STRING = ("a string", lambda v: isinstance(v, str))
# What each field of a report (and of its worst task) must be, and how that is told.
_FIELDS: Dict[str, Tuple[str, Callable[[Any], bool]]] = {
    "process": _STRING, "name": _STRING, **dict.fromkeys(("tid", "tasks", *_COUNTERS), _COUNT),
    "seconds": ("a non-negative number of seconds", lambda v: finite(v) is not None and v >= 0),
}


def _fields(obj: Any, where: str, keys: Sequence[str]) -> List[Any]:
    """The values of `keys` in the object `obj`, each checked against _FIELDS."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected an object, got {type(obj).__name__}")
    for key in keys:
        what, ok = _FIELDS[key]
        if not ok(obj.get(key)):
            raise ValueError(f"{where}.{key}: expected {what}, got {shown(obj.get(key))}")
    return [obj.get(key) for key in keys]
