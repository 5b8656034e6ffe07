"""A reload that moves this host to another server, node or user: what it wrote at
the old place is removed (as on stop), or said to be left behind — never silently
orphaned with its proof of ownership overwritten."""

from __future__ import annotations

import contextlib
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
        d.wait_log(f"moving away from api.url {m.url}, api.flavor manager, api.node_name {NODE}")
        assert "no target is live" not in d.log()  # the gNB runs: the journal said it did not
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
        d.wait_log(f"moving away from api.url {a.url}")
        assert "no target is live" not in d.log()  # the gNB runs: the journal said it did not
        assert d.proc.poll() is None
    finally:
        a.stop()
        b.stop()


def test_an_explicit_flavor_at_the_same_url_removes_the_rule_auto_found(
        env: Env, keys: Dict[str, Path], gnb: Callable[..., GnbProcess]) -> None:
    """api.flavor "auto" found a Decision Maker; a reload names "v0" at the same api.url.
    The place compared only api.url (and the node): nothing moved, the v0 writer never
    looked at the rule again, and it stayed on the Decision Maker after the gNB exited."""
    a = FakeDecisionMaker(keys["private"].read_bytes()).start()
    try:
        d = start_dm(env, a)
        g = gnb(threads=())
        env.writer.write(lines(g))
        a.wait_for(lambda: a.rules() == [rule("^(?:nr-gnb)$")], 5)
        reload(env, d, api={"url": a.url, "node_name": NODE, "flavor": "v0"},
               strategy={"resync_interval": 1.5})
        d.wait_log(f"moving away from api.url {a.url}, api.flavor decision-maker, "
                   f"api.node_name {NODE}: removed what this host wrote there")
        assert a.rules() == []
        assert d.proc.poll() is None
    finally:
        a.stop()


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
        d.wait_log(f"moving away from api.url {other.url}, api.flavor v0: could not remove")
        env.api.wait_post(lambda s: pids(s) == {g.pid})
    finally:
        other.stop()


def test_a_file_caught_empty_by_a_reload_is_not_taken_for_the_defaults(
        env: Env, gnb: Callable[..., GnbProcess]) -> None:
    """An editor's save or a `cp` truncates the file before it writes it, and an empty
    file is valid TOML: a SIGHUP in between loaded the defaults, moved this host to
    api.url's default and removed the gNB's strategies from the real server."""
    env.write_config()
    main = env.config_path.read_text()
    url = f'url = "{env.api.url}"\n'
    assert url in main
    env.config_path.write_text(main.replace(url, ""))  # api.url set by a drop-in only
    site = env.config_path.parent / "config.d" / "50-site.toml"
    site.parent.mkdir()
    site.write_text(f"[api]\n{url}")
    d = env.start()
    g = gnb(threads=())
    env.writer.write(lines_for(g))
    env.api.wait_post(lambda s: pids(s) == {g.pid})
    n, posts = len(env.notify.all()), len(env.api.posts())
    site.write_text("")
    d.signal(signal.SIGHUP)
    env.notify.wait("READY", "1", after=n)
    d.wait_log(f"reload rejected, keeping the running configuration: {site} is empty now, "
               "and set api.url before: a save still under way?")
    assert "moving away" not in d.log()
    assert all(pids(p.body) == {g.pid} for p in env.api.posts()[posts:])
    site.write_text(f"[api]\n{url}")  # the save done: the next reload takes it
    n = len(env.notify.all())
    d.signal(signal.SIGHUP)
    env.notify.wait("READY", "1", after=n)
    d.wait_log("configuration reloaded: nothing changed")


def test_a_reload_that_opens_a_hole_says_so_as_a_start_would(env: Env) -> None:
    """`systemctl reload` is how drop-ins are applied: emptying match.uid or moving
    api.url to plain http:// on another host is warned about then, not only at start."""
    d = env.start(match={"uid": [os.getuid()]})
    env.api.wait_post(lambda s: True)
    assert "match.uid is empty" not in d.log()
    reload(env, d, match={"uid": []}, api={"url": "http://192.0.2.1:8080", "timeout": 0.5})
    d.wait_log("match.uid is empty: any local user can name a process nr-gnb")
    d.wait_log("api.url http://192.0.2.1:8080 is plain http:// to another host")


def test_reloads_that_replace_an_auto_writer_leave_no_connection_open(
        env: Env, keys: Dict[str, Path], gnb: Callable[..., GnbProcess]) -> None:
    """Each reload that changes the server's identity (here api.public_key's path, the
    same key) makes a new writer and closes the old one.  With api.flavor = auto the
    old writer's Manager delegate kept its client of the node's Decision Maker
    (api.decision_maker_url) open: one kept-alive connection, and its fd, more per
    reload for as long as the daemon ran (a soak with a reload every 30 s held four
    after six reloads)."""
    dm = FakeDecisionMaker(keys["private"].read_bytes()).start()
    manager = FakeManager({"operator": {"password": PASSWORD}}, {NODE},
                          keys["private"].read_bytes(), decision_makers={NODE: dm}).start()
    same_key = env.tmp / "same-public-key.pem"
    same_key.write_bytes(keys["public"].read_bytes())
    same_key.chmod(0o644)
    api = {"url": manager.url, "node_name": NODE, "username": "operator",
           "password_file": str(password_file(env)), "decision_maker_url": dm.url}

    def reads() -> int:
        return len(dm.requests("GET", "/api/v1/scheduling/strategies"))

    try:
        d = start_manager(env, manager, api=api)
        g = gnb(threads=())
        env.writer.write(lines(g))
        dm.wait_for(lambda: reads() >= 1, 10)
        for i in range(4):
            n = reads()
            key = same_key if i % 2 == 0 else keys["public"]
            reload(env, d, api={**api, "public_key": str(key)},
                   strategy={"resync_interval": 1.5})
            dm.wait_for(lambda: reads() > n, 10)  # noqa: B023 (called at once)
        # The Manager's own pushes to the DM close theirs: the daemon's one remains.
        with contextlib.suppress(TimeoutError):
            dm.wait_for(lambda: len(dm.connections) <= 1, 10)
        assert len(dm.connections) <= 1, f"{len(dm.connections)} connections to the DM open"
        assert d.proc.poll() is None
    finally:
        manager.stop()
        dm.stop()


def test_a_reload_that_only_changes_the_urls_case_moves_nothing(
        env: Env, keys: Dict[str, Path], gnb: Callable[..., GnbProcess]) -> None:
    """Scheme and host are case-insensitive: "HTTP://127.0.0.1:P" is the same Manager.
    Kept as typed, the reload took it for a move: this host's policy was deleted and
    another made in its place."""
    m = FakeManager({"operator": {"password": PASSWORD}}, {NODE},
                    keys["private"].read_bytes()).start()
    try:
        d = start_manager(env, m)
        g = gnb(threads=())
        env.writer.write(lines(g))
        m.wait_for(lambda: len(m.policies()) == 1, 5)
        before = m.policies()
        reload(env, d, api={"url": m.url.replace("http://", "HTTP://"), "node_name": NODE,
                            "username": "operator", "password_file": str(password_file(env))},
               strategy={"resync_interval": 1.5})
        d.wait_log("configuration reloaded: nothing changed")
        assert m.policies() == before
    finally:
        m.stop()
