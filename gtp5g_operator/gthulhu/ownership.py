"""What this host owns on a server, kept across restarts: the proof that lets a
writer change or delete an object, and nothing else.

One small JSON file per flavor in the state directory, bound to the server
(and user and node) it was written for: the server's id of this host's object
when the server gives ids (the Manager's policy), and the rule this host wrote
or is about to write (written *before* the request, so that a crash between
the request and the answer leaves proof of what may now be on the server),
and the rules it wrote before that one until the server confirms the
replacement: a failed or unanswered write leaves the server holding either,
and neither may turn into a stranger's.
An unreadable or foreign file is ignored with a line that names it; an id the
server keeps refusing is dropped after MAX_REFUSALS tries, saying so.
Every file says the machine (/etc/machine-id) that wrote it: one written on
another machine (a state directory cloned with a golden image) proves nothing
here, and is ignored saying so (merge.py's owned.json too).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import asdict, fields
from typing import Any, Dict, Mapping, Optional, Tuple

from ..config.values import is_int, stored_api_url
from ..core.kept_file import KeptFile
from ..core.strategy import NodeRule
from ..files import FileProblem, read_json_file, read_small_text
from .errors import ApiError

log = logging.getLogger(__name__)

MAX_REFUSALS = 3  # answers refusing a stored id (other than "gone") before it is dropped
MAX_EARLIER = 4  # earlier rules kept while their replacement is unconfirmed
MACHINE_ID = "/etc/machine-id"


def this_machine() -> str:
    """This machine, as the state files name it: a hash of its machine-id, which is
    confidential (machine-id(5)); "" when unreadable, and then no file is judged by it."""
    ident = (read_small_text(MACHINE_ID, 256) or "").strip()
    return hashlib.sha256(f"gtp5g-operator:{ident}".encode()).hexdigest()[:32] if ident else ""


def from_another_machine(path: str, data: Any, here: str) -> bool:
    """Was the state file `path` (its content `data`) written on another machine than
    `here` (this_machine(), read once per writer: it does not change)?  Hosts
    cloned from one image with its state directory hold the image host's proof, and
    with the same host name (api.node_name's default) it matched their key: each
    clone deleted, or rewrote, the objects of the host that wrote it.  A file of an
    earlier version says no machine, and is judged as before."""
    machine = data.get("machine") if isinstance(data, dict) else None
    if not isinstance(machine, str) or not here or machine == here:
        return False
    log.warning("ignoring %s: it was written on another machine (of /etc/machine-id hash "
                "%s; this one's is %s), copied with an image of that host: what it names is "
                "that host's and is left alone here. Remove the file, and give every host "
                "its own machine-id and api.node_name", path, machine[:32], here)
    return True


SETTING = {"api_url": "api.url", "user": "api.username", "node": "api.node_name"}


def named(data: Dict[str, Any]) -> str:
    """What a proof file names on its server, in words (for the log)."""
    ident = data.get("object_id", data.get("policy_id"))
    rule, pids = data.get("rule"), data.get("pids")
    parts = [f"id {ident}" if ident is not None else "",
             f"rule {rule.get('command_regex')}" if isinstance(rule, dict) else "",
             f"strategies of PIDs {pids}" if isinstance(pids, list) and pids else ""]
    return ", ".join(p for p in parts if p)[:300] or "nothing"


def recorded(path: str, api_url: str) -> str:
    """What the proof file `path` names on the server `api_url`, in words; "" when it
    names nothing there (no file, unreadable, another server's or machine's).  Read
    only, for a log line."""
    try:
        data = read_json_file(path)
    except (OSError, FileProblem, ValueError):
        return ""
    if not isinstance(data, dict) or stored_api_url(data.get("api_url")) != api_url or \
            data.get("machine", this_machine()) != this_machine():
        return ""
    return f"{path}: {named(data)}"


def rule_from(data: Any) -> Optional[NodeRule]:
    if not isinstance(data, dict):
        return None
    values = tuple(data.get(f.name) for f in fields(NodeRule))
    if all(isinstance(v, str) for v in values[:3]) and all(is_int(v) for v in values[3:]):
        return NodeRule(*values)  # type: ignore[arg-type]
    return None


class ProofFile:
    """A state-directory file that proves what this host owns: 0600, fsynced.  One that
    cannot be written (the state directory full, read-only) is written again at the
    writer's next push, even of unchanged content: the proof must catch up once the
    disk has room, or after a restart this host's own object reads as someone else's."""

    def __init__(self, directory: str, name: str, consequence: str) -> None:
        self.path = os.path.join(directory, name)
        self._file = KeptFile(self.path, 0o600, durable=True, consequence=f" ({consequence})")
        self._machine = this_machine()

    def _read(self, key: Mapping[str, str]) -> Optional[Dict[str, Any]]:
        """The file's content when it is readable, written on this machine and about the
        server (and user, node) `key` names; None otherwise."""
        try:
            data = read_json_file(self.path)
        except FileNotFoundError:
            return None
        except (OSError, FileProblem, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self.path, exc)
            return None
        if from_another_machine(self.path, data, self._machine) or not isinstance(data, dict):
            return None
        if "api_url" in data:
            data["api_url"] = stored_api_url(data["api_url"])  # (earlier versions kept it as typed)
        # About another server, user or node (changed while the service was down, or by a
        # reload before the flavor was known): it proves nothing here, and what it names
        # is no longer this host's to maintain.  Ignored in silence, that object stayed on
        # the server for good (a policy boosting the old node's gNB) and no one was told.
        was = [f"{SETTING.get(k, k)} {data.get(k)}" for k, v in key.items() if data.get(k) != v]
        if was:
            log.warning("ignoring %s: it is about %s, not this configuration; what it names "
                        "there (%s) is left behind and no longer maintained: remove it by "
                        "hand, or set that back", self.path, ", ".join(was), named(data))
            return None
        return data


class OwnershipFile(ProofFile):
    def __init__(self, directory: str, name: str, key: Mapping[str, str],
                 id_pattern: Optional[re.Pattern[str]] = None) -> None:
        super().__init__(directory, name, "after a restart this host may not recognise its "
                         "own object, and then leaves it alone; tried again at each push")
        self._key = dict(key)  # the server (and user, node) this proof is about
        self._id_pattern = id_pattern
        self.object_id: Optional[str] = None
        self.rule: Optional[NodeRule] = None  # written, or being written
        self.earlier: Tuple[NodeRule, ...] = ()  # replaced by `rule`, unconfirmed; newest first
        self.refusals = 0
        self._load()

    def _load(self) -> None:
        data = self._read(self._key)
        if data is None:
            return
        ident = data.get("object_id", data.get("policy_id"))  # policy_id: 0.1.0's name
        if ident is not None and not (isinstance(ident, str) and self._id_pattern is not None
                                      and self._id_pattern.fullmatch(ident)):
            log.warning("ignoring %s: its id %s is not one this server gives; the object is "
                        "adopted or created again", self.path, json.dumps(ident)[:60])
            return
        self.object_id = ident.lower() if isinstance(ident, str) else None
        self.rule = rule_from(data.get("rule"))
        earlier = data.get("earlier")
        found = [rule_from(r) for r in (earlier if isinstance(earlier, list) else [])]
        self.earlier = tuple(r for r in found if r is not None)[:MAX_EARLIER]

    @property
    def rules(self) -> Tuple[NodeRule, ...]:
        """Every rule of this host's the server may hold: the last one, then the earlier."""
        return ((self.rule,) if self.rule is not None else ()) + self.earlier

    def store(self, object_id: Optional[str], rule: Optional[NodeRule]) -> None:
        """Record what is ours now, as the server confirmed it (None, None: nothing — the
        file is removed)."""
        self.refusals = 0
        self._save(object_id, rule, ())

    def replacing(self, object_id: Optional[str], rule: NodeRule) -> None:
        """Record, before the request, that `rule` replaces what this host wrote: until
        the server confirms, it holds either."""
        earlier = self.earlier
        if self.rule is not None and self.rule != rule and self.rule not in earlier:
            earlier = (self.rule, *earlier)
            if len(earlier) > MAX_EARLIER:
                # The oldest is the rule the server last confirmed (store() empties the
                # list): the one it most surely holds.  Dropping it made this host's own
                # policy read as someone's edit after a restart, and left it for good.
                earlier = (*earlier[:MAX_EARLIER - 1], earlier[-1])
        self._save(object_id, rule, tuple(r for r in earlier if r != rule))

    def _save(self, object_id: Optional[str], rule: Optional[NodeRule],
              earlier: Tuple[NodeRule, ...]) -> None:
        if ((object_id, rule, earlier) == (self.object_id, self.rule, self.earlier)
                and not self._file.failing):
            return
        self.object_id, self.rule, self.earlier = object_id, rule, earlier
        if object_id is None and rule is None and not earlier:
            self._file.write(None)
            return
        data = {**self._key, "machine": self._machine, "object_id": object_id,
                "rule": asdict(rule) if rule is not None else None,
                "earlier": [asdict(r) for r in earlier]}
        if object_id is not None:
            # 0.1.0's name, all it reads: without it a downgrade forgets the policy
            # (orphaned) and, at its first push without a target, deletes the first
            # policy of the user for the node instead, a hand-made one as well
            data["policy_id"] = object_id
        self._file.write((json.dumps(data) + "\n").encode())

    def refused(self, error: ApiError) -> None:
        """The server refused a request naming the stored id (not with "gone")."""
        self.refusals += 1
        if self.refusals < MAX_REFUSALS or self.object_id is None:
            return
        log.warning("%s: the server refused the id %s stored there %d times in a row (%s); "
                    "dropping it: the object is adopted or created again", self.path,
                    self.object_id, self.refusals, error.summary)
        self.drop_id()

    def drop_id(self) -> None:
        """The stored id names no object of ours (gone, or refused): keep the rules."""
        self.refusals = 0
        self._save(None, self.rule, self.earlier)
