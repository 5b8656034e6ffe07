"""Merge mode of the v0 API: this host's strategies in a list other writers share.

The API has one list, replaced by every POST, and no versioning: merging is
GET, edit, POST.  Another writer's POST between our GET and POST is lost (or
ours is, if theirs comes later); the periodic resync re-applies our part
within `resync_interval`, which bounds how long our entries can be missing,
and a writer that does the same bounds how long its entries can.

`merge_strategies` is pure; `OwnedIds` persists which IDs are ours.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Iterable, List, Mapping, Set

from ..files import FileProblem, atomic_write, read_json_file
from .errors import ApiError

log = logging.getLogger(__name__)

Strategy = Dict[str, Any]
OWNED_FILE = "owned.json"


def merge_strategies(current: Iterable[Mapping[str, Any]], ours: List[Strategy],
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
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            continue
        if pid in owned or pid in wanted:
            continue
        kept.append(dict(entry))
    return kept + ours


class OwnedIds:
    """The IDs this host put into the API in merge mode, kept across restarts so
    entries left behind for tasks that died while it was down are removed."""

    def __init__(self, directory: str, api_url: str) -> None:
        self.path = os.path.join(directory, OWNED_FILE)
        self.api_url = api_url
        self.ids: Set[int] = self._load()

    def _load(self) -> Set[int]:
        try:
            data = read_json_file(self.path)
        except FileNotFoundError:
            return set()
        except (OSError, FileProblem, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self.path, exc)
            return set()
        if not isinstance(data, dict) or data.get("api_url") != self.api_url:
            return set()  # IDs owned on another API are not ours to remove here
        pids = data.get("pids")
        return {p for p in pids if isinstance(p, int)} if isinstance(pids, list) else set()

    def replace(self, ids: Iterable[int]) -> None:
        new = set(ids)
        if new == self.ids and os.path.exists(self.path):
            return
        self.ids = new
        data = json.dumps({"api_url": self.api_url, "pids": sorted(new)}) + "\n"
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            atomic_write(self.path, data.encode(), 0o600, durable=True)
        except OSError as exc:
            log.warning("cannot record owned IDs in %s: %s (entries this host leaves "
                        "behind may survive a restart)", self.path, exc.strerror)
