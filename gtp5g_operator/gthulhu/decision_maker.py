"""The Decision Maker writer: Gthulhu's per-node rule server since late 2025.

The scheduler polls its node's Decision Maker (DM), which turns *rules* — a
regular expression on task names — into PIDs by scanning /proc itself.  This
host owns exactly one rule (`policyID` gtp5g-operator@<node>); POST
/api/v1/node-intents replaces the DM's whole list, DELETE removes one rule.

Because a POST replaces *every* rule the DM holds, this host writes only when
the DM holds nothing, or nothing but a rule provably this host's: the DM's
merkle root (`GET /api/v1/node-intents/merkle`) is, with exactly one rule,
the SHA-256 of that rule's fields, so it is compared with the root of the
rule this host wrote last — kept in the state directory
(`decision-maker-rule.json`) so that a restarted operator still recognises
its own rule.  Rules of anyone else (a Manager that feeds this node, a
user's own) are never replaced: the write is refused with an error that
says so.  The DM keeps rules in memory only, so a restart loses them and
the next resync writes this host's rule again.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..config import Config
from ..core.readback import Comparison, ListedEntry, compare_rule
from ..core.strategy import NodeRule, build_rule, names_regex, policy_id, rule_priority
from ..core.tracker import ProcessView
from ..core.words import plural
from .answers import listed_strategies, merkle_root
from .errors import ApiError, check_answer
from .http import Answer, JsonHttp
from .ownership import OwnershipFile
from .writer import STRATEGIES_PATH, Holdings, PublicKeyToken, RuleWriter

if TYPE_CHECKING:
    from .detect import Probe

log = logging.getLogger(__name__)

RULES_PATH = "/api/v1/node-intents"
MERKLE_PATH = "/api/v1/node-intents/merkle"
RULE_FILE = "decision-maker-rule.json"
EMPTY_ROOTS = ("", hashlib.sha256(b"").hexdigest())  # a fresh DM; one emptied since
_GONE = object()  # the last write removed our rule
NO_SUCH_ROUTE = (404, 405, 501)  # Go routers: 404 (or 405); Python's http.server: 501
MAX_NAMES = 12  # thread names whose subsets' rules are tried for a rule without proof


def rule_body(rule: NodeRule) -> Dict[str, Any]:
    return {"policyID": rule.policy_id, "nodeID": rule.node,
            "commandRegex": rule.command_regex, "priority": rule.priority,
            "executionTime": rule.execution_time_ns}


def rule_root(rule: NodeRule) -> str:
    """The DM's merkle root when it holds exactly this rule (hashNodePolicy)."""
    leaf = (f"policyID={rule.policy_id}|nodeID={rule.node}|commandRegex={rule.command_regex}"
            f"|priority={rule.priority}|executionTime={rule.execution_time_ns}")
    return hashlib.sha256(leaf.encode()).hexdigest()


class DecisionMakerView:
    """What a node's Decision Maker tells its scheduler, read and never written (the
    Manager flavor's read-back, when api.decision_maker_url is set)."""

    def __init__(self, http: JsonHttp, login: PublicKeyToken) -> None:
        self.http = http
        self.login = login

    def listed(self, deadline: float) -> List[ListedEntry]:
        for attempt in (1, 2):
            if not self.login.valid():
                self.login.obtain(deadline)
            answer = self.http.request("GET", STRATEGIES_PATH, None, deadline,
                                       self.login.header())
            if answer.status == 401 and attempt == 1:
                self.login.drop()  # restarted, or its key changed: one fresh token
                continue
            check_answer(answer, f"GET {self.http.base_url}{STRATEGIES_PATH}")
            return listed_strategies(answer.body)
        raise AssertionError("unreachable")


class DecisionMakerWriter(RuleWriter):
    name = "decision-maker"
    display = "Decision Maker"
    summary = ("a node's Decision Maker (Gthulhu since late 2025, no Manager): one rule "
               "naming this host's gNB tasks")
    readback_path = STRATEGIES_PATH
    proof_file = RULE_FILE
    login: PublicKeyToken

    @classmethod
    def probe(cls, probe: Probe, deadline: float) -> bool:
        # A token for our key, and the node-rule merkle route (DMs from 2026-08 on).
        if probe.token(deadline) is None:
            return False
        return probe.status("GET", MERKLE_PATH, None, deadline, authorized=True) == 200

    def __init__(self, http: JsonHttp, config: Config, state_dir: str,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        super().__init__(http, config, state_dir, clock, wall_clock)
        self.login = PublicKeyToken(http, config, True, clock, wall_clock)
        self.proof = OwnershipFile(state_dir, RULE_FILE, {"api_url": config.api.url})
        self._written: object = None  # the NodeRule on the DM, _GONE, or None: unknown
        # _recognise's last try: the root, the names, the priority and execution time
        self._not_recognised: Tuple[str, List[str], int, int] = ("", [], 0, 0)

    # --- what status shows ------------------------------------------------------------------

    def describe(self) -> Dict[str, Any]:
        rule = self._written if isinstance(self._written, NodeRule) else None
        return {**super().describe(), "node": self.node, "policy_id": policy_id(self.node),
                "rule": rule.command_regex if rule else None,
                "token_expires_mono": self.login.expires_mono,
                "credentials_obtained": self.login.obtained}

    # --- the state -------------------------------------------------------------------------

    def write(self, views: Sequence[ProcessView], deadline: float) -> int:
        rule = build_rule(views, self.strategy, self.node)
        if rule is None:
            if self._written is not _GONE:
                self.clear(deadline)
            return 0
        root = self.root(deadline)
        if root == rule_root(rule):
            self._written = rule  # intact (also right after our own restart)
            self.proof.store(None, rule)  # confirmed: the earlier rules are gone
            return 1
        if root not in EMPTY_ROOTS and not self.owns(root):
            self._recognise(views, root)
            if not self.owns(root):  # a POST replaces every rule: only nothing, or ours, may go
                raise ApiError("not-ours", f"the Decision Maker at {self.http.base_url} holds "
                               f"node rules that are not this host's (merkle root {root[:12]}…); "
                               "writing this host's rule would replace them all (POST "
                               "/api/v1/node-intents replaces the whole list), so it is not "
                               "written. If a Gthulhu Manager feeds this node, point api.url at "
                               'the Manager (api.flavor = "manager"); otherwise remove the other '
                               "rules from the Decision Maker")
        if self._written == rule:  # only when it will be written (not others' in the way)
            log.info("the Decision Maker no longer holds this host's rule (restarted?): "
                     "writing it again")
        self._post(rule, deadline)
        return 1

    def read_back(self, views: Sequence[ProcessView], deadline: float,
                  rule: Optional[str] = None) -> Optional[Comparison]:
        if rule is None:
            built = build_rule(views, self.strategy, self.node)
            rule = built.command_regex if built else None
        return compare_rule(self.listed(deadline), rule, views, self.procfs)

    def listed(self, deadline: float) -> List[ListedEntry]:
        """What the scheduler reads from this Decision Maker now: with the view's one fresh
        token after a 401.  A push with no gNB writes nothing once its rule is gone, so
        the read-back is its only request, and a token the DM no longer takes (its clock,
        the node's, stepped past the token's exp; we renew on our monotonic clock) failed
        every read-back, 'unauthorized', until the renewal a day later."""
        return DecisionMakerView(self.http, self.login).listed(deadline)

    def holdings(self, deadline: float, last_rule: Optional[str] = None) -> Holdings:
        listed = self.listed(deadline)
        root = self.root(deadline)
        said = NodeRule(policy_id(self.node), self.node, last_rule, rule_priority(self.strategy),
                        self.strategy.execution_time_ns) if last_rule else None
        # this host's rule: what the running service says it wrote, or the stored proof
        mine = next((r for r in (said, *self._known()) if r and root == rule_root(r)), None)
        if root in EMPTY_ROOTS:
            relation = "it holds no node rule"
        elif mine is not None:
            relation = "it holds exactly the rule this service last wrote"
        else:
            relation = f"it holds node rules that are not this host's (merkle root {root[:12]}…)"
        return Holdings(f"the Decision Maker resolves "
                        f"{plural(len(listed), 'strategy', 'strategies')} for the scheduler; "
                        f"{relation}", listed, mine.command_regex if mine else None)

    def left_behind(self) -> str:
        known = self._known()
        if not known:
            return f"no rule of this host is known on the Decision Maker at {self.http.base_url}"
        return (f"rule {known[0].policy_id} saying {known[0].command_regex} on the Decision "
                f"Maker at {self.http.base_url}")

    def root(self, deadline: float) -> str:
        return merkle_root(self._call("GET", MERKLE_PATH, None, deadline).body)

    def _known(self) -> List[NodeRule]:
        """The rules of this host's the DM may hold: what this run wrote, and the proof."""
        return [r for r in (self._written, *self.proof.rules) if isinstance(r, NodeRule)]

    def owns(self, root: str) -> bool:
        """Does a DM with this merkle root hold only a rule of this host?"""
        return any(root == rule_root(r) for r in self._known())

    def _recognise(self, views: Sequence[ProcessView], root: str) -> None:
        """A rule without proof that is still provably this host's (asked only while this
        host knows of no rule of its own there): the DM holds it alone,
        under this host's policy id, saying what this host writes for some of its gNB's
        threads — written before the state directory knew it (0.1.x kept no proof; the
        state was lost).  Taking it for someone's would stop every write with an ERROR
        and leave the rule behind the gNB.  The threads' names are few (a gNB has a
        dozen): every subset's rule is tried, at most 2**MAX_NAMES, on this rare path."""
        if self._known():
            # This host has a rule of its own on record for this DM, and the DM holds
            # something else: someone replaced it (another host with this node name, say),
            # and what they wrote is theirs, whatever it says.
            return
        names = sorted({n for v in views for n in {v.comm, *self.procfs.thread_names(v.tgid)}})
        template = build_rule(views, self.strategy, self.node)
        if template is None or not names:
            return
        # The priority and execution time are in the root too: a reload may change them
        # (the writer stays), and a miss under the old ones says nothing of the new.
        tried = (root, names, template.priority, template.execution_time_ns)
        if tried == self._not_recognised:
            return  # (tried already: a DM holding others' rules is met at every resync)
        self._not_recognised = tried
        if len(names) > MAX_NAMES:  # said, or a rule 0.1.x wrote is an unexplained ERROR
            log.warning("the Decision Maker's rules are not tried as one 0.1.x may have "
                        "written for this host: its gNB has %d thread names, and only up to "
                        "%d are tried (a rule per subset)", len(names), MAX_NAMES)
            return
        for mask in range(1, 1 << len(names)):
            regex = names_regex(n for i, n in enumerate(names) if mask >> i & 1)
            candidate = NodeRule(template.policy_id, template.node, regex, template.priority,
                                 template.execution_time_ns)
            if rule_root(candidate) == root:
                log.info("the Decision Maker holds, alone and under this host's policy id, "
                         "the rule this host writes for some of its gNB's threads (%s), with no "
                         "proof in the state directory (written by 0.1.x, or the state was "
                         "lost): taken as this host's", regex)
                self.proof.store(None, candidate)
                self._written = candidate
                return

    def _post(self, rule: NodeRule, deadline: float) -> None:
        # Before the POST, so a crash after it leaves the proof; until the DM confirms it
        # holds the new rule or the one before (a failed POST), ours either way.
        self.proof.replacing(None, rule)
        self._written = None  # unknown until the DM confirms
        self._call("POST", RULES_PATH, {"policies": [rule_body(rule)]}, deadline)
        self._written = rule
        self.proof.store(None, rule)
        log.info("rule %s for node %s: %s", rule.policy_id, rule.node, rule.command_regex)

    def clear(self, deadline: float) -> None:
        # By a policyID of ours: the DM removes that rule only, whoever else has rules there.
        # Only a rule this host wrote (now, or as the state directory proves) and the DM
        # holds alone, whatever its policy id (api.node_name changed since: looking only
        # under the new name's left the old rule boosting the gNB's names for good).
        # Beside other rules, or replaced by one under this host's policy id (another host
        # with this node name, a hand-made one), the root cannot say whose rule that id
        # names now: deleting by it removed the very rule the last write had refused to
        # replace as not this host's.  Nothing is deleted; the push fails as a write
        # would (tried again: deleted once the DM holds ours alone), and a stop or a
        # move says what is left.
        known = self._known()
        root = self.root(deadline)  # (also tells a server that is not a DM, or refuses us)
        mine = next((r for r in known if rule_root(r) == root), None)
        if mine is None and known and root not in EMPTY_ROOTS:
            raise ApiError("not-ours", f"the Decision Maker at {self.http.base_url} holds node "
                           f"rules that are not provably this host's (merkle root {root[:12]}…), "
                           f"so rule {known[0].policy_id} is not deleted: its policy id may "
                           "name someone else's rule now. If this host's rule (saying "
                           f"{known[0].command_regex}) is among them, remove it by hand: "
                           f'DELETE {RULES_PATH} {{"policyId": "{known[0].policy_id}"}}')
        if mine is None:
            if not known:
                log.info("no rule of this host is known on the Decision Maker: nothing to "
                         "remove (rules not provably this host's are never deleted)")
            else:  # (restarted: rules live in memory) none to delete
                log.info("the Decision Maker holds no rule: this host's is gone already")
                self.proof.store(None, None)
            self._written = _GONE
            return
        target = mine.policy_id
        self._call("DELETE", RULES_PATH, {"policyId": target}, deadline)
        # Believed once the merkle root is no longer that of a rule of ours alone: dropping
        # the proof while the DM still holds the rule would make it look foreign (nothing
        # written again).
        root = self.root(deadline)
        if self.owns(root):
            raise ApiError("bad-answer", f"the Decision Maker at {self.http.base_url} answered "
                           f"the DELETE with success but still holds rule {target} "
                           f"(merkle root {root[:12]}…): it is still there and still this "
                           "host's (deleted again by the next push without a target, here or "
                           "after a restart)")
        # Said whatever this run wrote: the rule a run before this one left (the gNB gone
        # while the service was down) was deleted without a word.  Why (no target, a
        # stop, a move) is the caller's line.
        log.info("rule %s removed", target)
        self._written = _GONE
        self.proof.store(None, None)

    def _call(self, method: str, path: str, payload: Any, deadline: float) -> Answer:
        answer = self.http.request(method, path, payload, deadline, self.login.header())
        what = f"{method} {self.http.base_url}{path}"
        if answer.status in NO_SUCH_ROUTE and path in (RULES_PATH, MERKLE_PATH):
            raise ApiError("wrong-flavor", f"{what} answered {answer.status}: the server is not "
                           "a Gthulhu Decision Maker that takes node rules (from 2026-08 on)")
        check_answer(answer, what)
        return answer
