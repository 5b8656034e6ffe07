"""Every answer a Gthulhu server sends, decoded by one total function per shape.

Whatever a server (or anyone on an http:// path) sends is hostile data.  Each
function here takes the decoded JSON value of one kind of answer and either
returns a value of the expected type, checked all the way down, or raises
`ApiError("bad-answer")` — never another exception: a value of the wrong
JSON type, a number that does not fit, a missing field all end up as that
one error, which the writers log once and back off from.

Times (a token's `exp`, `iat`, `expired_at`) must be finite and within the
years a clock can show, or they would overflow later when formatted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Tuple

from ..config.values import is_int
from ..core.readback import ListedEntry
from ..core.words import finite, shown
from .errors import ApiError

MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z: the last second strftime can show
MAX_TOKEN = 16 * 1024  # characters; a token goes back in every request's header line
OBJECT_ID = re.compile(r"[0-9a-fA-F]{24}")  # a Manager (MongoDB) id
TOKEN_CHARS = re.compile(r"[A-Za-z0-9_.~+/=-]+")  # a JWT (base64url parts) or opaque token


def bad(what: str) -> ApiError:
    return ApiError("bad-answer", what)


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise bad(f"{what} is not a JSON object")
    return value


def _data(body: Any, what: str) -> Mapping[str, Any]:
    """The `data` object of a wrapped answer ({"success": true, "data": {...}})."""
    return _object(_object(body, what).get("data"), f"{what}: data")


def time_value(value: Any) -> Optional[float]:
    """A Unix time from a JSON number, or None when it is not a usable one."""
    seconds = finite(value)
    return seconds if seconds is not None and 0.0 <= seconds <= MAX_TIME else None


# --- tokens -----------------------------------------------------------------------------------


def token_answer(body: Any) -> Tuple[str, Optional[float]]:
    """The token and its optional expiry from either shape of a token answer.

    2025 release: {"success": true, "token": "..."}
    later:        {"success": true, "data": {"token": "...", "expired_at": 1700000000}}
    """
    top = _object(body, "the token answer")
    data = top.get("data")
    holder: Mapping[str, Any] = data if isinstance(data, dict) else top
    return _token(holder.get("token"), "the token answer"), time_value(holder.get("expired_at"))


def _token(value: Any, what: str) -> str:
    """A bearer token: a non-empty string that fits a header line and holds only what
    a token can (base64url and dots), so that sending it back cannot break a request."""
    if not isinstance(value, str) or not value:
        raise bad(f"{what} has no token")
    if len(value) > MAX_TOKEN or not TOKEN_CHARS.fullmatch(value):
        raise bad(f"{what} holds a token of {len(value)} characters that is not a JWT")
    return value


def claim_times(claims: Mapping[str, Any]) -> Tuple[Optional[float], Optional[float]]:
    """(exp, iat — or nbf when iat is absent) of a token's claims, each None when unusable."""
    issued = time_value(claims.get("iat"))
    if issued is None:
        issued = time_value(claims.get("nbf"))
    return time_value(claims.get("exp")), issued


def manager_tokens(body: Any) -> Tuple[str, Optional[str]]:
    """(access token, refresh token or None) of a Manager login or refresh answer."""
    data = _data(body, "the Manager's login answer")
    access = _token(data.get("accessToken") or data.get("token"), "the Manager's login answer")
    refresh = data.get("refreshToken")
    try:
        return access, _token(refresh, "the refresh token")
    except ApiError:
        return access, None  # no usable refresh token: log in again when this one ends


# --- the Decision Maker -------------------------------------------------------------------


def merkle_root(body: Any) -> str:
    """data.rootHash of GET /api/v1/node-intents/merkle ("" on a fresh DM)."""
    root = _data(body, "the merkle answer").get("rootHash")
    if not isinstance(root, str):
        raise bad("data.rootHash is not a string")
    return root


MAX_LISTED = 65536  # entries accepted from one answer (a 1 MiB answer holds ~12,000)
PID_MAX_LIMIT = 1 << 22  # the kernel's PID_MAX_LIMIT on 64-bit


def _list(holder: Mapping[str, Any], key: str, what: str) -> List[Any]:
    items = holder.get(key)
    if items is None:  # the 2025 server answers null when nothing resolves to a PID
        return []
    if not isinstance(items, list):
        raise bad(f"{what}: {key} is not a list")
    return items


def listed_strategies(body: Any) -> List[ListedEntry]:
    """What GET /api/v1/scheduling/strategies lists (v0 and the DM alike): what the
    scheduler will boost.  Entries without a PID (another writer's selector, v0) are
    left out; anything else malformed refuses the whole answer, since what the
    scheduler boosts cannot then be told."""
    items = _list(_object(body, "the strategies answer"), "scheduling", "the strategies answer")
    if len(items) > MAX_LISTED:
        raise bad(f"the strategies answer lists {len(items)} entries, more than {MAX_LISTED}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise bad(f"the strategies answer: scheduling[{i}] is not an object")
        pid = item.get("pid")
        if pid is None or pid == 0:
            continue
        if not is_int(pid) or not 0 < pid <= PID_MAX_LIMIT:
            raise bad(f"the strategies answer: scheduling[{i}].pid is not a PID: "
                      f"{shown(pid)}")
        regex = item.get("command_regex")
        if regex is not None and not isinstance(regex, str):
            raise bad(f"the strategies answer: scheduling[{i}].command_regex is not a string: "
                      f"{shown(regex)}")
        out.append(ListedEntry(pid, regex or None))
    return out


def v0_strategy_list(body: Any) -> List[Mapping[str, Any]]:
    """The v0 server's list as it is, for merge mode (which keeps others' entries)."""
    items = _list(_object(body, "the strategies answer"), "scheduling", "the strategies answer")
    if not all(isinstance(i, dict) for i in items):
        raise bad("the strategies answer: scheduling is not a list of objects")
    return items


# --- the Manager ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """One node scheduling policy of GET …/self (zero-valued fields are omitted there)."""

    id: str
    node_names: Tuple[str, ...]
    command_regex: str
    priority: int
    execution_time: int
    selectors: bool  # it also selects nodes or devices by labels: never one of ours


def _policy(item: Any) -> Optional[Policy]:
    """A well-formed policy, or None: one we cannot read cannot be proven ours."""
    if not isinstance(item, dict):
        return None
    ident, names = item.get("id"), item.get("nodeNames", [])
    regex = item.get("commandRegex", "")
    priority, execution = item.get("priority", 0), item.get("executionTime", 0)
    if not (isinstance(ident, str) and OBJECT_ID.fullmatch(ident)
            and isinstance(names, list) and all(isinstance(n, str) for n in names)
            and isinstance(regex, str) and is_int(priority) and is_int(execution)):
        return None
    selectors = bool(item.get("nodeSelectors")) or bool(item.get("draSelectors"))
    return Policy(ident.lower(), tuple(names), regex, priority, execution, selectors)


def manager_policies(body: Any) -> List[Policy]:
    """The well-formed policies of GET /api/v1/node-scheduling-policies/self."""
    items = _list(_data(body, "the policies answer"), "policies", "the policies answer")
    return [p for p in (_policy(i) for i in items) if p is not None]
