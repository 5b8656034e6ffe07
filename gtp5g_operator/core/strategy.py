"""Pure construction of what each Gthulhu flavor is sent, from the tracked set.

* v0 (2025 API): explicit IDs.  Gthulhu looks the priority up by TGID and the
  time slice by thread ID, so `targets = "both"` (the default) posts the TGID
  of each process and the TIDs of its tasks seen active; `"tgid"` and
  `"tid"` post one kind only.
* Decision Maker and Manager: one rule per host, a regular expression on task
  names that the server resolves to PIDs itself.  It names exactly the names
  this host tracks — the process names plus its tracked threads' own names —
  so it is right both for today's Decision Maker (which matches process
  names) and for upstream's next one (which matches each thread's name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence

from ..config.schema import StrategyConfig
from .tracker import ProcessView

Strategy = Dict[str, Any]

# RE2's (Go's regexp) metacharacters.  Go also takes any other escaped ASCII
# punctuation as itself, but escaping only these keeps the rule readable.
_RE2_META = frozenset("\\.+*?()|[]{}^$")


def target_ids(views: Iterable[ProcessView], targets: str) -> List[int]:
    """Sorted, distinct IDs to post."""
    ids = set()
    for view in views:
        if targets in ("tgid", "both"):
            ids.add(view.tgid)
        if targets in ("tid", "both"):
            ids.update(view.tids)
    return sorted(ids)


def build_strategies(ids: Iterable[int], cfg: StrategyConfig) -> List[Strategy]:
    return [
        {"pid": pid, "priority": cfg.priority, "execution_time": cfg.execution_time_ns}
        for pid in ids
    ]


def re2_escape(name: str) -> str:
    """`name` as an RE2 pattern matching exactly it."""
    out = []
    for ch in name:
        if ch in _RE2_META:
            out.append("\\" + ch)
        elif not ch.isprintable() or ch == "\n":
            out.append(f"\\x{{{ord(ch):x}}}")
        else:
            out.append(ch)
    return "".join(out)


# Go's unicode.IsSpace, which strings.TrimSpace strips (str.strip() also takes \x1c-\x1f)
_GO_SPACE = ("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
             "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


def names_regex(names: Iterable[str]) -> str:
    """Anchored, exact alternation of the names, sorted: `^(?:a|b)$`.  Each name as the
    Decision Maker matches a comm: strings.TrimSpace'd (a name the kernel cut to 15
    bytes may end in a space, "gnb-rlc-worker "), else the rule matched nothing.  A name
    of spaces only is left out: the DM reads it as "", and "^(?:|nr-gnb)$" would boost
    every process so named, anyone's."""
    names = {n.strip(_GO_SPACE) for n in names} - {""}
    return "^(?:" + "|".join(re2_escape(n) for n in sorted(names)) + ")$"


def tracked_names(views: Sequence[ProcessView]) -> List[str]:
    return sorted({name for view in views for name in (view.comm, *view.thread_names)})


@dataclass(frozen=True)
class NodeRule:
    """One host's rule, as both the Decision Maker and the Manager take it."""

    policy_id: str
    node: str
    command_regex: str
    priority: int
    execution_time_ns: int


def rule_priority(cfg: StrategyConfig) -> int:
    # true means 1: the value that boosts in both of the 2026 scheduler's modes
    return 1 if cfg.priority is True else int(cfg.priority)


def policy_id(node: str) -> str:
    return f"gtp5g-operator@{node}"


def build_rule(views: Sequence[ProcessView], cfg: StrategyConfig,
               node: str) -> Optional[NodeRule]:
    """This host's rule, or None when no target is live (the rule is removed)."""
    names = [n for n in tracked_names(views) if n.strip(_GO_SPACE)]
    if not names:  # (nothing the DM can be told by name: no rule rather than a stranger's)
        return None
    return NodeRule(policy_id(node), node, names_regex(names), rule_priority(cfg),
                    cfg.execution_time_ns)
