"""Merge mode: this host's strategies into a list other writers share. Pure.

The API has one list, replaced by every POST, and no versioning: merging is
GET, edit, POST.  Another writer's POST between our GET and POST is lost (or
ours is, if theirs comes later); the periodic resync re-applies our part
within `resync_interval`, which bounds how long our entries can be missing,
and a writer that does the same bounds how long its entries can.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Set

Strategy = Dict[str, Any]


def merge_strategies(current: Iterable[Strategy], ours: List[Strategy],
                     owned: Set[int]) -> List[Strategy]:
    """Everyone else's entries from `current`, then `ours`.

    * Entries with PIDs this host owns (pushed before) or wants now are dropped:
      ours replace them.
    * Selector-based strategies come back from the API expanded, one per
      matching PID with the selectors attached: they are kept once each, as
      the selector strategy without the PID, or they would multiply.
    * Entries without a usable PID and without selectors are dropped (the
      server drops them too).
    """
    wanted = {s["pid"] for s in ours}
    kept: List[Strategy] = []
    selector_keys: Set[str] = set()
    for entry in current:
        if entry.get("selectors"):
            rule = {k: v for k, v in entry.items() if k != "pid"}
            key = json.dumps(rule, sort_keys=True)
            if key not in selector_keys:
                selector_keys.add(key)
                kept.append(rule)
            continue
        pid = entry.get("pid")
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            continue
        if pid in owned or pid in wanted:
            continue
        kept.append(entry)
    return kept + ours
