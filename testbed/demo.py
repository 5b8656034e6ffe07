"""The main job on an embedded default: no 5G testbed needed.

Starts a local Gthulhu-compatible API (RS256 tokens), real processes named like
UERANSIM's gNB (and a decoy named nr-gnbx), a FIFO standing in for trace_pipe,
and the real daemon.  It then replays a trace recorded from the kernel
(testbed/data/recorded-gtp5g-trace.txt: bpf_printk lines of the gtp5g-tracer
format, first lines showing <...>), with the recorded task IDs mapped onto the
live processes, and shows what the API receives as the gNB's threads and
process come and go.  Exits 0 when every step came out as expected.

Run: make demo   (or: python3 -m testbed.demo)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Set

from testbed.fake_gthulhu import FakeGthulhu, make_keypair
from testbed.harness import REPO, GnbProcess, TraceWriter, write_config

RECORDED = Path(__file__).resolve().parent / "data" / "recorded-gtp5g-trace.txt"
# Recorded IDs: 29493 is the gNB process (leader), 29534-29536 its threads,
# 29537 another process.
LEADER, THREADS, OTHER = 29493, {29534: "nr-gnb", 29535: "nr-gnb-rlc", 29536: "gnb worker"}, 29537


def say(text: str) -> None:
    print(f"\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"==> {text}", flush=True)


def remap(text: str, mapping: Dict[int, int]) -> str:
    return re.sub(r"\d{5}", lambda m: str(mapping.get(int(m.group()), m.group())), text)


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="gtp5g-demo-"))
    private, public = make_keypair(tmp)
    api = FakeGthulhu(private.read_bytes()).start()
    fifo = tmp / "debugfs" / "tracing" / "trace_pipe"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    config = write_config(tmp / "config.toml",
                          trace={"pipe": str(fifo)},
                          api={"url": api.url, "public_key": str(public), "timeout": 2.0},
                          strategy={"liveness_interval": 1.0})
    say(f"Gthulhu-compatible API on {api.url}; config {config}")
    gnb = GnbProcess("nr-gnb", ("nr-gnb", "nr-gnb-rlc", "gnb worker"))
    decoy = GnbProcess("nr-gnbx", ())
    say(f"nr-gnb process {gnb.pid} with threads {gnb.threads}; decoy nr-gnbx {decoy.pid}")
    daemon = subprocess.Popen([sys.executable, "-m", "gtp5g_operator", "--config", str(config)],
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO),
                                             "RUNTIME_DIRECTORY": str(tmp / "run"),
                                             "STATE_DIRECTORY": str(tmp / "state")})
    ok = True
    try:
        writer = TraceWriter(fifo)
        writer.open()
        mapping = {LEADER: gnb.pid, OTHER: decoy.pid}
        mapping.update({rec: gnb.threads[name] for rec, name in THREADS.items()})
        say(f"replaying {RECORDED.name} ({len(RECORDED.read_text().splitlines())} lines)")
        writer.write(remap(RECORDED.read_text(), mapping))
        ok &= expect(api, set(gnb.tids), "all nr-gnb tasks boosted, decoy not")
        say("thread 'gnb worker' exits")
        gnb.exit_thread("gnb worker")
        ok &= expect(api, set(gnb.tids), "the exited thread is removed")
        say("the nr-gnb process exits")
        gnb.stop()
        ok &= expect(api, set(), "the empty set is pushed (stale strategies cleared)")
        writer.close()
    finally:
        daemon.terminate()
        daemon.wait(10)
        decoy.stop()
        gnb.stop()
        api.stop()
    say("demo " + ("succeeded" if ok else "FAILED"))
    return 0 if ok else 1


def expect(api: FakeGthulhu, want: Set[int], what: str) -> bool:
    try:
        post = api.wait_post(lambda s: {x["pid"] for x in s} == want, timeout=10)
    except TimeoutError:
        last = api.posts()[-1].body if api.posts() else None
        say(f"NOT OK: {what}: wanted {sorted(want)}, API last got {last}")
        return False
    say(f"ok: {what}: API got {post.body['strategies']}")
    return True


if __name__ == "__main__":
    sys.exit(main())
