"""The /health answer: a pure function of what the loop last published.

`ok` (200) when the loop has turned when it said it would and the last
successful push is recent (within 3 x resync_interval; a daemon younger than
that has until then); otherwise 503 with `status` saying which: `stalled`
(the loop missed its own next deadline) or `api-unreachable`.  A missing
sched_ext scheduler is reported in the body but is not a 503: the operator
itself is healthy, and hosts start the scheduler and the operator in either
order.
"""

from __future__ import annotations

from ..core.words import finite

TYPE_CHECKING = False  # the endpoint process does without `typing` (2 MB of its memory)
if TYPE_CHECKING:
    from typing import Any, Dict, Mapping, Optional, Tuple

STALL_GRACE = 2.0  # seconds past its announced next turn before a loop counts as stalled


def _age(now: float, then: Any) -> Optional[float]:
    t = finite(then)
    return round(now - t, 3) if t is not None else None


def health_answer(doc: Optional[Mapping[str, Any]], heartbeat: Optional[Tuple[float, float]],
                  now: float) -> Tuple[int, Dict[str, Any]]:
    """(HTTP status, JSON body) at monotonic time `now`."""
    if doc is None:
        return 503, {"status": "starting", "detail": "the daemon has not published yet"}
    body: Dict[str, Any] = {k: doc.get(k) for k in (
        "tracked_processes", "tracked_tasks", "api", "trace", "scheduler", "boost")}
    last = doc.get("last_push") if isinstance(doc.get("last_push"), dict) else None
    body["last_push"] = None if last is None else {
        "ok": last.get("ok"), "age_s": _age(now, last.get("at_mono")),
        "error_kind": last.get("error_kind") or None}
    body["loop_turned_s_ago"] = _age(now, heartbeat[0]) if heartbeat else None
    if heartbeat is None or now > heartbeat[1] + STALL_GRACE:
        body["status"] = "stalled"
        return 503, body
    if not _push_recent(doc, now):
        body["status"] = "api-unreachable"
        return 503, body
    body["status"] = "ok"
    return 200, body


def _push_recent(doc: Mapping[str, Any], now: float) -> bool:
    window = 3 * (finite(doc.get("resync_interval")) or 10.0)
    success = finite(doc.get("last_success_mono"))
    if success is not None:
        return now - success <= window
    started = finite(doc.get("started_mono"))
    return started is not None and now - started <= window
