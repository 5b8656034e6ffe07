"""The rule of the Decision Maker and Manager flavors: a pure function of the
tracked set (table-driven), and the merkle root a resync compares."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from gtp5g_operator.config import StrategyConfig
from gtp5g_operator.config.values import api_url
from gtp5g_operator.core.strategy import (
    NodeRule,
    build_rule,
    names_regex,
    re2_escape,
    rule_priority,
    tracked_names,
)
from gtp5g_operator.core.tracker import ProcessView
from gtp5g_operator.gthulhu.answers import OBJECT_ID
from gtp5g_operator.gthulhu.decision_maker import rule_body, rule_root
from gtp5g_operator.gthulhu.ownership import MAX_EARLIER, OwnershipFile
from testbed.fake_decision_maker import node_policy_hash


def view(comm: str, names: Tuple[str, ...] = (), tgid: int = 100) -> ProcessView:
    return ProcessView(tgid, comm, "/usr/bin/nr-gnb", 0, 0.0, (tgid,), frozenset(names))


@pytest.mark.parametrize("views,regex", [
    ([view("nr-gnb")], "^(?:nr-gnb)$"),
    ([view("nr-gnb", ("nr-gnb", "nr-gnb-rlc", "gnb worker"))],
     "^(?:gnb worker|nr-gnb|nr-gnb-rlc)$"),  # sorted, distinct, spaces kept
    ([view("nr-gnb", ("a.b", "x+y", "(p)", "[q]", "c|d", "^e$", "f*?", "g{2}", "h\\i"))],
     r"^(?:\(p\)|\[q\]|\^e\$|a\.b|c\|d|f\*\?|g\{2\}|h\\i|nr-gnb|x\+y)$"),
    ([view("nr-gnb", ("123456789012345",))], "^(?:123456789012345|nr-gnb)$"),  # 15 bytes
    ([view("nr-gnb", tgid=1), view("nr-gnb2", ("w1",), tgid=2)], "^(?:nr-gnb|nr-gnb2|w1)$"),
    # as the Decision Maker reads a comm (Go's strings.TrimSpace); a name of spaces only
    # is left out, or the rule would match every process whose name is spaces
    ([view("nr-gnb", ("gnb-rlc-worker ", " ", "\u3000\t"))], "^(?:gnb-rlc-worker|nr-gnb)$"),
])
def test_the_regex_names_exactly_the_tracked_names(views: List[ProcessView],
                                                   regex: str) -> None:
    assert names_regex(tracked_names(views)) == regex


@pytest.mark.parametrize("names", [
    ("nr-gnb",), ("nr-gnb", "gnb worker"), ("a.b", "x+y", "(p)", "[q]", "c|d", "h\\i"),
    ("tab\tname", "new\nline", "üñí"),
])
def test_the_regex_matches_the_names_and_nothing_near_them(names: Tuple[str, ...]) -> None:
    pattern = re.compile(names_regex(names).replace(r"\x{9}", r"\x09").replace(
        r"\x{a}", r"\x0a"))  # Python spells RE2's \x{..} as \x..
    for name in names:
        assert pattern.search(name)
        for near in (name + "x", "x" + name, name[:-1], name.upper() if name.islower() else ""):
            if near and near not in names:
                assert not pattern.search(near), near


def test_a_gnb_named_only_spaces_gets_no_rule_rather_than_one_matching_any_such_name() -> None:
    assert build_rule([view(" ", (" ", "\t"))], StrategyConfig(), "node-a") is None
    rule = build_rule([view(" ", ("w1",))], StrategyConfig(), "node-a")
    assert rule is not None and rule.command_regex == "^(?:w1)$"


def test_control_characters_are_written_as_re2_escapes() -> None:
    assert re2_escape("a\tb") == r"a\x{9}b"
    assert re2_escape("gnb worker") == "gnb worker"  # RE2 takes a space as itself


@pytest.mark.parametrize("priority,expected", [(True, 1), (1, 1), (5, 5), (20, 20)])
def test_priority_true_means_1_and_integers_are_sent_as_they_are(priority: object,
                                                                 expected: int) -> None:
    assert rule_priority(StrategyConfig(priority=priority)) == expected  # type: ignore


def test_no_target_means_no_rule() -> None:
    assert build_rule([], StrategyConfig(), "node-a") is None


def test_the_rule_and_its_merkle_root() -> None:
    rule = build_rule([view("nr-gnb", ("nr-gnb-rlc",))],
                      StrategyConfig(execution_time_ns=5_000_000), "node-a")
    assert rule is not None
    assert rule_body(rule) == {"policyID": "gtp5g-operator@node-a", "nodeID": "node-a",
                               "commandRegex": "^(?:nr-gnb|nr-gnb-rlc)$", "priority": 1,
                               "executionTime": 5_000_000}
    # the root a Decision Maker computes when it holds exactly this rule
    assert rule_root(rule) == node_policy_hash(rule_body(rule))


def test_only_names_change_the_rule_not_ids() -> None:
    a = build_rule([view("nr-gnb", ("w",), tgid=1)], StrategyConfig(), "n")
    b = build_rule([view("nr-gnb", ("w",), tgid=2)], StrategyConfig(), "n")
    assert a == b





def released_0_1_0_policy_id(path: Path, key: Dict[str, str]) -> Optional[str]:
    """What 0.1.0 (PolicyIdFile._load, a1ae6b9) reads from manager-policy.json."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or any(data.get(k) != v for k, v in key.items()):
        return None
    value = data.get("policy_id")
    return value if isinstance(value, str) and value else None


def test_a_downgrade_to_0_1_0_still_finds_the_stored_policy_id(tmp_path: Path) -> None:
    """`apt install gtp5g-operator=0.1.0` after an upgrade: 0.1.0 reads only
    "policy_id".  Without it, 0.1.0 orphaned this host's policy and, at its first push
    without a target, deleted the first policy of the user for the node instead (a
    hand-made one; reproduced with both daemons on the fake Manager).  An id this
    version no longer holds as proof is not handed to it either."""
    key = {"api_url": "http://manager:8080", "user": "operator", "node": "n"}
    ident = "6b163eee4602c76b059e9590"
    rule = NodeRule("gtp5g-operator@n", "n", "^(?:nr-gnb)$", 1, 20_000_000)
    proof = OwnershipFile(str(tmp_path), "manager-policy.json", key, OBJECT_ID)
    proof.store(ident, rule)
    path = tmp_path / "manager-policy.json"
    assert released_0_1_0_policy_id(path, key) == ident
    again = OwnershipFile(str(tmp_path), "manager-policy.json", key, OBJECT_ID)
    assert (again.object_id, again.rule) == (ident, rule)
    again.drop_id()  # refused, or changed by someone else: no longer this host's
    assert released_0_1_0_policy_id(path, key) is None


def test_the_proof_keeps_the_rules_a_write_may_not_have_replaced(tmp_path: Path) -> None:
    """Until the server confirms a write, it holds the new rule or the earlier ones:
    all stay proof, on disk too (a crash during the write), at most MAX_EARLIER, and
    never without the one the server last confirmed (the one it most surely holds)."""
    rules = [NodeRule("gtp5g-operator@n", "n", f"^(?:r{i})$", 10, 20_000_000)
             for i in range(MAX_EARLIER + 3)]
    proof = OwnershipFile(str(tmp_path), "rule.json", {"api_url": "http://dm"})
    proof.store(None, rules[0])
    for r in rules[1:]:
        proof.replacing(None, r)  # each write failed
    assert proof.rules == (rules[-1], *reversed(rules[-MAX_EARLIER:-1]), rules[0])
    again = OwnershipFile(str(tmp_path), "rule.json", {"api_url": "http://dm"})
    assert again.rules == proof.rules
    again.replacing(None, rules[-2])  # back to an earlier one: listed once
    assert again.rules.count(rules[-2]) == 1 and again.rules[0] == rules[-2]
    again.store(None, rules[-2])  # confirmed: the others are gone
    assert OwnershipFile(str(tmp_path), "rule.json", {"api_url": "http://dm"}).rules == (
        rules[-2],)
    data = json.loads((tmp_path / "rule.json").read_text())
    data["earlier"] = [{"policy_id": 1}, "x", asdict(rules[0])]  # garbage is no proof
    (tmp_path / "rule.json").write_text(json.dumps(data))
    assert OwnershipFile(str(tmp_path), "rule.json", {"api_url": "http://dm"}).rules == (
        rules[-2], rules[0])


def test_a_proof_an_earlier_version_wrote_for_a_url_typed_in_upper_case_is_still_this_hosts(
        tmp_path: Path) -> None:
    """Earlier versions kept api.url as typed ('HTTP://DM:8080'); this version takes the same
    setting as 'http://dm:8080': the proof it wrote is about the same server."""
    rule = NodeRule("gtp5g-operator@n", "n", "^(?:nr-gnb)$", 1, 20_000_000)
    OwnershipFile(str(tmp_path), "rule.json", {"api_url": "HTTP://DM:8080"}).store(None, rule)
    url = api_url("HTTP://DM:8080")
    assert OwnershipFile(str(tmp_path), "rule.json", {"api_url": url}).rule == rule
    assert OwnershipFile(str(tmp_path), "rule.json", {"api_url": "http://dm2"}).rule is None
