"""What this host owns on a server, kept across restarts: the proof that lets a
writer change or delete an object, and nothing else.

One small JSON file per flavor in the state directory, bound to the server
(and user and node) it was written for: the server's id of this host's object
when the server gives ids (the Manager's policy), and the rule this host wrote
or is about to write (written *before* the request, so that a crash between
the request and the answer leaves proof of what may now be on the server).
An unreadable or foreign file is ignored with a line that names it; an id the
server keeps refusing is dropped after MAX_REFUSALS tries, saying so.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, fields
from typing import Any, Mapping, Optional

from ..config.values import is_int
from ..core.strategy import NodeRule
from ..files import FileProblem, atomic_write, read_json_file
from .errors import ApiError

log = logging.getLogger(__name__)

MAX_REFUSALS = 3  # answers refusing a stored id (other than "gone") before it is dropped


def rule_from(data: Any) -> Optional[NodeRule]:
    if not isinstance(data, dict):
        return None
    values = tuple(data.get(f.name) for f in fields(NodeRule))
    if all(isinstance(v, str) for v in values[:3]) and all(is_int(v) for v in values[3:]):
        return NodeRule(*values)  # type: ignore[arg-type]
    return None


class OwnershipFile:
    def __init__(self, directory: str, name: str, key: Mapping[str, str],
                 id_pattern: Optional[re.Pattern[str]] = None) -> None:
        self.path = os.path.join(directory, name)
        self._key = dict(key)  # the server (and user, node) this proof is about
        self._id_pattern = id_pattern
        self.object_id: Optional[str] = None
        self.rule: Optional[NodeRule] = None  # written, or being written
        self.refusals = 0
        self._load()

    def _load(self) -> None:
        try:
            data = read_json_file(self.path)
        except FileNotFoundError:
            return
        except (OSError, FileProblem, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self.path, exc)
            return
        if not isinstance(data, dict) or any(data.get(k) != v for k, v in self._key.items()):
            return  # about another server, user or node: proves nothing here
        ident = data.get("object_id", data.get("policy_id"))  # policy_id: 0.1.0's name
        if ident is not None and not (isinstance(ident, str) and self._id_pattern is not None
                                      and self._id_pattern.fullmatch(ident)):
            log.warning("ignoring %s: its id %s is not one this server gives; the object is "
                        "adopted or created again", self.path, json.dumps(ident)[:60])
            return
        self.object_id = ident.lower() if isinstance(ident, str) else None
        self.rule = rule_from(data.get("rule"))

    def store(self, object_id: Optional[str], rule: Optional[NodeRule]) -> None:
        """Record what is ours now (None, None: nothing — the file is removed)."""
        self.refusals = 0
        if (object_id, rule) == (self.object_id, self.rule):
            return
        self.object_id, self.rule = object_id, rule
        try:
            if object_id is None and rule is None:
                os.unlink(self.path)
                return
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            data = {**self._key, "object_id": object_id,
                    "rule": asdict(rule) if rule is not None else None}
            atomic_write(self.path, (json.dumps(data) + "\n").encode(), 0o600, durable=True)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot record what this host owns in %s: %s (after a restart this "
                        "host may not recognise its own object, and then leaves it alone)",
                        self.path, exc.strerror)

    def refused(self, error: ApiError) -> None:
        """The server refused a request naming the stored id (not with "gone")."""
        self.refusals += 1
        if self.refusals < MAX_REFUSALS or self.object_id is None:
            return
        log.warning("%s: the server refused the id %s stored there %d times in a row (%s); "
                    "dropping it: the object is adopted or created again", self.path,
                    self.object_id, self.refusals, error.summary)
        self.store(None, self.rule)
