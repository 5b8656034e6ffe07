"""`gtp5g-operator status`: the running daemon's state.json as a table.

state.json is the daemon's, but anything may be in the file a user points
us at: every field is checked for its type before it is shown, and a file
of the wrong shape gives one error line, never a traceback.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..core.sched_ext import SchedulerState
from ..core.schedstat_text import describe, report_from_json
from ..core.words import elapsed, obj, one_line, when
from ..core.words import finite as _num
from ..service.runtime_files import daemon_alive, read_state
from ..service.runtime_names import STATE_FILE
from .doctor.service import UnitState, runs_unseen

NOT_RUNNING = 3  # as `systemctl status` and LSB: program is not running


def _last_push(push: Any, now: float, now_mono: Optional[float]) -> str:
    push = obj(push)
    if not push:
        return "none yet"
    # "now" as far as the push's age goes: its age on the monotonic clock (words.elapsed)
    now = (_num(push.get("at")) or 0.0) + elapsed(push.get("at"), push.get("at_mono"), now,
                                                  now_mono)
    if push.get("ok") is True:
        ms = (_num(push.get("duration_s")) or 0.0) * 1e3
        return (f"ok, {one_line(push.get('count'))} entries, {when(push.get('at'), now)}, "
                f"{ms:.1f} ms")
    return f"FAILED ({one_line(push.get('error'))}), {when(push.get('at'), now)}"


def _header(state: Dict[str, Any], now: float, now_mono: Optional[float]) -> List[str]:
    cfg, api, trace = obj(state.get("config")), obj(state.get("api")), obj(state.get("trace"))
    sched = obj(state.get("scheduler"))
    token = _num(api.get("token_expires_at"))
    lines = _num(trace.get("lines")) or 0
    return [
        f"gtp5g-operator {one_line(state.get('version'))}, PID {one_line(state.get('pid'))}, "
        f"running since {when(state.get('started_at'), now)}",
        f"config:     {_config_files(cfg)}, loaded {when(cfg.get('loaded_at'), now)}; "
        f"mode {one_line(cfg.get('mode'))}, targets {one_line(cfg.get('targets'))}"
        + _rejected(cfg, now),
        f"trace:      {one_line(trace.get('path'))} ({one_line(trace.get('format'))}, "
        f"{_openness(trace)}), {lines:,.0f} lines, "
        f"{one_line(trace.get('dropped_lines', 0))} dropped, "
        f"{one_line(trace.get('lost_events', 0))} lost",
        f"API:        {one_line(api.get('url'))} ({one_line(api.get('flavor'))}), token "
        + (f"valid until {when(token, now).split(' (')[0]}" if token else "none")
        + (f", policy {one_line(api.get('policy_id'))}" if api.get("policy_id") else ""),
        f"scheduler:  {_scheduler(sched)}",
        f"boosted:    {_boost(obj(state.get('boost')))}",
        *_cpu_wait(obj(state.get("cpu_wait")), bool(state.get("processes"))),
        f"last push:  {_last_push(state.get('last_push'), now, now_mono)}",
        "",
    ]


def _config_files(cfg: Dict[str, Any]) -> str:
    """The main file and the drop-ins read after it: the settings are in the drop-ins
    (the packaged main file is comments only), so the main file alone says nothing."""
    main = one_line(cfg.get("path"))
    files = cfg.get("files")
    drop_ins = [one_line(f) for f in files[1:]] if isinstance(files, list) else []
    return main + (" + " + ", ".join(drop_ins) if drop_ins else "")


def _rejected(cfg: Dict[str, Any], now: float) -> str:
    at = _num(cfg.get("reload_rejected_at"))
    return "" if at is None else (f"; last reload REJECTED {when(at, now)}, running the "
                                  "settings loaded before (journalctl -p err -u gtp5g-operator)")


def _openness(trace: Dict[str, Any]) -> str:
    problem = one_line(trace.get("problem")) if trace.get("problem") else ""
    if trace.get("open") is True:  # a problem then: the kernel records nothing into it
        return f"open, NO TRACE LINES: {problem}" if problem else "open"
    return f"NOT OPEN: {problem}" if problem else "NOT OPEN"


def _boost(boost: Dict[str, Any]) -> str:
    """What the scheduler will boost, as read back after the last write."""
    if not boost:
        return "?"
    diagnosis = one_line(boost.get("diagnosis"), 300)
    if boost.get("verified") is not True:
        return diagnosis
    counts = ", ".join(f"{len(v) if isinstance(v, list) else '?'} {k}" for k, v in (
        ("covered", boost.get("covered")), ("missing", boost.get("missing")),
        ("foreign", boost.get("foreign"))))
    return f"{counts} (read back from {one_line(boost.get('source'))}): {diagnosis}"


def _cpu_wait(waits: Dict[str, Any], tracked: bool) -> List[str]:
    """How long the tracked tasks waited for a CPU over the last window, in words."""
    if waits.get("unavailable"):
        return [f"CPU wait:   not measured: {one_line(waits.get('unavailable'), 300)}"]
    reports = waits.get("last_window")
    lines = []
    for i, raw in enumerate(reports if isinstance(reports, list) else []):
        try:
            text = describe(report_from_json(raw, f"cpu_wait.last_window[{i}]"))
        except ValueError as exc:
            text = f"? ({exc})"
        lines.append(f"CPU wait:   {one_line(text, 300)}")
    if lines:
        return lines
    # An empty window with nothing tracked is no "first window": a host whose gNB stopped
    # (or never ran) said "not measured yet (the first window is 60 s)" for hours.
    return ["CPU wait:   not measured yet (a window is 60 s)" if tracked else
            "CPU wait:   nothing to measure: no gNB task is tracked"]


def _scheduler(sched: Dict[str, Any]) -> str:
    if not sched:
        return "?"
    if sched.get("enabled") is True:
        ops = sched.get("ops")
        text = f"sched_ext scheduler {one_line(ops)} running"
        # said as no scheduler is: the line read as all well while STATUS= and the boost
        # line said that nothing reads the strategies
        return text if SchedulerState(True, "enabled", str(ops)).looks_like_gthulhu else (
            text + ", NOT Gthulhu's (strategies have no effect)")
    if sched.get("sched_ext") is False:
        return "NONE: this kernel has no sched_ext (strategies have no effect)"
    return "NONE: no sched_ext scheduler is running (strategies have no effect)"


SHOWN_TIDS = 8  # per process; `status --json` lists them all


def _tids(tids: List[Any]) -> str:
    """A process's TIDs for the table: a gNB of 1,000 threads made a 7,000-character
    row, and every shorter row and the header were padded to it (8 such gNBs: 55 KB)."""
    shown = " ".join(one_line(t) for t in tids[:SHOWN_TIDS]) or "-"
    return shown if len(tids) <= SHOWN_TIDS else f"{shown} ... ({len(tids):,} in all)"


def format_status(state: Dict[str, Any], now: float, now_mono: Optional[float] = None) -> str:
    lines = _header(state, now, now_mono)
    listed = state.get("processes")
    procs = [p for p in listed if isinstance(p, dict)] if isinstance(listed, list) else []
    if not procs:
        lines.append("no nr-gnb process tracked")
        return "\n".join(lines)
    # EXE last, as ps puts COMMAND: columns are padded by len(), and a path (anyone's, of
    # wide or blank-looking characters) before UID moved the row's uid out from under
    # its header and could show a '0' of its own there.
    rows: List[Tuple[str, ...]] = [("TGID", "NAME", "UID", "ACTIVE TIDS", "SINCE", "EXE")]
    for p in procs:
        tids = p.get("tids")
        tids = tids if isinstance(tids, list) else []
        rows.append((one_line(p.get("tgid")), one_line(p.get("comm")), one_line(p.get("uid")),
                     _tids(tids), when(p.get("since"), now), one_line(p.get("exe") or "?")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        # the last column is not padded: widths has one entry less than a row
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False))
                     + "  " + r[-1])
    return "\n".join(lines)


def show_status(directory: str, as_json: bool,
                unit: Optional[Callable[[], UnitState]] = None) -> Tuple[int, str]:
    """(exit status, text to print).  `unit`: systemd's word on the unit whose runtime
    directory `directory` is, asked only when state.json is missing there."""
    path = f"{directory}/{STATE_FILE}"
    state, problem = read_state(directory)
    missing = state is None and problem.startswith("no ")
    unseen = runs_unseen(unit(), problem) if missing and unit is not None else ""
    if unseen:
        return 1, unseen  # running, and its state unreadable: not "not running" (3)
    if missing:
        return NOT_RUNNING, f"gtp5g-operator is not running ({problem})"
    if state is None:
        return 1, problem
    if not daemon_alive(state.get("pid"), directory=directory):
        return NOT_RUNNING, (f"gtp5g-operator is not running (stale {path} of PID "
                             f"{one_line(state.get('pid'))}, last updated "
                             f"{when(state.get('updated_at'), time.time())})")
    if as_json:
        return 0, json.dumps(state, indent=2, sort_keys=True)
    return 0, format_status(state, time.time(), time.monotonic())
