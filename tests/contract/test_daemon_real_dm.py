"""The real daemon against the real Decision Maker (each build), as a user would run
them: `api.flavor = "auto"` must find the DM, write its rule, and the strategies the
scheduler reads must list the gNB; a restarted DM (rules are in memory only) gets the
rule back; a gNB that is gone takes the rule with it."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Set

import pytest

from testbed.fake_decision_maker import EMPTY_ROOT, node_policy_hash
from testbed.harness import DaemonProcess, GnbProcess, NotifySocket, TraceWriter, wait_until
from testbed.harness import write_config as write_toml
from testbed.tracelines import gtp5g_line
from tests.conftest import base_config
from tests.contract.conftest import MERKLE, STRATEGIES
from tests.contract.real_dm import DMBuild, RealDecisionMaker
from tests.contract.transcript import request

pytestmark = pytest.mark.contract

NODE = "node-a"
DEADLINE = 20.0  # generous: CI hosts are loaded


class DMClient:
    """A token holder for reading the DM as the scheduler would."""

    def __init__(self, dm: RealDecisionMaker) -> None:
        self.dm = dm
        answer = request(dm.url, "POST", "/api/v1/auth/token",
                         {"public_key": dm.build.public_key(), "client_id": "contract-reader"})
        assert answer.status == 200, answer
        self.token = str(answer.json()["data"]["token"])

    def listed(self) -> Set[int]:
        answer = request(self.dm.url, "GET", STRATEGIES, token=self.token)
        assert answer.status == 200, answer
        return {int(e["pid"]) for e in answer.json()["scheduling"]}

    def root(self) -> str:
        answer = request(self.dm.url, "GET", MERKLE, token=self.token)
        assert answer.status == 200, answer
        return str(answer.json()["data"]["rootHash"])


@pytest.fixture
def cleanup() -> Iterator[List[Callable[[], Any]]]:
    """Stop functions, called last first (each one, whatever the others do)."""
    stops: List[Callable[[], Any]] = []
    with contextlib.ExitStack() as stack:
        yield stops
        for stop in stops:
            stack.callback(stop)


def expected_rule(regex: str) -> Dict[str, Any]:
    return {"policyID": f"gtp5g-operator@{NODE}", "nodeID": NODE, "commandRegex": regex,
            "priority": 1, "executionTime": 20_000_000}


def test_the_daemon_drives_the_real_decision_maker(
        dm_build: DMBuild, tmp_path: Path, cleanup: List[Callable[[], Any]]) -> None:
    dm = RealDecisionMaker(dm_build, tmp_path)
    cleanup.append(lambda: dm.stop())  # the DM of the moment (it is restarted below)
    pipe = tmp_path / "trace_pipe"
    os.mkfifo(pipe)
    notify = NotifySocket(tmp_path / "notify.sock")
    cleanup.append(notify.close)
    config = write_toml(tmp_path / "config.toml", **base_config(
        pipe, dm.url, dm_build.directory / "jwt_public_key.pem",
        api={"node_name": NODE, "timeout": 1.0}, strategy={"resync_interval": 1.5}))
    daemon = DaemonProcess(config, notify, tmp_path / "daemon.log")
    cleanup.append(daemon.stop)
    wait_until(lambda: any(m.get("READY") == "1" for m in notify.all())
               or daemon.proc.poll() is not None, DEADLINE, "the daemon to be ready")
    assert daemon.proc.poll() is None, daemon.log()
    writer = TraceWriter(pipe)
    cleanup.append(writer.close)
    gnb = GnbProcess(name="nr-gnb", threads=("nr-gnb-rlc", "gnb worker"))
    cleanup.append(gnb.stop)
    writer.write("".join(gtp5g_line("nr-gnb", tid, gnb.pid)
                         for tid in (gnb.pid, gnb.threads["nr-gnb-rlc"])))
    reader = DMClient(dm)
    want = {gnb.pid, gnb.threads["nr-gnb-rlc"]} if dm_build.match_threads else {gnb.pid}
    wait_until(lambda: want <= reader.listed(), DEADLINE, f"the DM to list {want}")
    daemon.wait_log("is a Gthulhu Decision Maker (api.flavor = auto)", DEADLINE)
    assert gnb.threads["gnb worker"] not in reader.listed()  # never seen in the trace
    rule = expected_rule("^(?:nr-gnb|nr-gnb-rlc)$")
    assert reader.root() == node_policy_hash(rule)  # one rule: the root is its hash

    # a DM restart loses the rules; the daemon's resync writes it again
    port = int(dm.address.rsplit(":", 1)[1])
    dm.stop()
    dm = RealDecisionMaker(dm_build, tmp_path, port=port)
    reader = DMClient(dm)
    wait_until(lambda: want <= reader.listed(), DEADLINE, "the rule to be written again")
    assert reader.root() == node_policy_hash(rule)

    gnb.stop()  # no target left: the daemon deletes its rule
    wait_until(lambda: reader.root() == EMPTY_ROOT, DEADLINE, "the rule to be deleted")
    assert not want & reader.listed()
    log = daemon.log()
    assert "Traceback" not in log, log
    writer.close()
    assert daemon.stop() == 0, daemon.log()
    dm.stop()
