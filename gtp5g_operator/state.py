"""The daemon's files: state.json (runtime, for `gtp5g-operator status`) and
owned.json (persistent: which IDs this host pushed in merge mode).

Directories follow systemd's RuntimeDirectory=/StateDirectory=: the
environment variables it sets, else /run/gtp5g-operator and
/var/lib/gtp5g-operator.  Nothing secret is written (no token, no key).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Any, Dict, Iterable, Mapping, Optional, Set

from .files import atomic_write

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
OWNED_FILE = "owned.json"


def _first_dir(env: Mapping[str, str], var: str, default: str) -> str:
    # systemd sets a colon-separated list when several directories are configured
    value = env.get(var, "")
    return value.split(":")[0] if value else default


def runtime_dir(env: Mapping[str, str] = os.environ) -> str:
    return _first_dir(env, "RUNTIME_DIRECTORY", "/run/gtp5g-operator")


def state_dir(env: Mapping[str, str] = os.environ) -> str:
    return _first_dir(env, "STATE_DIRECTORY", "/var/lib/gtp5g-operator")


class StateFile:
    """state.json, rewritten atomically when its content changes."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, STATE_FILE)
        self._last: Optional[str] = None
        self._error = ""

    def write(self, state: Dict[str, Any], now: float) -> None:
        body = json.dumps(state, sort_keys=True)
        if body == self._last:
            return
        data = json.dumps({**state, "updated_at": now}, indent=1, sort_keys=True) + "\n"
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            atomic_write(self.path, data.encode())
        except OSError as exc:
            if exc.strerror != self._error:
                log.warning("cannot write %s: %s", self.path, exc.strerror)
            self._error = exc.strerror or ""
            return
        self._last, self._error = body, ""

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)


class OwnedIds:
    """The IDs this host put into the API in merge mode, kept across restarts so
    entries left behind for tasks that died while it was down are removed."""

    def __init__(self, directory: str, api_url: str) -> None:
        self.path = os.path.join(directory, OWNED_FILE)
        self.api_url = api_url
        self.ids: Set[int] = self._load()

    def _load(self) -> Set[int]:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return set()
        except (OSError, ValueError) as exc:
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


def read_state(directory: str) -> Dict[str, Any]:
    with open(os.path.join(directory, STATE_FILE), encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError("state.json is not an object")
    return data
