"""Judge what the guests reported (pure): the functional verdict and the effect table.

Input: the `PROOF {json}` records of the boots of one Decision Maker build
(bench/vm/guest/run.py writes them).  Functional: did the scheduler's priority
map get exactly the gNB's tasks the DM build lists (the leader for v1.3.0,
every thread after PR #135), how soon after the gNB's first event, nothing
foreign, and did they leave it when the gNB exited; does the operator's own
read-back (state.json "boost") say the same as the scheduler's map.  Effect:
the probe's p99 wake-up lateness, medians over the runs, per DM build, probe
position and case; and beside it the gNB's CPU wait share over the same probe
runs (schedstat, read from /proc by the guest and by the operator), and
whether it moved the way the lateness did.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from bench.vm import gthulhu_log
from bench.vm.gthulhu_log import MapChange

CASES = ("eevdf", "gthulhu-stopped", "gthulhu-operator")
CASE_LABELS = {"eevdf": "EEVDF (no sched_ext)", "gthulhu-stopped": "Gthulhu, operator stopped",
               "gthulhu-operator": "Gthulhu, operator running"}
POSITIONS = ("leader", "worker")
BOOST_DEADLINE_S = 10.0   # "within a few seconds of the gNB's first events"
EXIT_DEADLINE_S = 15.0    # out of the map after the gNB exited (liveness pass 5 s + polls)


def _one(records: Iterable[Mapping[str, Any]], kind: str) -> Optional[Mapping[str, Any]]:
    return next((r for r in records if r.get("kind") == kind), None)


def _changes(raw: Sequence[Sequence[Any]]) -> List[MapChange]:
    return [MapChange(float(at), int(pid), bool(added)) for at, pid, added in raw]


def expected_boost(expect: str, tgid: int, tids: Iterable[int]) -> Set[int]:
    """What the DM build lists for a rule naming the gNB's names."""
    return {tgid} if expect == "leader" else set(tids)


# --- the operator's read-back against the scheduler's map --------------------------


@dataclass(frozen=True)
class ReadBack:
    """The operator's account of the boost (state.json "boost") held against the map."""

    ok: bool
    text: str    # a line for the report
    brief: str   # for the last line: "operator agrees (4/4 covered)"


def compare_operator_report(view: Optional[Mapping[str, Any]], gnb_tids: Set[int],
                            map_pids: Set[int], ops: str) -> ReadBack:
    """Does the operator's read-back (core/boost_verdict.py BoostVerdict.state():
    verified, scheduler, covered, missing, foreign, unseen, gone, unchecked,
    diagnosis) say what the scheduler's map shows?  What the map shows of the
    tracked tasks (`tracked`: the operator's own processes' TIDs) decides what
    each list must hold, and which diagnosis: all covered, leaders only (the map
    holds exactly the tracked processes' leaders), or tasks missing."""
    if view is None:
        return ReadBack(False, "operator read-back: the operator wrote no state.json",
                        "operator wrote no state")
    boost = view.get("boost")
    if not isinstance(boost, Mapping):
        return ReadBack(False, f"operator read-back: state.json has no boost object "
                               f"({boost!r:.80})", "operator has no read-back")
    diagnosis = str(boost.get("diagnosis", ""))
    if boost.get("verified") is not True:
        return ReadBack(False, f"operator read-back: not verified ({diagnosis:.160})",
                        "operator did not verify")
    tracked, leaders = _tracked(view), _leaders(view)
    said = {k: _pids(boost.get(k)) for k in ("covered", "missing", "unseen", "foreign")}
    want = {"covered": map_pids & tracked, "missing": tracked - map_pids,
            "unseen": (map_pids & gnb_tids) - tracked, "foreign": map_pids - gnb_tids}
    wrong = [f"{k} {sorted(said[k])} where the scheduler shows {sorted(want[k])}"
             for k in ("covered", "missing", "unseen", "foreign") if said[k] != want[k]]
    unchecked = {k: boost.get(k) for k in ("gone", "unchecked") if boost.get(k)}
    if unchecked:
        wrong.append(f"it could not check every listed task ({unchecked})")
    if boost.get("scheduler") != ops:
        wrong.append(f"it names the scheduler {boost.get('scheduler')!r}, sysfs {ops!r}")
    kind, words = _expected_diagnosis(tracked, leaders, map_pids)
    if words not in diagnosis:
        wrong.append(f"its diagnosis does not say {words!r}: {diagnosis!r:.200}")
    counts = (f"covered {len(said['covered'])}, missing {len(said['missing'])}, "
              f"foreign {len(said['foreign'])}, unseen {len(said['unseen'])}")
    if wrong:
        return ReadBack(False, "operator read-back differs from the scheduler's map: "
                        + "; ".join(wrong), "operator DIFFERS")
    brief = ("leaders only" if kind == "leaders"
             else f"{len(said['covered'])}/{len(tracked)} covered")
    return ReadBack(True, f"operator read-back agrees with the scheduler's map ({counts}; "
                          f"diagnosis: {diagnosis})", f"operator agrees ({brief})")


def _expected_diagnosis(tracked: Set[int], leaders: Set[int], in_map: Set[int]
                        ) -> Tuple[str, str]:
    """(kind, words the operator's diagnosis must contain), from what the map shows."""
    if tracked and tracked <= in_map:
        return "all", "all covered"
    if leaders and (tracked & in_map) == leaders and tracked - leaders:
        return "leaders", "thread-group leaders only"
    return "missing", "does not boost"


def _pids(entries: Any) -> Set[int]:
    """TIDs from a list of IDs or of {"pid": ...} objects (foreign tasks come as those)."""
    out: Set[int] = set()
    for e in entries if isinstance(entries, list) else []:
        pid = e.get("pid") if isinstance(e, Mapping) else e
        if isinstance(pid, int) and not isinstance(pid, bool):
            out.add(pid)
    return out


# --- functional -------------------------------------------------------------------


@dataclass(frozen=True)
class Functional:
    dm: str
    expect: str
    ops: str
    gnb_tasks: int
    expected: Set[int]
    boosted: Set[int]            # gNB tasks that entered the map
    foreign: Set[int]            # other tasks that entered it meanwhile
    boost_latency: Optional[float]  # first event -> last expected task in the map
    left_after_exit: Set[int]    # gNB tasks still in the map after the exit wait
    exit_latency: Optional[float]   # exit -> last one out
    held: bool                   # the expected tasks still in the map seconds later
    operator_wrong: str          # what the operator's state.json gets wrong ("" when right)
    readback: ReadBack           # its account of the boost against the scheduler's map

    @property
    def ok(self) -> bool:
        return (self.boosted == self.expected and self.held and not self.operator_wrong
                and not self.foreign and not self.left_after_exit
                and self.boost_latency is not None and self.boost_latency <= BOOST_DEADLINE_S
                and self.exit_latency is not None and self.exit_latency <= EXIT_DEADLINE_S
                and self.readback.ok)

    def brief(self, short: bool = False) -> str:
        """For the last line: '4/4 tasks boosted by goland within 0.9 s, 0 foreign,
        operator agrees (4/4 covered)'; `short` (a second DM build whose boost
        went as expected): '1/4 (the leader), operator agrees (leaders only)'."""
        who = " (the leader)" if self.expect == "leader" and self.boosted == self.expected else ""
        if short and self.ok:
            return f"{len(self.boosted)}/{self.gnb_tasks}{who}, {self.readback.brief}"
        within = "never" if self.boost_latency is None else f"within {self.boost_latency:.1f} s"
        return (f"{len(self.boosted)}/{self.gnb_tasks} tasks{who} boosted by {self.ops or '?'} "
                f"{within}, {len(self.foreign)} foreign, {self.readback.brief}")

    def summary(self) -> str:
        which = "the leader only" if self.expect == "leader" else "every thread"
        within = "never" if self.boost_latency is None else f"within {self.boost_latency:.1f} s"
        gone = ("not all out of the map" if self.exit_latency is None or self.left_after_exit
                else f"out of the map {self.exit_latency:.1f} s" if self.boosted
                else "nothing to take out of the map")
        return (f"{len(self.boosted)}/{self.gnb_tasks} tasks boosted by {self.ops or '?'} "
                f"{within}, {len(self.foreign)} foreign (expected {which})"
                f"{'' if self.held else ', NOT held'}; {gone} after the gNB exited"
                f"{'; ' + self.operator_wrong if self.operator_wrong else ''}")


def judge_functional(dm: str, expect: str, records: Sequence[Mapping[str, Any]]) -> Functional:
    boost, gone = _one(records, "functional-boost"), _one(records, "functional-exit")
    sched = _one(records, "scheduler") or {}
    if boost is None or gone is None:
        return Functional(dm, expect, str(sched.get("ops", "")), 0, set(), set(), set(), None,
                          set(), None, False, "",
                          ReadBack(False, "the guest reported no functional part", "-"))
    gnb = boost["gnb"]
    tids = {int(t) for t in gnb["tids"].values()}
    first = int(gnb["first_event_ns"]) / 1e9
    expected = expected_boost(expect, int(gnb["tgid"]), tids)
    changes = _changes(gone["changes"])
    added = gthulhu_log.first_added(changes, after=first - 1.0)
    boosted = set(added) & tids
    foreign = set(added) - tids
    latency = (max(added[p] for p in expected) - first) if expected <= set(added) else None
    exited = float(gone["exited_at"])
    still = gthulhu_log.boosted_at(changes) & tids
    removed = gthulhu_log.last_removed(changes, after=exited - 1.0)
    exit_latency = (max((removed[p] for p in boosted), default=exited) - exited
                    if boosted <= set(removed) else None)
    map_at_report = gthulhu_log.boosted_at(_changes(boost["changes"]))
    ops = str(boost.get("ops") or sched.get("ops", ""))
    return Functional(dm, expect, ops, len(tids), expected, boosted, foreign, latency, still,
                      exit_latency, expected <= map_at_report,
                      operator_state_wrong(boost.get("operator"), gone.get("operator"), tids,
                                           ops),
                      compare_operator_report(boost.get("operator"), tids, map_at_report, ops))


def operator_state_wrong(during: Optional[Mapping[str, Any]], after: Optional[Mapping[str, Any]],
                         tids: Set[int], ops: str) -> str:
    """What the operator's state.json gets wrong, '' when nothing: it must track
    exactly the gNB's tasks while it runs and none after its exit, and name the
    running scheduler."""
    wrong = []
    tracked = _tracked(during)
    if tracked != tids:
        wrong.append(f"the operator tracked {sorted(tracked)}, the gNB's tasks are "
                     f"{sorted(tids)}")
    if _tracked(after) & tids:
        wrong.append(f"the operator still tracked {sorted(_tracked(after) & tids)} after the "
                     "gNB's exit")
    seen = (during or {}).get("scheduler") or {}
    if not (seen.get("enabled") is True and seen.get("ops") == ops):
        wrong.append(f"the operator sees no scheduler running (its state.json: {dict(seen)}; "
                     f"sysfs: {ops or 'none'})")
    return "; ".join(wrong)


def _tracked(view: Optional[Mapping[str, Any]]) -> Set[int]:
    return {int(t) for p in (view or {}).get("processes", []) for t in p.get("tids", [])}


def _leaders(view: Optional[Mapping[str, Any]]) -> Set[int]:
    return {int(p["tgid"]) for p in (view or {}).get("processes", []) if "tgid" in p}


# --- effect -----------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    p99_us: Tuple[float, ...]        # one per run
    p50_us: Tuple[float, ...]
    probe_boosted: Tuple[bool, ...]  # was the probe's task in the map when it started

    def values(self, metric: str = "p99") -> Tuple[float, ...]:
        return self.p99_us if metric == "p99" else self.p50_us

    def median(self, metric: str = "p99") -> Optional[float]:
        v = self.values(metric)
        return statistics.median(v) if v else None

    def text(self, metric: str = "p99") -> str:
        if not self.values(metric):
            return "-"
        ms = [v / 1000 for v in self.values(metric)]
        digits = 1 if metric == "p99" else 2
        spread = f" [{min(ms):.{digits}f}-{max(ms):.{digits}f}]" if len(ms) > 1 else ""
        return f"{statistics.median(ms):.{digits}f}{spread} (n={len(ms)})"


def probe_cells(records: Iterable[Mapping[str, Any]]) -> Dict[Tuple[str, str], Cell]:
    """(case, position) -> the p99s and p50s of its runs."""
    acc: Dict[Tuple[str, str], List[Tuple[float, float, bool]]] = {}
    for r in records:
        if r.get("kind") != "probe":
            continue
        res = r["result"]
        acc.setdefault((r["case"], r["position"]), []).append(
            (float(res["p99_us"]), float(res["p50_us"]),
             int(res["tid"]) in set(r.get("boosted", []))))
    return {k: Cell(tuple(a for a, _, _ in v), tuple(b for _, b, _ in v),
                    tuple(c for _, _, c in v)) for k, v in acc.items()}


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None or b == 0 else a / b


@dataclass(frozen=True)
class EffectRow:
    dm: str
    position: str
    cells: Dict[str, Cell]   # case -> cell

    def boost_ratio(self, metric: str = "p99") -> Optional[float]:
        """The probe's lateness with the operator running / with it stopped
        (Gthulhu both times)."""
        return ratio(self.cells["gthulhu-operator"].median(metric),
                     self.cells["gthulhu-stopped"].median(metric))

    def vs_eevdf(self, metric: str = "p99") -> Optional[float]:
        return ratio(self.cells["gthulhu-operator"].median(metric),
                     self.cells["eevdf"].median(metric))

    def runs(self) -> int:
        return min(len(c.p99_us) for c in self.cells.values())

    def probe_boosted(self) -> str:
        flags = self.cells["gthulhu-operator"].probe_boosted
        return "yes" if flags and all(flags) else "no" if not any(flags) else "partly"


def effect_rows(dm: str, records: Sequence[Mapping[str, Any]]) -> List[EffectRow]:
    cells = probe_cells(records)
    empty = Cell((), (), ())
    return [EffectRow(dm, pos, {c: cells.get((c, pos), empty) for c in CASES})
            for pos in POSITIONS]


def fmt_ratio(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.2f}"


def effect_table(rows: Sequence[EffectRow], metric: str = "p99") -> List[str]:
    head = ("| Decision Maker | probe | "
            + " | ".join(f"{CASE_LABELS[c]}, {metric} ms" for c in CASES)
            + " | running / stopped | running / EEVDF | probe boosted |")
    lines = [head, "|" + "---|" * 8]
    for row in rows:
        lines.append(f"| {row.dm} | {row.position} | "
                     + " | ".join(row.cells[c].text(metric) for c in CASES)
                     + f" | {fmt_ratio(row.boost_ratio(metric))} | "
                       f"{fmt_ratio(row.vs_eevdf(metric))} | {row.probe_boosted()} |")
    return lines


# --- CPU wait: schedstat over the probe runs ------------------------------------------


def _counters(raw: Any) -> Optional[Tuple[int, int]]:
    """(run ns, wait ns) from [run, wait, slices] or {"run_ns", "wait_ns", ...}."""
    try:
        if isinstance(raw, Mapping):
            return int(raw["run_ns"]), int(raw["wait_ns"])
        if isinstance(raw, list) and len(raw) >= 2:
            return int(raw[0]), int(raw[1])
    except (KeyError, TypeError, ValueError):
        pass
    return None


def delta(before: Any, after: Any) -> Optional[Tuple[int, int]]:
    """(run ns, wait ns) from `before` to `after`; None when unreadable or gone
    backwards (a reused ID, a mixed read)."""
    a, b = _counters(before), _counters(after)
    if a is None or b is None or b[0] < a[0] or b[1] < a[1]:
        return None
    return b[0] - a[0], b[1] - a[1]


def share_of(d: Optional[Tuple[int, int]]) -> Optional[float]:
    """wait / (run + wait); None when not measured or never runnable."""
    return d[1] / (d[0] + d[1]) if d is not None and d[0] + d[1] > 0 else None


def _sum_deltas(before: Mapping[str, Any], after: Mapping[str, Any]
                ) -> Optional[Tuple[int, int]]:
    """Every task's delta summed; None unless each task read before has one."""
    deltas = [delta(before[t], after.get(t)) for t in before]
    got = [d for d in deltas if d is not None]
    if not got or len(got) != len(deltas):
        return None
    return sum(d[0] for d in got), sum(d[1] for d in got)


@dataclass(frozen=True)
class WaitShares:
    """One probe run's wait shares over the probe, each None when not measured."""

    gnb: Optional[float]       # the gNB's tasks together, read from /proc by the guest
    probe: Optional[float]     # the probe's own task, likewise
    operator: Optional[float]  # the gNB's, by the operator (cpu_wait.lifetime; its runs)


def wait_shares(record: Mapping[str, Any]) -> WaitShares:
    stat = record.get("schedstat") or {}
    before, after = stat.get("before") or {}, stat.get("after") or {}
    probe_tid = str(record.get("result", {}).get("tid"))
    probe = share_of(delta(before.get(probe_tid), after.get(probe_tid)))
    return WaitShares(share_of(_sum_deltas(before, after)), probe, _operator_share(record))


def _operator_share(record: Mapping[str, Any]) -> Optional[float]:
    """The change of the operator's lifetime counters of the gNB's process name."""
    cpu = record.get("operator_cpu_wait")
    if not isinstance(cpu, Mapping):
        return None
    gnb = record.get("gnb") or {}
    names = [n for n, t in (gnb.get("tids") or {}).items() if t == gnb.get("tgid")]
    if not names:
        return None

    def lifetime(at: str) -> Any:
        reading = cpu.get(at)
        if not isinstance(reading, Mapping) or reading.get("unavailable"):
            return None
        return (reading.get("lifetime") or {}).get(names[0])
    return share_of(delta(lifetime("before"), lifetime("after")))


def _median_or_none(xs: Iterable[Optional[float]]) -> Optional[float]:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def pct(x: Optional[float]) -> str:
    """61 %, 9.5 %, 0.3 %: one decimal below 10 % (a boosted task waits little)."""
    if x is None:
        return "-"
    return f"{x * 100:.0f} %" if x >= 0.1 else f"{x * 100:.1f} %"


FLAT = 0.05  # a change of less than 5 % (of the value stopped) is no move either way


def move(ratio: Optional[float]) -> str:
    """'down', 'up' or 'flat' for a value running / stopped."""
    if ratio is None:
        return "-"
    return "down" if ratio < 1 - FLAT else "up" if ratio > 1 + FLAT else "flat"


@dataclass(frozen=True)
class WaitRow:
    """The wait shares of one DM build and probe position, medians over the runs."""

    dm: str
    position: str
    gnb: Dict[str, Optional[float]]    # case -> the gNB's share
    probe: Dict[str, Optional[float]]  # case -> the probe task's share
    operator: Optional[float]          # the operator's reading, operator running
    p99_ratio: Optional[float]         # running / stopped, from the effect row

    def share_ratio(self) -> Optional[float]:
        return ratio(self.gnb["gthulhu-operator"], self.gnb["gthulhu-stopped"])

    def direction(self) -> str:
        """Did the gNB's wait share move the way the probe's p99 did, operator
        stopped -> running?  'same (both down)', 'not the same (share flat, p99
        down)', or '-' (a side not measured)."""
        share, p99 = move(self.share_ratio()), move(self.p99_ratio)
        if "-" in (share, p99):
            return "-"
        if share == p99:
            return f"same (both {share})"
        return f"not the same (share {share}, p99 {p99})"

    def change(self) -> str:
        """'61 % -> 9 %' (operator stopped -> running, the guest's reading)."""
        return f"{pct(self.gnb['gthulhu-stopped'])} -> {pct(self.gnb['gthulhu-operator'])}"


def wait_rows(dm: str, records: Sequence[Mapping[str, Any]],
              effect: Sequence[EffectRow]) -> List[WaitRow]:
    acc: Dict[Tuple[str, str], List[WaitShares]] = {}
    for r in records:
        if r.get("kind") == "probe":
            acc.setdefault((r["case"], r["position"]), []).append(wait_shares(r))
    ratios = {row.position: row.boost_ratio() for row in effect if row.dm == dm}
    rows = []
    for pos in POSITIONS:
        runs = {c: acc.get((c, pos), []) for c in CASES}
        rows.append(WaitRow(
            dm, pos, {c: _median_or_none(w.gnb for w in runs[c]) for c in CASES},
            {c: _median_or_none(w.probe for w in runs[c]) for c in CASES},
            _median_or_none(w.operator for w in runs["gthulhu-operator"]), ratios.get(pos)))
    return rows


def operator_vs_proc(records: Iterable[Mapping[str, Any]]) -> Optional[float]:
    """The largest difference, in points, between the operator's reading of the
    gNB's wait share and the guest's own over the same probe run (their moments
    differ by up to a poll before the probe and a liveness pass after it)."""
    diffs = [abs(w.operator - w.gnb) * 100 for w in map(wait_shares, records)
             if w.operator is not None and w.gnb is not None]
    return max(diffs) if diffs else None


def wait_table(rows: Sequence[WaitRow]) -> List[str]:
    head = ("| Decision Maker | probe | gNB wait share: EEVDF | Gthulhu, operator stopped | "
            "Gthulhu, operator running | the operator's own reading (running) | probe task: "
            "operator stopped | probe task: operator running | p99 running / stopped | "
            "moved the same way |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r.dm} | {r.position} | "
                     + " | ".join(pct(r.gnb[c]) for c in CASES)
                     + f" | {pct(r.operator)} | {pct(r.probe['gthulhu-stopped'])} | "
                       f"{pct(r.probe['gthulhu-operator'])} | {fmt_ratio(r.p99_ratio)} | "
                       f"{r.direction()} |")
    return lines


def wait_share_line(rows: Sequence[WaitRow], records: Sequence[Mapping[str, Any]]) -> str:
    """One DM build's wait shares in a line."""
    if all(r.gnb[c] is None for r in rows for c in CASES):
        return "wait share: not measured (no schedstat readings in the guest's report)"
    parts = [f"{r.position} probe: gNB {r.change()} with the boost (the operator's own "
             f"reading {pct(r.operator)}), p99 {fmt_ratio(r.p99_ratio)}: {r.direction()}"
             for r in rows]
    worst = operator_vs_proc(records)
    agree = ("" if worst is None else
             f"; the operator's reading and /proc's differ by at most {worst:.1f} points")
    return "wait share (schedstat over the probe, median of the runs): " + "; ".join(
        parts) + agree
