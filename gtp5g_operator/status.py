"""`gtp5g-operator status`: the running daemon's state.json as a table."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Optional, Tuple

from .state import STATE_FILE, read_state

NOT_RUNNING = 3  # as `systemctl status` and LSB: program is not running


def _when(ts: Optional[float], now: float) -> str:
    if ts is None:
        return "-"
    age = max(0, int(now - ts))
    ago = f"{age}s" if age < 120 else f"{age // 60}m" if age < 7200 else f"{age // 3600}h"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) + f" ({ago} ago)"


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"gtp5g" in f.read()
    except OSError:
        return False


def format_status(state: Dict[str, Any], now: float) -> str:
    cfg, api, trace = state.get("config", {}), state.get("api", {}), state.get("trace", {})
    push = state.get("last_push")
    if push is None:
        last = "none yet"
    elif push.get("ok"):
        last = (f"ok, {push.get('count')} strategies, {_when(push.get('at'), now)}, "
                f"{push.get('duration_s', 0) * 1e3:.1f} ms")
    else:
        last = f"FAILED ({push.get('error')}), {_when(push.get('at'), now)}"
    token = api.get("token_expires_at")
    lines = [
        f"gtp5g-operator {state.get('version')}, PID {state.get('pid')}, "
        f"running since {_when(state.get('started_at'), now)}",
        f"config:     {cfg.get('path')}, loaded {_when(cfg.get('loaded_at'), now)}; "
        f"mode {cfg.get('mode')}, targets {cfg.get('targets')}",
        f"trace:      {trace.get('path')} ({'open' if trace.get('open') else 'NOT OPEN'}), "
        f"{trace.get('lines', 0):,} lines, {trace.get('dropped_lines', 0)} dropped",
        f"API:        {api.get('url')}, token "
        + (f"valid until {_when(token, now).split(' (')[0]}" if token else "none"),
        f"last push:  {last}",
        "",
    ]
    procs = state.get("processes") or []
    if not procs:
        lines.append("no nr-gnb process tracked")
        return "\n".join(lines)
    rows: List[Tuple[str, ...]] = [("TGID", "NAME", "EXE", "UID", "ACTIVE TIDS", "SINCE")]
    for p in procs:
        rows.append((str(p.get("tgid")), str(p.get("comm")), p.get("exe") or "?",
                     str(p.get("uid")), " ".join(map(str, p.get("tids", []))) or "-",
                     _when(p.get("since"), now)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    return "\n".join(lines)


def show_status(directory: str, as_json: bool) -> Tuple[int, str]:
    """(exit status, text to print)."""
    path = os.path.join(directory, STATE_FILE)
    try:
        state = read_state(directory)
    except FileNotFoundError:
        return NOT_RUNNING, f"gtp5g-operator is not running (no {path})"
    except (OSError, ValueError) as exc:
        return 1, f"cannot read {path}: {exc}"
    if not _alive(state.get("pid")):
        return NOT_RUNNING, (f"gtp5g-operator is not running (stale {path} of PID "
                             f"{state.get('pid')}, last updated "
                             f"{_when(state.get('updated_at'), time.time())})")
    if as_json:
        return 0, json.dumps(state, indent=2, sort_keys=True)
    return 0, format_status(state, time.time())
