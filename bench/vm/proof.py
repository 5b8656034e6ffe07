"""`make vm-proof`: the whole chain on a real sched_ext kernel, in QEMU guests.

    python3 -m bench.vm [--reps N] [--secs S] [--dm NAME ...] [--functional-only]
    python3 -m bench.vm --rejudge bench/results/vm-proof-DATE.json

Builds or reuses the artefacts (bench/vm/artefacts.py), packs the guest root,
boots one guest per Decision Maker build (v1.3.0: leaders only; pr135: every
thread), retrying a boot whose kernel oopsed, and judges what they reported
(bench/vm/verdict.py).  Writes bench/results/vm-proof-<date>.{md,json}; its
last lines are the verdict.  Exit 0 when the functional part holds for every
DM build, 1 when it does not, 2 when the artefacts could not be had.
--rejudge judges the records of an earlier run's .json again (no boot) and
rewrites its .md: for a change of the verdict, not of what the guest does.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from bench.vm import artefacts, guest_root, layout, qemu, verdict
from bench.vm.artefacts import BuildError, Cost
from bench.vm.layout import REPO, Layout

RESULTS = REPO / "bench" / "results"
ICOUNT_SHIFT = 1  # 2 ns per instruction: a guest of 500 MIPS, its clock close to the host's


@dataclass
class DmRun:
    name: str
    expect: str
    records: List[Dict[str, Any]] = field(default_factory=list)
    boots: int = 0
    oopses: List[str] = field(default_factory=list)
    failures: List[str] = field(default_factory=list)   # boots that ended without "done"
    seconds: float = 0.0


def say(msg: str) -> None:
    print(f"vm-proof: {msg}", flush=True)


def _progress(dm: str) -> Callable[[Mapping[str, Any]], None]:
    """One line per thing the guest reports, as it reports it."""

    def show(r: Mapping[str, Any]) -> None:
        kind = r.get("kind")
        if kind == "probe":
            res = r["result"]
            say(f"  {dm}: {r['case']} {r['position']} run {r['rep']}: p99 "
                f"{res['p99_us'] / 1000:.1f} ms, p50 {res['p50_us'] / 1000:.2f} ms"
                f"{', probe boosted' if res['tid'] in r.get('boosted', []) else ''}")
        elif kind == "scheduler-log":
            for line in [x for x in r.get("lines", []) if "uei" in x or "stall" in x][-2:]:
                say(f"  {dm}: scheduler's log: {line[:160]}")
        elif kind in ("scheduler", "error", "functional-boost", "functional-exit", "dm-ready",
                      "plan"):
            brief = {k: v for k, v in r.items() if k in ("enabled", "ops", "state", "what",
                                                         "kernel", "cpus")}
            say(f"  {dm}: {kind} {json.dumps(brief) if brief else ''}")
    return show


def shift(args: argparse.Namespace) -> Optional[int]:
    return args.icount_shift if args.clock == "virtual" else None


def clock_text(args: argparse.Namespace) -> str:
    if args.clock == "virtual":
        return f"one TCG thread, virtual clock {2 ** args.icount_shift} ns per instruction"
    return "multi-threaded TCG, host clock"


def boot_timeout(reps: int, secs: float, functional_only: bool) -> float:
    """Generous: an emulated guest on a loaded 2-core host runs slow."""
    runs = 0 if functional_only else reps * 6
    return 900.0 + runs * (secs + 40.0) * 3.0


def run_dm(lay: Layout, initrd: Path, name: str, args: argparse.Namespace) -> DmRun:
    run = DmRun(name, layout.DM_BOOSTS[name])
    parts = "functional" if args.functional_only else "functional,effect"
    cmdline = (f"proof.dm={name} proof.expect={run.expect} proof.reps={args.reps} "
               f"proof.secs={args.secs} proof.hogs={args.hogs} proof.parts={parts} "
               f"proof.kernel_mode={'false' if args.user_mode else 'true'} "
               f"proof.liveness={args.liveness}")
    start = time.monotonic()
    for attempt in range(1, args.tries + 1):
        run.boots += 1
        say(f"DM {name}: boot {attempt} (emulated, {qemu.SMP} vCPUs, {clock_text(args)})")
        b = qemu.boot(lay, initrd, cmdline, f"{name}-boot{attempt}",
                      boot_timeout(args.reps, args.secs, args.functional_only), _progress(name),
                      shift(args))
        oops = b.oops
        if oops is not None:
            run.oopses.append(oops)
            say(f"DM {name}: boot {attempt} oopsed ({oops[:100]}); booting again")
            continue
        if not b.finished:
            run.failures.append(f"boot {attempt}: no end report (console {b.console})")
            say(f"DM {name}: boot {attempt} ended without its report; booting again")
            continue
        run.records = b.records
        break
    run.seconds = time.monotonic() - start
    return run


def build(lay: Layout, dms: Sequence[str], costs: List[Cost]) -> Dict[str, Any]:
    missing, sources = artefacts.missing_cached(lay), lay.missing_sources()
    if missing and sources:
        raise BuildError(f"{missing}; and it cannot be built here: {sources}")
    t = time.monotonic()
    versions = artefacts.recipe_world(lay)
    costs.append(Cost("kernel, QEMU, Gthulhu (vm-schedext)", time.monotonic() - t, False))
    dm_dirs = {}
    for name, rev, commit in layout.DM_BUILDS:
        if name in dms:
            t = time.monotonic()
            dm_dirs[name] = artefacts.decision_maker(lay, name, rev, commit)
            versions[f"dm {name}"] = artefacts.dm_source_line(dm_dirs[name])
            costs.append(Cost(f"Decision Maker {name}", time.monotonic() - t, False))
    t = time.monotonic()
    base = artefacts.guest_base(lay)
    bins = artefacts.guest_binaries(lay)
    deb = artefacts.operator_deb(lay)
    initrd = guest_root.assemble(lay, base, deb, dm_dirs, bins)
    costs.append(Cost("guest root (debootstrap, .deb, cpio)", time.monotonic() - t, False))
    versions["operator"] = deb.name
    return {"versions": versions, "initrd": initrd}


def report_lines(runs: Sequence[DmRun], args: argparse.Namespace) -> List[str]:
    reps, functional_only = args.reps, args.functional_only
    out: List[str] = []
    funcs = {r.name: verdict.judge_functional(r.name, r.expect, r.records) for r in runs}
    rows = [row for r in runs for row in verdict.effect_rows(r.name, r.records)]
    waits = {r.name: verdict.wait_rows(r.name, r.records, rows) for r in runs}
    if not functional_only:
        for metric in ("p99", "p50"):
            out.append(f"Probe {metric} wake-up lateness, ms, median [min-max] of the runs; "
                       f"emulated, ratios only ({reps} runs per cell, one boot per DM build; "
                       f"{clock_text(args)}; {args.hogs} hogs on {qemu.SMP} vCPUs, a wake-up "
                       f"every 1 ms for {args.secs:g} s):")
            out += verdict.effect_table(rows, metric)
        out.append("CPU wait share over the probe runs (schedstat: wait / (run + wait) of "
                   "the gNB's tasks, and of the probe's own task, read in the guest from "
                   "/proc just before and after each probe; the operator's own reading is "
                   "its cpu_wait.lifetime at the same moments, its liveness_interval "
                   f"{args.liveness:g} s), median of the runs; a move of less than "
                   f"{verdict.FLAT:.0%} is flat:")
        out += verdict.wait_table([w for r in runs for w in waits[r.name]])
    for r in runs:
        f = funcs[r.name]
        out.append(f"DM {r.name}: functional {'ok' if f.ok else 'FAILED'}: {f.summary()}")
        out.append(f"DM {r.name}: {f.readback.text}")
        if not functional_only:
            probes = [x for x in r.records if x.get("kind") == "probe"]
            out.append(f"DM {r.name}: {verdict.wait_share_line(waits[r.name], probes)}")
        out.append(f"DM {r.name}: boots {r.boots}, oops retries {len(r.oopses)}"
                   + (f", other failed boots {len(r.failures)}" if r.failures else "")
                   + f", {r.seconds / 60:.1f} min")
    out.append(final_line(runs, funcs, rows, [w for ws in waits.values() for w in ws], reps,
                          functional_only))
    return out


def final_line(runs: Sequence[DmRun], funcs: Mapping[str, verdict.Functional],
               rows: Sequence[verdict.EffectRow], waits: Sequence[verdict.WaitRow],
               reps: int, functional_only: bool) -> str:
    """The issue's last line: the functional verdict with the operator's account of
    it (the thread-aware DM first), then the boost's effect: p99 with / without the
    operator under the thread-aware DM, the worker probe's under the leader-only
    DM, and the gNB's wait share under the thread-aware DM, which way it moved."""
    ok = bool(funcs) and all(f.ok for f in funcs.values())
    order = sorted(funcs.values(), key=lambda f: f.expect != "threads")
    parts = [f"{f.dm}: {f.brief(short=i > 0)}" for i, f in enumerate(order)]
    head = f"vm-proof: functional {'ok' if ok else 'FAILED'} ({'; '.join(parts) or 'no DM run'})"
    if functional_only:
        return head
    by = {(row.dm, row.position): row for row in rows}
    boosted = by.get(("pr135", "leader"))
    leader_only = by.get(("v1.3.0", "worker"))
    oopses = sum(len(r.oopses) for r in runs)
    both = verdict.fmt_ratio(boosted.boost_ratio() if boosted else None)
    worker = verdict.fmt_ratio(leader_only.boost_ratio() if leader_only else None)
    wait = next((w for w in waits if (w.dm, w.position) == ("pr135", "leader")), None)
    wait_text = ("gNB wait share not measured" if wait is None or wait.direction() == "-" else
                 f"gNB wait share {wait.change()} with the boost (the operator's own reading "
                 f"{verdict.pct(wait.operator)}), "
                 + ("the same way as the p99" if wait.direction().startswith("same")
                    else f"NOT the way the p99 moved ({wait.direction()})"))
    return (head + f"; p99 boosted/unboosted {both} ({reps} runs), leader-only DM: worker "
            f"probe {worker}; {wait_text}; emulated, ratios only; oops retries {oopses}")


def host_facts() -> str:
    """CPU model, cores, kernel and load: the emulation's speed depends on them
    (the virtual clock's figures do not)."""
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, Linux {os.uname().release}, load average {load}"


def write_results(lines: Sequence[str], runs: Sequence[DmRun], versions: Mapping[str, str],
                  costs: Sequence[Cost], args: argparse.Namespace) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    day = datetime.date.today().isoformat()
    md = RESULTS / f"vm-proof-{day}.md"
    header = [f"# vm-proof {day}", "", f"- host: {host_facts()}"] + [
        f"- {k}: {v}" for k, v in versions.items()] + [
        f"- cost: {c.name} {c.seconds / 60:.1f} min" for c in costs] + [""]
    md.write_text("\n".join(header + list(lines)) + "\n")
    (RESULTS / f"vm-proof-{day}.json").write_text(json.dumps({
        "header": header,
        "args": {k: v for k, v in vars(args).items() if k != "rejudge"},
        "versions": dict(versions),
        "costs": [{"name": c.name, "seconds": round(c.seconds, 1)} for c in costs],
        "runs": [{"dm": r.name, "boots": r.boots, "oopses": r.oopses, "failures": r.failures,
                  "seconds": round(r.seconds, 1), "records": r.records} for r in runs],
    }, indent=1) + "\n")
    return md


def rejudge(path: Path, defaults: argparse.Namespace) -> int:
    """Judge a stored run's records again; rewrite the .md beside its .json.  The
    header (host, versions, costs) and the run's options come from the .json, or,
    for a .json from before they were stored, from the .md's first block and the
    options' defaults (what `make vm-proof` runs)."""
    try:
        data = json.loads(path.read_text())
        runs = [DmRun(r["dm"], layout.DM_BOOSTS[r["dm"]], r["records"], r["boots"],
                      r["oopses"], r["failures"], r["seconds"]) for r in data["runs"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"vm-proof: {path}: not a vm-proof result ({exc!r:.120})", file=sys.stderr)
        return 2
    args = argparse.Namespace(**{**vars(defaults), **data.get("args", {})})
    md = path.with_suffix(".md")
    header = data.get("header")
    if header is None:
        old = md.read_text().split("\n\n", 2) if md.exists() else []
        header = [*old[0].splitlines(), "", *old[1].splitlines(), ""] if len(old) > 2 else []
    lines = report_lines(runs, args)
    note = [f"(judged again from {path.name} by `python3 -m bench.vm --rejudge`)", ""]
    md.write_text("\n".join(list(header) + note + lines) + "\n")
    print("\n".join(lines), flush=True)
    return 0 if all(verdict.judge_functional(r.name, r.expect, r.records).ok for r in runs) else 1


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 -m bench.vm", description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=3, help="probe runs per case (default 3)")
    p.add_argument("--secs", type=float, default=10.0, help="probe length, s (default 10)")
    p.add_argument("--hogs", type=int, default=4, help="busy loops beside the probe (default 4)")
    p.add_argument("--dm", action="append", choices=[n for n, _, _ in layout.DM_BUILDS],
                   help="Decision Maker build(s) to boot with (default: all)")
    p.add_argument("--tries", type=int, default=4, help="boots per DM build (oops retries)")
    p.add_argument("--clock", choices=("virtual", "host"), default="virtual",
                   help="virtual (default): one TCG thread and an instruction-counted clock "
                        "(-icount), so the guest's latencies do not depend on the host's load; "
                        "host: multi-threaded TCG on the host's clock, as the vm-schedext "
                        "recipe measured (its scheduler enables oops now and then)")
    p.add_argument("--icount-shift", type=int, default=ICOUNT_SHIFT,
                   help=f"virtual clock: 2**N ns per guest instruction (default {ICOUNT_SHIFT})")
    p.add_argument("--functional-only", action="store_true", help="skip the effect runs")
    p.add_argument("--user-mode", action="store_true",
                   help="diagnosis: run Gthulhu in its default user-space mode (kernel_mode "
                        "false), which the sched_ext watchdog ejects in these guests")
    p.add_argument("--liveness", type=float, default=0.5,
                   help="the operator's strategy.liveness_interval in the guest, s (default "
                        "0.5: its CPU-wait counters are sampled that often)")
    p.add_argument("--no-results", action="store_true", help="do not write bench/results/")
    p.add_argument("--rejudge", type=Path, metavar="JSON",
                   help="judge the records of an earlier run's results .json again (no boot) "
                        "and rewrite the .md beside it")
    args = p.parse_args(argv)
    if args.reps < 1 or args.secs <= 0 or args.hogs < 0 or args.tries < 1:
        p.error("--reps and --tries must be >= 1, --secs > 0, --hogs >= 0")
    if not 0.1 <= args.liveness <= 60:
        p.error("--liveness must be between 0.1 and 60 s")
    if not 0 <= args.icount_shift <= 10:
        p.error("--icount-shift must be between 0 and 10")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.rejudge is not None:
        return rejudge(args.rejudge, args)
    lay = Layout.from_env()
    dms = args.dm or [n for n, _, _ in layout.DM_BUILDS]
    costs: List[Cost] = []
    with artefacts.exclusive(lay.cache / f"{lay.work_name}.lock", "another vm-proof run"):
        return _prove(lay, dms, costs, args)


def _prove(lay: Layout, dms: Sequence[str], costs: List[Cost], args: argparse.Namespace) -> int:
    try:
        built = build(lay, dms, costs)
    except (BuildError, OSError, subprocess.CalledProcessError) as exc:
        print(f"vm-proof: {exc}", file=sys.stderr)
        return 2
    for k, v in built["versions"].items():
        say(f"{k}: {v}")
    runs = [run_dm(lay, built["initrd"], name, args) for name in dms]
    for r in runs:
        costs.append(Cost(f"boots with DM {r.name}", r.seconds, False))
    lines = report_lines(runs, args)
    if not args.no_results:
        say(f"results: {write_results(lines, runs, built['versions'], costs, args)}")
    for c in costs:
        say(f"cost: {c.name}: {c.seconds / 60:.1f} min")
    print("\n".join(lines), flush=True)
    return 0 if all(verdict.judge_functional(r.name, r.expect, r.records).ok for r in runs) else 1
