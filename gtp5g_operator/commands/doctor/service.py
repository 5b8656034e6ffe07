"""7. The service: is the unit active, and what its state.json says — when it last
pushed and with what result, its own read-back, and its lost-event and error
counters."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ...config.paths import PRIVATE_TMP, PROTECTED_HOME
from ...core.words import duration, elapsed, finite, one_line, plural, when
from .model import Check, fail, ok, warn
from .targets import Target

UNIT = "gtp5g-operator"
SYSTEMCTL_TIMEOUT = 3.0
UNIT_STATES = ("active", "reloading", "inactive", "failed", "activating", "deactivating",
               "maintenance", "refreshing", "unknown")
START = f"systemctl start {UNIT}; journalctl -u {UNIT} -e says why it stopped"
NOT_SEEN = ("the service tracks a gNB once its tasks show up in the trace (GTP-U traffic): "
            "see the trace events check")


@dataclass(frozen=True)
class UnitState:
    state: str  # one of UNIT_STATES, or "" when systemd cannot be asked
    detail: str = ""


def probe_unit(systemctl: Optional[str]) -> UnitState:
    if systemctl is None:
        return UnitState("", "no systemctl")
    try:
        done = subprocess.run([systemctl, "is-active", UNIT], capture_output=True, text=True,
                              timeout=SYSTEMCTL_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return UnitState("", str(exc))
    words = done.stdout.split()
    if words and words[0] in UNIT_STATES:
        return UnitState(words[0])
    said = (done.stderr.strip() or done.stdout.strip()).splitlines()
    return UnitState("", said[0] if said else f"systemctl exit status {done.returncode}")


def unit_hidden(systemctl: Optional[str]) -> Tuple[Tuple[str, str], ...]:
    """(directory, setting) of the places the installed unit (with its drop-ins) hides
    from the service; none when systemd cannot say or the unit is not installed."""
    if systemctl is None:
        return ()
    try:
        done = subprocess.run([systemctl, "show", UNIT, "-p", "LoadState", "-p", "PrivateTmp",
                               "-p", "ProtectHome"], capture_output=True, text=True,
                              timeout=SYSTEMCTL_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    said = dict(line.partition("=")[::2] for line in done.stdout.splitlines())
    if done.returncode != 0 or said.get("LoadState") != "loaded":
        return ()
    hidden = [(top, "PrivateTmp=yes") for top in PRIVATE_TMP
              if said.get("PrivateTmp") == "yes"]
    home = said.get("ProtectHome", "")
    hidden += [(top, f"ProtectHome={home}") for top in PROTECTED_HOME
               if home in ("yes", "tmpfs")]
    return tuple(hidden)


def unit_check(unit: UnitState) -> Check:
    if not unit.state:
        return warn("unit", f"systemd not available ({unit.detail})",
                    f"not checked; on a systemd host see systemctl status {UNIT}")
    saw = f"{UNIT}.service is {unit.state}"
    if unit.state in ("active", "reloading"):
        return ok("unit", saw)
    if unit.state in ("activating", "deactivating", "refreshing"):
        return warn("unit", saw, f"look again in a moment: systemctl status {UNIT}")
    return fail("unit", saw, START)


# --- state.json ---------------------------------------------------------------------------


def _tracked(state: Mapping[str, Any]) -> List[int]:
    listed = state.get("processes")
    items = listed if isinstance(listed, list) else []
    return [p["tgid"] for p in items if isinstance(p, dict) and isinstance(p.get("tgid"), int)]


def runs_unseen(unit: UnitState, problem: str) -> str:
    """"" unless the unit runs while its state.json is missing: a daemon that cannot
    write its runtime directory (full, read-only) is not a stopped one, and "start it"
    would send the admin the wrong way."""
    if unit.state not in ("active", "reloading") or not problem.startswith("no "):
        return ""
    return (f"{UNIT}.service is {unit.state}, but {problem}: the daemon cannot write its "
            f"runtime directory (journalctl -u {UNIT} -p warning names the file and why)")


def state_check(state: Optional[Mapping[str, Any]], problem: str, alive: bool, now: float,
                targets: Sequence[Target], unit: UnitState = UnitState("")) -> Check:
    unseen = runs_unseen(unit, problem) if state is None else ""
    if unseen:
        return fail("service", unseen, "give the runtime directory room, or make it writable")
    if state is None:
        missing = problem.startswith("no ")  # else the file is there but unreadable
        return fail("service", f"{'not running' if missing else 'cannot tell'}: {problem}",
                    START if missing else "see the file; the daemon rewrites it at each push")
    pid = one_line(state.get("pid"))
    if not alive:
        return fail("service", f"not running: stale state.json of PID {pid}, last updated "
                               f"{when(state.get('updated_at'), now)}", START)
    tracked = _tracked(state)
    saw = (f"PID {pid}, running since {when(state.get('started_at'), now)}; tracking "
           f"{plural(len(tracked), 'process')}"
           + (f" ({', '.join(map(str, tracked))})" if tracked else ""))
    untracked = [t.info.tgid for t in targets if t.boosted and t.info.tgid not in tracked]
    if untracked:
        return warn("service", f"{saw}; not the live target(s) "
                               f"{', '.join(map(str, untracked))}", NOT_SEEN)
    return ok("service", saw)


def push_check(last: Any, now: float, resync: float, now_mono: Optional[float] = None
               ) -> Check:
    if not isinstance(last, dict):
        return warn("last push", "none yet", "it follows the API's credentials: see the api "
                                             "checks")
    age = elapsed(last.get("at"), last.get("at_mono"), now, now_mono)
    if last.get("ok") is not True:
        return fail("last push", f"FAILED {duration(age)} ago: {one_line(last.get('error'))}",
                    f"see the api checks above and journalctl -u {UNIT}")
    saw = f"ok, {one_line(last.get('count'))} entries, {duration(age)} ago"
    if age > 3 * resync:
        return warn("last push", f"{saw}, though it re-sends every {resync:g} s",
                    f"the loop may be stuck: see /health and journalctl -u {UNIT}")
    return ok("last push", saw)


def readback_check(boost: Any, blocked: str = "") -> Check:
    """The service's own read-back (state.json's `boost`): of the tasks it tracks.
    `blocked`: why no Gthulhu scheduler reads what the server lists ("" when one does, as
    the scheduler check below says); an OK beside that check's FAIL contradicted it."""
    b = boost if isinstance(boost, dict) else {}
    saw = f"the service's read-back: {one_line(b.get('diagnosis'))}"
    if b.get("verified") is not True or b.get("missing") or b.get("foreign"):
        return warn("service boost", saw, "see the api and boost checks above and "
                                          f"journalctl -u {UNIT}")
    if blocked:
        return warn("service boost", saw, f"{blocked}: see the scheduler check")
    return ok("service boost", saw)


def counters_check(trace: Any) -> Check:
    t = trace if isinstance(trace, dict) else {}
    lost, dropped, reopens = (int(finite(t.get(k)) or 0) for k in ("lost_events",
                                                                  "dropped_lines", "reopens"))
    is_open = t.get("open") is True
    saw = (f"trace {one_line(t.get('path'))} ({one_line(t.get('format'))}, "
           f"{'open' if is_open else 'NOT OPEN'}): {int(finite(t.get('lines')) or 0)} lines, "
           f"{lost} events lost, {dropped} over-long lines dropped, "
           f"{plural(reopens, 'reopen')}")
    if not is_open:
        return fail("service counters", saw, f"journalctl -u {UNIT} says why the trace source "
                                             "cannot be opened")
    if lost or dropped:
        return warn("service counters", saw, "events were lost: raise buffer_size_kb or the "
                                             "unit's CPUQuota=")
    if reopens:
        return warn("service counters", saw, f"the trace source failed or ended: journalctl "
                                             f"-u {UNIT}")
    return ok("service counters", saw)


def in_force_check(config: Any, files: Sequence[str], now: float) -> Check:
    """Does the service run the files this report checks?  An edit not yet reloaded (or
    whose reload was rejected) leaves it on the settings of before, which no other check
    here is about: the API, match and strategy checks are the files'."""
    config = config if isinstance(config, dict) else {}
    loaded_at, ran = finite(config.get("loaded_at")), config.get("files")
    ran = [os.path.abspath(f) for f in ran if isinstance(f, str)] if isinstance(ran, list) \
        else []
    files = [os.path.abspath(f) for f in files]  # doctor --config may be relative
    changed = [f for f in files if (ran and f not in ran) or loaded_at is None
               or _modified(f) > loaded_at]
    changed += [f"{f} (removed)" for f in ran if f not in files]
    saw = f"the service loaded its configuration {when(loaded_at, now)}"
    if changed:
        return warn("service config", f"{saw}; changed since: {', '.join(map(one_line, changed))}"
                    ": it runs the settings of before, not those checked here",
                    f"gtp5g-operator check-config, then systemctl reload {UNIT}")
    return ok("service config", f"{saw}; unchanged since")


def _modified(path: str) -> float:
    # The inode's change time, not st_mtime: a copy that keeps its source's modification
    # time (rsync -a, cp -p, tar x, install -p) put an edit of an hour ago behind the
    # load and doctor said "unchanged since"; setting that time is itself a change.
    try:
        return os.stat(path).st_ctime
    except OSError:
        return float("inf")  # gone since: not what it loaded


def service_checks(alive: bool, resync: float, targets: Sequence[Target], now: float,
                   state: Optional[Dict[str, Any]], problem: str,
                   systemctl: Optional[str], files: Sequence[str] = (),
                   units_directory: bool = True, blocked: str = "") -> List[Check]:
    """`files`: the configuration files this report checks (main file, then drop-ins);
    `units_directory`: state.json was looked for where the unit keeps it (no
    --runtime-dir), so the unit's state speaks for it; `blocked`: readback_check's."""
    unit = probe_unit(systemctl)
    checks = [unit_check(unit), state_check(state, problem, alive, now, targets,
                                            unit if units_directory else UnitState(""))]
    if state is not None and alive:
        checks += [in_force_check(state.get("config"), files, now)] if files else []
        checks += [push_check(state.get("last_push"), now, resync, time.monotonic()),
                   readback_check(state.get("boost"), blocked), counters_check(state.get("trace"))]
    return checks
