"""The proof inside the guest: the whole chain on the guest's own loopback.

Started by the guest's /init (bench/vm/guest/init.sh) as `python3 -m
bench.vm.guest.run` from /opt/proof; stdlib only.  The plan comes from the
kernel command line (`proof.dm=pr135 proof.reps=3 ...`, see Plan).  What it
finds goes to the second serial port as `PROOF {json}` lines, which the host
reads (bench/vm/qemu.py) and judges (bench/vm/verdict.py): this side runs
things and records, it does not judge.

Order of one boot (one sched_ext enable per boot: the emulation oopses now and
then when a scheduler is enabled, and the host retries the boot):
  1. the real Decision Maker (its run.sh), on 127.0.0.1:8080
  2. EEVDF: the probe under hogs, as the gNB's leader and as a worker thread
  3. Gthulhu's scheduler, kernel_mode true, polling the DM every second
  4. functional: the operator, then a gNB; when does the scheduler's map get
     the gNB's tasks, what does the operator report (its read-back, state.json
     "boost"); the gNB exits: when do they leave the map
  5. effect: the probe under hogs, with the operator stopped and running

Every probe run also records the gNB's tasks' schedstat (run, wait, slices)
read from /proc just before the probe and just after it, in every case alike,
and in the operator's runs the operator's own counters (state.json
"cpu_wait".lifetime) at the same two moments: the wait shares come from those.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterable, List, Optional, Set

from bench.vm import gthulhu_log

PORT = 8080
BIN = Path("/opt/proof/bin")
DM_ROOT = Path("/opt/dm")
GTHULHU = Path("/opt/gthulhu/gthulhu")
SCHED_EXT = Path("/sys/kernel/sched_ext")
OPERATOR_CONFIG = Path("/etc/gtp5g-operator/config.toml")
OPERATOR_KEY = Path("/etc/gtp5g-operator/jwt_public_key.pem")
RUNTIME_DIR = Path("/run/gtp5g-operator")
REPORT_PORT = "/dev/ttyS1"
LOGS = Path("/tmp/proof")
SETTLE_S = 2.0  # hogs and gNB running before the probe starts, in every case alike
HOLD_S = 6.0    # functional: the boost is looked at again this long after it came
READBACK_S = 45.0  # functional: the operator's read-back agrees with the map (resync 10 s)


@dataclass(frozen=True)
class Plan:
    dm: str                 # which Decision Maker build, /opt/dm/<dm>
    expect: str             # what it boosts: "leader" or "threads" (only for waiting)
    reps: int = 3
    secs: float = 10.0      # probe length
    hogs: int = 4
    period_us: int = 1000
    parts: frozenset[str] = frozenset({"functional", "effect"})
    kernel_mode: bool = True  # false: Gthulhu's default user-space mode (a diagnosis)
    # the operator's strategy.liveness_interval: it samples its tasks' schedstat at
    # each liveness pass, so a short one keeps its counters fresh around a probe
    liveness: float = 0.5

    @classmethod
    def from_cmdline(cls, text: str) -> Plan:
        kv = dict(w.split("=", 1) for w in text.split() if w.startswith("proof.") and "=" in w)

        def get(key: str, default: str) -> str:
            return kv.get("proof." + key, default)

        return cls(dm=get("dm", "pr135"), expect=get("expect", "threads"),
                   reps=int(get("reps", "3")), secs=float(get("secs", "10")),
                   hogs=int(get("hogs", "4")), period_us=int(get("period_us", "1000")),
                   parts=frozenset(get("parts", "functional,effect").split(",")),
                   kernel_mode=get("kernel_mode", "true") == "true",
                   liveness=float(get("liveness", "0.5")))


class Reporter:
    def __init__(self, port: str) -> None:
        self._out: IO[str] = open(port, "w")  # noqa: SIM115 - for the whole run

    def __call__(self, kind: str, **fields: Any) -> None:
        line = "PROOF " + json.dumps({"kind": kind, "at": time.time(), **fields},
                                     sort_keys=True)
        self._out.write(line + "\n")
        self._out.flush()
        print(line[:300], flush=True)


def wait_until(cond: Callable[[], Any], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def _tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as exc:
        return f"({exc})"


def sched_ext_state() -> str:
    try:
        return (SCHED_EXT / "state").read_text().strip()
    except OSError:
        return "absent"


# --- the parts of the chain --------------------------------------------------------


class LineReader:
    """A child's stdout, line by line, with a deadline on each line."""

    def __init__(self, stream: IO[str]) -> None:
        self._q: queue.Queue[Optional[str]] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._q.put(line)
        self._q.put(None)

    def line(self, timeout: float) -> Optional[str]:
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None


class Gnb:
    """The gNB-like process (bench/vm/guest/nr_gnb.c), probe at `probe`."""

    def __init__(self, probe: str, plan: Plan) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "nr-gnb"), "-p", probe, "-s", str(plan.secs), "-P", str(plan.period_us)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self._lines = LineReader(self.proc.stdout)
        self.started = self._json("started", 30.0)
        self.tids: Dict[str, int] = self.started["tids"]
        self.tgid: int = self.started["tgid"]

    def _json(self, event: str, timeout: float) -> Dict[str, Any]:
        line = self._lines.line(timeout)
        if not line:
            raise RuntimeError(f"nr-gnb gave no {event} line within {timeout} s")
        data: Dict[str, Any] = json.loads(line)
        if data.get("event") != event:
            raise RuntimeError(f"nr-gnb said {line.strip()!r}, expected {event}")
        return data

    def probe(self, timeout: float) -> Dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return self._json("probe", timeout)

    def stop(self) -> float:
        """Close its stdin (it exits); the wall time it was gone."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return time.time()


class Hogs:
    def __init__(self, n: int) -> None:
        self.procs = [subprocess.Popen([str(BIN / "hog")]) for _ in range(n)]

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


def start_decision_maker(plan: Plan) -> subprocess.Popen[str]:
    d = DM_ROOT / plan.dm
    env = {**os.environ, "GTHULHU_DM_DIR": str(d), "GTHULHU_DM_START_TIMEOUT": "300"}
    with open(LOGS / "dm.log", "w") as log:
        proc = subprocess.Popen([str(d / "run.sh"), str(PORT)], stdout=subprocess.PIPE,
                                stderr=log, text=True, env=env)
    assert proc.stdout is not None
    line = LineReader(proc.stdout).line(320.0) or ""
    if not line.startswith("GTHULHU_DM_LISTEN"):
        raise RuntimeError(f"the Decision Maker did not start: {line!r}; its log ends: "
                           + _tail(LOGS / "dm.log"))
    return proc


class Scheduler:
    """Gthulhu's scheduler, kernel mode (its default user-space mode is ejected by
    the sched_ext watchdog in this VM: proof.kernel_mode=false shows it),
    fetching strategies from the DM every second."""

    def __init__(self, plan: Plan) -> None:
        self.log_path = LOGS / "gthulhu.log"
        config = LOGS / "gthulhu.yaml"
        config.write_text(f"""monitor:
  enabled: false
scheduler:
  slice_ns_default: 20000000
  slice_ns_min: 1000000
  mode: gthulhu
  kernel_mode: {'true' if plan.kernel_mode else 'false'}
  max_time_watchdog: true
api:
  url: http://127.0.0.1:{PORT}
  interval: 1
  public_key_path: {DM_ROOT / plan.dm / 'jwt_public_key.pem'}
  enabled: true
  auth_enabled: true
debug: false
early_processing: false
builtin_idle: false
""")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([str(GTHULHU), "-config", str(config)], stdout=log,
                                         stderr=subprocess.STDOUT, cwd=str(LOGS))
        self.enabled = wait_until(lambda: sched_ext_state() == "enabled", 120.0, 0.2)

    def ops(self) -> str:
        try:
            return (SCHED_EXT / "root/ops").read_text().strip()
        except OSError:
            return ""

    def changes(self) -> List[gthulhu_log.MapChange]:
        return gthulhu_log.map_changes(self.log_path.read_text(errors="replace").splitlines())

    def boosted(self) -> Set[int]:
        return gthulhu_log.boosted_at(self.changes())


class Operator:
    """This tree's operator, installed from its .deb; api.flavor = auto."""

    def __init__(self, plan: Plan) -> None:
        OPERATOR_CONFIG.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DM_ROOT / plan.dm / "jwt_public_key.pem", OPERATOR_KEY)
        OPERATOR_KEY.chmod(0o644)
        OPERATOR_CONFIG.write_text(f"""[trace]
pipe = "auto"

[match]
comm = ["nr-gnb"]

[api]
url = "http://127.0.0.1:{PORT}"
flavor = "auto"
public_key = "{OPERATOR_KEY}"

[strategy]
clear_on_stop = true
liveness_interval = {plan.liveness}
""")
        self.liveness = plan.liveness
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> bool:
        RUNTIME_DIR.mkdir(parents=True, exist_ok=True)  # systemd's RuntimeDirectory=
        self._log = open(LOGS / "operator.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["gtp5g-operator", "--config", str(OPERATOR_CONFIG), "run"], stdout=self._log,
            stderr=subprocess.STDOUT, env={**os.environ, "RUNTIME_DIRECTORY": str(RUNTIME_DIR)})
        return wait_until(lambda: self.state() is not None, 120.0)

    def state(self) -> Optional[Dict[str, Any]]:
        try:
            data: Dict[str, Any] = json.loads((RUNTIME_DIR / "state.json").read_text())
        except (OSError, ValueError):
            return None
        return data

    def tracked_tids(self) -> Set[int]:
        state = self.state() or {}
        return {t for p in state.get("processes", []) for t in p.get("tids", [])}

    def cpu_wait(self) -> Dict[str, Any]:
        cpu = (self.state() or {}).get("cpu_wait")
        return cpu if isinstance(cpu, dict) else {}

    def fresh_cpu_wait(self) -> Dict[str, Any]:
        """state.json's cpu_wait once the operator has sampled again (its lifetime
        counters changed): taken within a poll of a sample, not up to a liveness
        interval old.  The gNB's event tasks run every 100 ms, so the counters move
        at every sample; if they do not (no schedstat), the last one as it is."""
        before = self.cpu_wait().get("lifetime")
        latest: Dict[str, Any] = {}

        def moved() -> bool:
            nonlocal latest
            latest = self.cpu_wait()
            return latest.get("lifetime") != before

        wait_until(moved, 3 * self.liveness + 2.0, 0.02)
        return latest

    def stop(self) -> Optional[int]:
        if self.proc is None:
            return None
        self.proc.terminate()
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._log.close()
        self.proc = None
        return rc


# --- the parts of the proof --------------------------------------------------------


def expected_boost(plan: Plan, gnb: Gnb) -> Set[int]:
    return {gnb.tgid} if plan.expect == "leader" else set(gnb.tids.values())


def functional(plan: Plan, sched: Scheduler, report: Reporter) -> None:
    op = Operator(plan)
    if not op.start():
        report("error", what="the operator wrote no state.json within 120 s")
        return
    gnb = Gnb("none", plan)
    tids = set(gnb.tids.values())
    wait_until(lambda: expected_boost(plan, gnb) <= sched.boosted(), 60.0)
    # let the operator catch up on every thread, and its read-back (after each
    # write and at each resync) on what the DM lists; the host judges whether
    # that account matches the map, this only waits for it to settle
    wait_until(lambda: op.tracked_tids() >= tids, 20.0)
    wait_until(lambda: _read_back_is(op.state(), sched.boosted()), READBACK_S)
    # the boost must hold over several of the scheduler's polls, and the
    # operator's liveness pass must have looked at the scheduler meanwhile
    time.sleep(HOLD_S)
    report("functional-boost", gnb=gnb.started, changes=_changes(sched),
           operator=_operator_view(op.state()), ops=sched.ops())
    exited = gnb.stop()
    wait_until(lambda: not (sched.boosted() & tids), 60.0)
    wait_until(lambda: not (op.tracked_tids() & tids), 20.0)
    report("functional-exit", gnb=gnb.started, exited_at=exited, changes=_changes(sched),
           operator=_operator_view(op.state()))
    report("operator-stopped", rc=op.stop())


def _read_back_is(state: Optional[Dict[str, Any]], in_map: Set[int]) -> bool:
    """Has the operator verified, and does what it read back as listed under its
    rule (covered, unseen, foreign) name the tasks now in the scheduler's map?"""
    boost = (state or {}).get("boost")
    if not isinstance(boost, dict) or boost.get("verified") is not True:
        return False
    listed = {p for k in ("covered", "unseen") for p in boost.get(k) or []}
    listed |= {f.get("pid") for f in boost.get("foreign") or [] if isinstance(f, dict)}
    return bool(in_map) and listed == in_map


def _changes(sched: Scheduler) -> List[List[Any]]:
    return [[c.at, c.pid, c.added] for c in sched.changes()]


def _operator_view(state: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """What the proof compares: tracked tasks, the push, and the read-back keys
    ("boost": the closed loop; "cpu_wait": schedstat counters) where this tree has them."""
    if state is None:
        return None
    keep = ("processes", "api", "last_push", "boost", "cpu_wait", "scheduler", "trace")
    return {k: state[k] for k in keep if k in state}


def read_schedstat(tgid: int, tids: Iterable[int]) -> Dict[str, List[int]]:
    """Each task's run ns, wait ns, slices now (/proc/TGID/task/TID/schedstat),
    as the operator reads them; a task whose file is gone or odd is left out."""
    out: Dict[str, List[int]] = {}
    for tid in tids:
        try:
            fields = Path(f"/proc/{tgid}/task/{tid}/schedstat").read_text().split()[:3]
            out[str(tid)] = [int(f) for f in fields]
        except (OSError, ValueError):
            continue
    return out


def probe_run(plan: Plan, case: str, position: str, rep: int,
              sched: Optional[Scheduler], report: Reporter) -> None:
    marks = {"start": time.monotonic()}

    def mark(name: str) -> None:
        marks[name] = round(time.monotonic() - marks["start"], 2)

    # the operator starts before the hogs (its start-up is not what is measured)
    op = Operator(plan) if case == "gthulhu-operator" else None
    if op is not None and not op.start():
        report("error", what="the operator wrote no state.json within 120 s")
        op.stop()
        return
    mark("operator")
    hogs = Hogs(plan.hogs)
    gnb: Optional[Gnb] = None
    try:
        gnb = Gnb(position, plan)
        g = gnb
        mark("gnb")
        time.sleep(SETTLE_S)
        if op is not None and sched is not None:
            wait_until(lambda: expected_boost(plan, g) <= sched.boosted(), 30.0)
        boosted = sorted(sched.boosted() & set(gnb.tids.values())) if sched else []
        # the counters right before and right after the probe (the gNB lives on,
        # idle, until its stdin closes); the operator's first, its sample being
        # the one that cannot be timed
        op_before = op.fresh_cpu_wait() if op is not None else None
        direct_before = read_schedstat(gnb.tgid, gnb.tids.values())
        mark("go")
        result = gnb.probe(plan.secs * 4 + 60)
        direct_after = read_schedstat(gnb.tgid, gnb.tids.values())
        op_after = op.fresh_cpu_wait() if op is not None else None
        mark("probed")
        report("probe", case=case, position=position, rep=rep, dm=plan.dm, boosted=boosted,
               gnb=gnb.started, result=result, sched_ext=sched_ext_state(),
               ops=sched.ops() if sched else "",
               operator=_operator_view(op.state()) if op is not None else None,
               schedstat={"before": direct_before, "after": direct_after},
               operator_cpu_wait=None if op is None else {"before": op_before,
                                                          "after": op_after},
               marks={k: v for k, v in marks.items() if k != "start"})
    finally:
        if gnb is not None:
            gnb.stop()
        hogs.stop()
        if op is not None:
            op.stop()
    if sched is not None and gnb is not None:
        gone = set(gnb.tids.values())
        wait_until(lambda: not (sched.boosted() & gone), 30.0)


def effect_eevdf(plan: Plan, report: Reporter) -> None:
    for rep in range(1, plan.reps + 1):
        for position in ("leader", "worker"):
            probe_run(plan, "eevdf", position, rep, None, report)


def effect_gthulhu(plan: Plan, sched: Scheduler, report: Reporter) -> None:
    cases = ["gthulhu-stopped", "gthulhu-operator"]
    for rep in range(1, plan.reps + 1):
        for position in ("leader", "worker"):
            # alternate which case goes first, so a drift in the host's load
            # does not always favour the same one
            for case in cases if rep % 2 else reversed(cases):
                if sched_ext_state() != "enabled":
                    report("error", what=f"the scheduler is gone: sched_ext {sched_ext_state()}")
                    return
                probe_run(plan, case, position, rep, sched, report)


def main() -> int:
    LOGS.mkdir(parents=True, exist_ok=True)
    plan = Plan.from_cmdline(Path("/proc/cmdline").read_text())
    report = Reporter(REPORT_PORT)
    report("plan", dm=plan.dm, expect=plan.expect, kernel_mode=plan.kernel_mode,
           liveness=plan.liveness,
           reps=plan.reps, secs=plan.secs,
           hogs=plan.hogs, period_us=plan.period_us, parts=sorted(plan.parts),
           kernel=os.uname().release, cpus=os.cpu_count())
    dm = start_decision_maker(plan)
    report("dm-ready")
    if "effect" in plan.parts:
        effect_eevdf(plan, report)
    sched = Scheduler(plan)
    report("scheduler", enabled=sched.enabled, state=sched_ext_state(), ops=sched.ops())
    if sched.enabled:
        if "functional" in plan.parts:
            functional(plan, sched, report)
        if "effect" in plan.parts:
            effect_gthulhu(plan, sched, report)
    report("scheduler-log", lines=(LOGS / "gthulhu.log").read_text(errors="replace")
           .splitlines()[-30:], state=sched_ext_state())
    # No disabling of the scheduler nor stopping of the DM: /init powers off
    # next, and a second sched_ext transition would be a second chance to oops.
    report("done", dm_running=dm.poll() is None)
    return 0


def guarded() -> int:
    """main(), and a crash of it told to the host (whose boot then counts as failed)."""
    try:
        return main()
    except Exception as exc:
        with open(REPORT_PORT, "w") as port:
            port.write("PROOF " + json.dumps({"kind": "error", "what": repr(exc),
                                               "trace": traceback.format_exc()[-2000:]}) + "\n")
        raise


if __name__ == "__main__":
    raise SystemExit(guarded())
