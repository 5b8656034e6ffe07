"""A reload that moves this host to another server, node or user: what it wrote at
the old place is removed (as on stop), or said to be left behind — never silently
orphaned with its proof of ownership overwritten."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any, Callable, Dict

from testbed.fake_decision_maker import FakeDecisionMaker
from testbed.fake_gthulhu import FakeGthulhu
from testbed.fake_manager import FakeManager
from testbed.harness import GnbProcess
from tests.conftest import Env
from tests.integration.test_daemon import lines_for, pids
from tests.integration.test_flavors import (
    NODE,
    PASSWORD,
    lines,
    password_file,
    rule,
    start_dm,
    start_manager,
)


def reload(env: Env, d: Any, **sections: Any) -> None:
    n = len(env.notify.all())
    env.write_config(**sections)
    d.signal(signal.SIGHUP)
    env.notify.wait("READY", "1", after=n)


def test_a_new_node_name_removes_the_old_nodes_policy(
        env: Env, keys: Dict[str, Path], gnb: Callable[..., GnbProcess]) -> None:
    m = FakeManager({"operator": {"password": PASSWORD}}, {NODE, "node-b"},
                    keys["private"].read_bytes()).start()
    try:
        d = start_manager(env, m)
        g = gnb(threads=())
        env.writer.write(lines(g))
        m.wait_for(lambda: [p["nodeNames"] for p in m.policies()] == [[NODE]], 5)
        reload(env, d, api={"url": m.url, "node_name": "node-b", "username": "operator",
                            "password_file": str(password_file(env))},
               strategy={"resync_interval": 1.5})
        m.wait_for(lambda: [p["nodeNames"] for p in m.policies()] == [["node-b"]], 5)
        d.wait_log(f"moving away from api.url {m.url}, api.node_name {NODE}")
    finally:
        m.stop()


def test_another_manager_user_removes_the_old_users_policy(
        env: Env, keys: Dict[str, Path], gnb: Callable[..., GnbProcess]) -> None:
    m = FakeManager({"operator": {"password": PASSWORD}, "op2": {"password": PASSWORD}},
                    {NODE}, keys["private"].read_bytes()).start()
    try:
        d = start_manager(env, m)
        g = gnb(threads=())
        env.writer.write(lines(g))
        m.wait_for(lambda: len(m.policies("operator")) == 1, 5)
        reload(env, d, api={"url": m.url, "node_name": NODE, "username": "op2",
                            "password_file": str(password_file(env))},
               strategy={"resync_interval": 1.5})
        m.wait_for(lambda: len(m.policies("op2")) == 1 and not m.policies("operator"), 5)
        assert d.proc.poll() is None
    finally:
        m.stop()


def test_a_new_decision_maker_url_removes_the_rule_from_the_old_one(
        env: Env, keys: Dict[str, Path], gnb: Callable[..., GnbProcess]) -> None:
    a = FakeDecisionMaker(keys["private"].read_bytes()).start()
    b = FakeDecisionMaker(keys["private"].read_bytes()).start()
    try:
        d = start_dm(env, a)
        g = gnb(threads=())
        env.writer.write(lines(g))
        a.wait_for(lambda: a.rules() == [rule("^(?:nr-gnb)$")], 5)
        reload(env, d, api={"url": b.url, "node_name": NODE}, strategy={"resync_interval": 1.5})
        b.wait_for(lambda: b.rules() == [rule("^(?:nr-gnb)$")], 5)
        assert a.rules() == []
        assert d.proc.poll() is None
    finally:
        a.stop()
        b.stop()


def test_a_new_v0_url_clears_the_old_server_and_an_unreachable_one_is_said(
        env: Env, keys: Dict[str, Path], gnb: Callable[..., GnbProcess]) -> None:
    other = FakeGthulhu(keys["private"].read_bytes()).start()
    try:
        d = env.start()
        g = gnb(threads=())
        env.writer.write(lines_for(g))
        env.api.wait_post(lambda s: pids(s) == {g.pid})
        env.write_config()  # keep the url of env.api in base_config; move by hand:
        text = env.config_path.read_text().replace(env.api.url, other.url)
        n = len(env.notify.all())
        env.config_path.write_text(text)
        d.signal(signal.SIGHUP)
        env.notify.wait("READY", "1", after=n)
        other.wait_post(lambda s: pids(s) == {g.pid})
        assert env.api.posts()[-1].body == {"strategies": []}  # the old list is cleared
        other.stop()  # the place it moves away from is down: said, not silent
        n = len(env.notify.all())
        env.config_path.write_text(text.replace(other.url, env.api.url))
        d.signal(signal.SIGHUP)
        env.notify.wait("READY", "1", after=n, timeout=10)
        d.wait_log(f"moving away from api.url {other.url}: could not remove")
        env.api.wait_post(lambda s: pids(s) == {g.pid})
    finally:
        other.stop()


def test_a_reload_that_opens_a_hole_says_so_as_a_start_would(env: Env) -> None:
    """`systemctl reload` is how drop-ins are applied: emptying match.uid or moving
    api.url to plain http:// on another host is warned about then, not only at start."""
    d = env.start(match={"uid": [os.getuid()]})
    env.api.wait_post(lambda s: True)
    assert "match.uid is empty" not in d.log()
    reload(env, d, match={"uid": []}, api={"url": "http://192.0.2.1:8080", "timeout": 0.5})
    d.wait_log("match.uid is empty: any local user can name a process nr-gnb")
    d.wait_log("api.url http://192.0.2.1:8080 is plain http:// to another host")
