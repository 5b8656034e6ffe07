"""Merge mode of the v0 API: this host's strategies in a list other writers share.

The API has one list, replaced by every POST, and no versioning: merging is
GET, edit, POST.  Another writer's POST between our GET and POST is lost (or
ours is, if theirs comes later); the periodic resync re-applies our part
within `resync_interval`, which bounds how long our entries can be missing,
and a writer that does the same bounds how long its entries can.

`merge_strategies` is pure; `OwnedIds` persists which IDs are ours, and what this
host posted for each: PIDs are reused, and an entry for an owned PID that says
something else is another writer's, for another process.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Iterable, List, Mapping, Set, Tuple

from ..config.values import is_int
from .errors import ApiError
from .ownership import ProofFile

log = logging.getLogger(__name__)

Strategy = Dict[str, Any]
Written = Tuple[Any, Any]  # (priority, execution_time) of an entry this host posted
OWNED_FILE = "owned.json"


def written(entry: Mapping[str, Any]) -> Written:
    """What an entry says, in the terms this host's ownership of its PID is kept."""
    return entry.get("priority"), entry.get("execution_time")


def says(entry: Mapping[str, Any], posted: Written) -> bool:
    """Does `entry` say exactly what this host posted (and nothing it never posts)?"""
    return written(entry) == posted and not any(
        v for k, v in entry.items() if k not in ("pid", "priority", "execution_time"))


def merge_strategies(current: Iterable[Mapping[str, Any]], ours: List[Strategy],
                     owned: Mapping[int, Written]) -> List[Strategy]:
    """Everyone else's entries from `current`, then `ours`.

    * Entries with PIDs this host wants now are dropped: ours replace them.
    * An entry for a PID this host pushed before (`owned`) is dropped only while it
      says what this host pushed for it: the PID may have been reused since (the
      task died while this host was down, or between two pushes), and another
      writer's entry for the new process is not ours to remove.
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
            try:
                key = json.dumps(rule, sort_keys=True)
            except (RecursionError, ValueError, TypeError):  # nested past what json writes
                raise ApiError("bad-answer", "the strategies answer holds a selector that "
                               "cannot be kept as it is") from None
            if key not in selector_keys:
                selector_keys.add(key)
                kept.append(rule)
            continue
        pid = entry.get("pid")
        if not is_int(pid) or pid <= 0:
            continue
        if pid in wanted or (pid in owned and says(entry, owned[pid])):
            continue
        kept.append(dict(entry))
    return kept + ours


class OwnedIds(ProofFile):
    """The IDs this host put into the API in merge mode, and what it put there for
    each, kept across restarts so entries left behind for tasks that died while it
    was down are removed."""

    def __init__(self, directory: str, api_url: str, legacy: Written) -> None:
        super().__init__(directory, OWNED_FILE, "entries this host leaves behind may survive "
                         "a restart; tried again at each push")
        self.api_url = api_url
        self._older_format = False  # read from an earlier version's file: rewrite it once
        self.ids: Dict[int, Written] = self._load(legacy)

    def _load(self, legacy: Written) -> Dict[int, Written]:
        """`legacy`: what a file of an earlier version, which names PIDs only, is taken
        to have posted for them — this configuration's values, the likeliest."""
        data = self._read({"api_url": self.api_url})
        if data is None:  # (IDs owned on another API are not ours to remove here)
            return {}
        entries = data.get("strategies")
        if isinstance(entries, list):
            return {e["pid"]: written(e) for e in entries
                    if isinstance(e, dict) and is_int(e.get("pid"))}
        pids = data.get("pids")
        self._older_format = True
        return {p: legacy for p in pids if is_int(p)} if isinstance(pids, list) else {}

    def replace(self, ids: Mapping[int, Written]) -> None:
        new = dict(ids)
        if (new == self.ids and os.path.exists(self.path) and not self._older_format
                and not self._file.failing):
            return
        self.ids, self._older_format = new, False
        # "pids": what earlier versions read; "strategies": what this host posted
        data = json.dumps({"api_url": self.api_url, "machine": self._machine,
                           "pids": sorted(new),
                           "strategies": [{"pid": p, "priority": v[0], "execution_time": v[1]}
                                          for p, v in sorted(new.items())]}) + "\n"
        self._file.write(data.encode())
