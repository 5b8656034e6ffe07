"""Pure construction of the Gthulhu strategy list from the tracked set.

Gthulhu looks priority up by TGID and the time slice by thread ID, so
`targets = "both"` (the default) posts the TGID of each process and the TIDs
of its tasks seen active; `"tgid"` and `"tid"` post one kind only.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Sequence, Tuple

from .config import StrategyConfig

Strategy = Dict[str, Any]


def target_ids(snapshot: Iterable[Tuple[int, Sequence[int]]], targets: str) -> List[int]:
    """Sorted, distinct IDs to post for [(tgid, tids)]."""
    ids = set()
    for tgid, tids in snapshot:
        if targets in ("tgid", "both"):
            ids.add(tgid)
        if targets in ("tid", "both"):
            ids.update(tids)
    return sorted(ids)


def build_strategies(ids: Iterable[int], cfg: StrategyConfig) -> List[Strategy]:
    return [
        {"pid": pid, "priority": cfg.priority, "execution_time": cfg.execution_time_ns}
        for pid in ids
    ]
