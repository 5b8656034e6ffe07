"""Judge what the guests reported (pure): the functional verdict and the effect table.

Input: the `PROOF {json}` records of the boots of one Decision Maker build
(bench/vm/guest/run.py writes them).  Functional: did the scheduler's priority
map get exactly the gNB's tasks the DM build lists (the leader for v1.3.0,
every thread after PR #135), how soon after the gNB's first event, nothing
foreign, and did they leave it when the gNB exited; does the operator's own
read-back (state.json "boost", the closed-loop issue) say the same as the
scheduler's map.  Effect: the probe's p99 wake-up lateness, medians over the
runs, per DM build, probe position and case.
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


def compare_operator_report(view: Optional[Mapping[str, Any]], gnb_tids: Set[int],
                            map_pids: Set[int]) -> Tuple[Optional[bool], str]:
    """Does the operator's closed-loop report (state.json "boost": covered,
    missing, foreign) say what the scheduler's map shows?  (None, why) when the
    operator has no such report in this tree."""
    if view is None:
        return False, "the operator wrote no state.json"
    boost = view.get("boost")
    if boost is None:
        return None, 'operator read-back: not available in this tree (state.json has no "boost")'
    if not isinstance(boost, Mapping):
        return False, f"operator read-back: unreadable boost {boost!r:.80}"
    tracked = _tracked(view)
    said = {k: _pids(boost.get(k)) for k in ("covered", "missing", "foreign")}
    want = {"covered": map_pids & tracked, "missing": tracked - map_pids,
            "foreign": map_pids - gnb_tids}
    wrong = [f"{k} {sorted(said[k])} where the scheduler shows {sorted(want[k])}"
             for k in ("covered", "missing", "foreign") if said[k] != want[k]]
    summary = (f"covered {len(said['covered'])}, missing {len(said['missing'])}, "
               f"foreign {len(said['foreign'])}, verified {boost.get('verified')}")
    if wrong:
        return False, "operator read-back differs from the scheduler: " + "; ".join(wrong)
    diagnosis = boost.get("diagnosis")
    return True, (f"operator read-back matches the scheduler ({summary}"
                  + (f"; diagnosis: {diagnosis}" if diagnosis else "") + ")")


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
    operator_ok: Optional[bool]
    operator_text: str

    @property
    def ok(self) -> bool:
        return (self.boosted == self.expected and self.held and not self.operator_wrong
                and not self.foreign and not self.left_after_exit
                and self.boost_latency is not None and self.boost_latency <= BOOST_DEADLINE_S
                and self.exit_latency is not None and self.exit_latency <= EXIT_DEADLINE_S
                and self.operator_ok is not False)

    def brief(self) -> str:
        """For the last line: '4/4 tasks boosted by goland within 0.9 s, 0 foreign'."""
        within = "never" if self.boost_latency is None else f"within {self.boost_latency:.1f} s"
        who = " (the leader)" if self.expect == "leader" and self.boosted == self.expected else ""
        return (f"{len(self.boosted)}/{self.gnb_tasks} tasks{who} boosted by {self.ops or '?'} "
                f"{within}, {len(self.foreign)} foreign")

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
                          set(), None, False, "", False, "the guest reported no functional part")
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
    op_ok, op_text = compare_operator_report(boost.get("operator"), tids, map_at_report)
    return Functional(dm, expect, ops, len(tids), expected, boosted, foreign, latency, still,
                      exit_latency, expected <= map_at_report,
                      operator_state_wrong(boost.get("operator"), gone.get("operator"), tids,
                                           ops), op_ok, op_text)


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


# --- the wait-share hook (issue 22: state.json "waits") -----------------------------


def _shares(waits: Any) -> Dict[int, float]:
    """tid -> wait share, from the shapes "waits" may take: {tid: share},
    {tid: {"share": x}} or [{"tid": t, "share": x}]."""
    pairs: List[Tuple[Any, Any]] = []
    if isinstance(waits, Mapping):
        pairs = list(waits.items())
    elif isinstance(waits, list):
        pairs = [(w.get("tid"), w) for w in waits if isinstance(w, Mapping)]
    out: Dict[int, float] = {}
    for tid, v in pairs:
        share: Any = v.get("share") if isinstance(v, Mapping) else v
        try:
            out[int(tid)] = float(share)
        except (TypeError, ValueError):
            continue
    return out


def _median(xs: Sequence[float]) -> str:
    return f"{statistics.median(xs):.2f}" if xs else "-"


def wait_share_line(records: Iterable[Mapping[str, Any]]) -> str:
    """Boosted vs unboosted tasks' schedstat wait share, from the operator's
    own "waits" in the runs with the operator; 'not available' without it."""
    boosted: List[float] = []
    other: List[float] = []
    for r in records:
        view = r.get("operator") if r.get("kind") == "probe" else None
        if not isinstance(view, Mapping) or "waits" not in view:
            continue
        in_map = set(r.get("boosted", []))
        for tid, share in _shares(view["waits"]).items():
            (boosted if tid in in_map else other).append(share)
    if not boosted and not other:
        return 'wait share: not available in this tree (state.json has no "waits")'
    return (f"wait share (operator's schedstat): boosted tasks {_median(boosted)}, "
            f"unboosted gNB tasks {_median(other)}")
