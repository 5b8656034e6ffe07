"""The main job on an embedded default: no 5G testbed needed.

Starts a local Gthulhu server of the chosen flavor — the 2025 API (v0, the
default), a Decision Maker, or a Manager with a Decision Maker behind it —
real processes named like UERANSIM's gNB (and a decoy named nr-gnbx), a FIFO
standing in for trace_pipe, and the real daemon with `api.flavor = "auto"`.
It then replays a trace recorded from the kernel
(testbed/data/recorded-gtp5g-trace.txt: bpf_printk lines of the gtp5g-tracer
format, first lines showing <...>), with the recorded task IDs mapped onto the
live processes, and shows what the server holds — and, for the new flavors,
the strategies the scheduler would read — as the gNB's threads and process
come and go.  Exits 0 when every step came out as expected.

Run: make demo [FLAVOR=v0|decision-maker|manager]
     (or: python3 -m testbed.demo --flavor decision-maker)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set

from testbed.fake_decision_maker import FakeDecisionMaker
from testbed.fake_gthulhu import FakeGthulhu, make_keypair
from testbed.fake_manager import FakeManager
from testbed.harness import REPO, GnbProcess, TraceWriter, wait_until, write_config

RECORDED = Path(__file__).resolve().parent / "data" / "recorded-gtp5g-trace.txt"
# Recorded IDs: 29493 is the gNB process (leader), 29534-29536 its threads,
# 29537 another process.
LEADER, THREADS, OTHER = 29493, {29534: "nr-gnb", 29535: "nr-gnb-rlc", 29536: "gnb worker"}, 29537
NODE = "demo-node"


def say(text: str) -> None:
    print(f"\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"==> {text}", flush=True)


def remap(text: str, mapping: Dict[int, int]) -> str:
    return re.sub(r"\d{5}", lambda m: str(mapping.get(int(m.group()), m.group())), text)


class Server:
    """The flavor's server(s), and how to read what they hold now."""

    def __init__(self, flavor: str, tmp: Path) -> None:
        private, self.public = make_keypair(tmp)
        key = private.read_bytes()
        self.flavor = flavor
        self.v0: Optional[FakeGthulhu] = None
        self.dm: Optional[FakeDecisionMaker] = None
        self.manager: Optional[FakeManager] = None
        self.api: Dict[str, Any] = {"public_key": str(self.public), "timeout": 2.0,
                                    "node_name": NODE}
        if flavor == "v0":
            self.v0 = FakeGthulhu(key).start()
            self.api["url"] = self.v0.url
            return
        self.dm = FakeDecisionMaker(key).start()
        self.api["url"] = self.dm.url
        if flavor == "manager":
            password = tmp / "gthulhu-password"
            password.write_text("demo-Passw0rd\n")
            password.chmod(0o600)
            self.manager = FakeManager({"operator": {"password": "demo-Passw0rd"}}, {NODE},
                                       key, decision_makers={NODE: self.dm}).start()
            # the Manager resolves no PIDs: read back from the node's Decision Maker
            self.api.update(url=self.manager.url, username="operator",
                            password_file=str(password), decision_maker_url=self.dm.url)

    def held(self) -> Any:
        """What the server holds for this host."""
        if self.v0 is not None:
            return self.v0.strategies or []
        if self.manager is not None:
            return [{k: p[k] for k in ("id", "nodeNames", "commandRegex", "priority",
                                       "executionTime")} for p in self.manager.policies()]
        assert self.dm is not None
        return self.dm.rules()

    def scheduler_pids(self) -> Set[int]:
        """The PIDs the scheduler would boost now."""
        if self.v0 is not None:
            return {s["pid"] for s in self.v0.strategies or []}
        assert self.dm is not None
        return {s["pid"] for s in self.dm.strategies()}

    def stop(self) -> None:
        for server in (self.manager, self.dm, self.v0):
            if server is not None:
                server.stop()


def expect(what: str, check: Callable[[], bool], server: Server, state: Path,
           tasks: int) -> bool:
    try:
        wait_until(check, 10, what)
    except AssertionError:
        say(f"NOT OK: {what}; the server holds {json.dumps(server.held())}")
        return False
    say(f"ok: {what}")
    print("    server holds:       " + json.dumps(server.held()), flush=True)
    if server.flavor != "v0":
        print(f"    scheduler would read: PIDs {sorted(server.scheduler_pids())}", flush=True)
    said = read_back(state, tasks)
    if said:
        print(f"    operator read back: {said}", flush=True)
    return True


NOTHING = {"nothing": "tracked"}


def read_back(state: Path, tasks: int) -> str:
    """The operator's own account of what the scheduler boosts (its state.json), once
    it tracks the `tasks` the step expects and has read back after the write that
    matches them: a state.json that tracks others is one not yet rewritten after the
    push the step saw on the server (the Manager's first one, often; the gNB's
    exit), not the operator's account of that step."""
    def consistent() -> Any:
        try:
            s = json.loads(state.read_text())
        except (OSError, ValueError):
            return None
        tracked = sum(len(p["tids"]) for p in s["processes"])
        boost = s["boost"]
        if tracked != tasks:
            return None
        if not tracked:
            return NOTHING  # nothing to read back
        if not boost.get("verified"):
            return None
        counted = len(boost["covered"]) + len(boost["missing"])
        return boost if counted == tracked else None

    try:
        boost = wait_until(consistent, 10, "the operator's read-back")
    except AssertionError:
        return ""
    if boost is NOTHING:
        return ""
    return (f"{len(boost['covered'])} covered, {len(boost['missing'])} missing, "
            f"{len(boost['foreign'])} foreign: {boost['diagnosis']}")


def run_demo(flavor: str) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="gtp5g-demo-"))
    server = Server(flavor, tmp)
    fifo = tmp / "debugfs" / "tracing" / "trace_pipe"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    config = write_config(tmp / "config.toml", trace={"pipe": str(fifo)}, api=server.api,
                          strategy={"liveness_interval": 1.0, "resync_interval": 3.0})
    say(f"{flavor} server on {server.api['url']}; config {config} (api.flavor = auto)")
    gnb = GnbProcess("nr-gnb", ("nr-gnb", "nr-gnb-rlc", "gnb worker"))
    decoy = GnbProcess("nr-gnbx", ())
    say(f"nr-gnb process {gnb.pid} with threads {gnb.threads}; decoy nr-gnbx {decoy.pid}")
    daemon = subprocess.Popen([sys.executable, "-m", "gtp5g_operator", "--config", str(config)],
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO),
                                             "RUNTIME_DIRECTORY": str(tmp / "run"),
                                             "STATE_DIRECTORY": str(tmp / "state")})
    writer = TraceWriter(fifo)
    try:
        return 0 if replay(server, writer, gnb, decoy, tmp / "run" / "state.json") else 1
    finally:
        daemon.terminate()
        daemon.wait(10)
        writer.close()  # after the daemon: it would log the FIFO's end of file
        decoy.stop()
        gnb.stop()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def replay(server: Server, writer: TraceWriter, gnb: GnbProcess, decoy: GnbProcess,
           state: Path) -> bool:
    writer.open()
    mapping = {LEADER: gnb.pid, OTHER: decoy.pid}
    mapping.update({rec: gnb.threads[name] for rec, name in THREADS.items()})
    say(f"replaying {RECORDED.name} ({len(RECORDED.read_text().splitlines())} lines)")
    writer.write(remap(RECORDED.read_text(), mapping))
    steps: List[Callable[[], bool]] = [
        lambda: expect("all nr-gnb tasks boosted, the decoy not",
                       lambda: boosted(server, gnb, {"nr-gnb", "nr-gnb-rlc", "gnb worker"}),
                       server, state, len(gnb.tids)),
        lambda: step(lambda: gnb.exit_thread("gnb worker"), "thread 'gnb worker' exits"),
        lambda: expect("the exited thread is removed",
                       lambda: boosted(server, gnb, {"nr-gnb", "nr-gnb-rlc"}), server, state,
                       len(gnb.tids)),
        lambda: step(gnb.stop, "the nr-gnb process exits"),
        lambda: expect("nothing is boosted any more (stale entries cleared)",
                       lambda: server.held() == [], server, state, 0),
    ]
    ok = all(s() for s in steps)
    say("demo " + ("succeeded" if ok else "FAILED"))
    return ok


def step(action: Callable[[], None], text: str) -> bool:
    say(text)
    action()
    return True


def boosted(server: Server, gnb: GnbProcess, names: Set[str]) -> bool:
    if server.flavor == "v0":  # the IDs themselves
        return server.scheduler_pids() == set(gnb.tids)
    regex = "^(?:" + "|".join(sorted(names)) + ")$"
    held = server.held()
    return (len(held) == 1 and held[0]["commandRegex"] == regex
            and gnb.pid in server.scheduler_pids())


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flavor", default=os.environ.get("FLAVOR") or "v0",
                    choices=("v0", "decision-maker", "manager"))
    return run_demo(ap.parse_args(argv).flavor)


if __name__ == "__main__":
    sys.exit(main())
