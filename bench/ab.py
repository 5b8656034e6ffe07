"""The FIFO section as an A/B: this tree's daemon against earlier revisions', in one run.

    python3 -m bench.run --only fifo --against 6548f26 a1ae6b9 lead [--rounds 5]

A change on a hot path is judged against the previous release on the same
machine in the same run: this VM's speed drifts by tens of percent within
minutes, so one run of each, minutes apart, says nothing.  Each revision is
exported with `git archive` into a temporary directory (the repository is
only read: no worktree, no ref, nothing left behind) and its daemon runs
from there, under the same Python as this tree's, on the same corpus, with
the same live `nr-gnb`.  Rounds alternate the trees, each round starting one
tree later, so drift and position hit them alike; each ratio is the median
of the rounds' ratios (the same round's runs).

The config names only keys every revision knows (trace.pipe, api.*,
log.level), so a revision from before trace.format reads it too.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence

from bench.stream import make_stream, open_writer, unread, write_all
from testbed.harness import REPO, DaemonProcess, GnbProcess, NotifySocket, wait_until, write_config

if TYPE_CHECKING:
    from bench.run import World

Row = Callable[[str, str, str, Optional[bool]], None]
THIS_TREE = "this tree"


@dataclass(frozen=True)
class Tree:
    label: str  # as given on the command line ("this tree" for the working tree)
    commit: str  # what it resolved to ("+ changes": the working tree differs from it)
    path: Path


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def resolve(rev: str) -> str:
    """The commit `rev` names; a one-line error naming it when it names none."""
    try:
        return _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except subprocess.CalledProcessError:
        raise SystemExit(f"--against {rev}: not a commit in {REPO}") from None


def this_tree() -> Tree:
    head = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "gtp5g_operator")
    return Tree(THIS_TREE, head + (" + changes" if dirty else ""), REPO)


def export(label: str, commit: str, path: Path) -> Tree:
    """The revision's files (git archive | tar) in the new directory `path`."""
    path.mkdir()
    archive = subprocess.Popen(["git", "-C", str(REPO), "archive", "--format=tar", commit],
                               stdout=subprocess.PIPE)
    assert archive.stdout is not None
    try:
        subprocess.run(["tar", "-x", "-C", str(path)], stdin=archive.stdout, check=True)
    finally:
        archive.stdout.close()
        if archive.wait() != 0:
            raise SystemExit(f"--against {label}: git archive {commit} failed")
    return Tree(label, commit, path)


@contextlib.contextmanager
def trees(revs: Sequence[str]) -> Iterator[List[Tree]]:
    """This tree and each revision's, exported for the run's length and removed after it."""
    commits = [(rev, resolve(rev)) for rev in revs]  # every name checked before any work
    tmp = Path(tempfile.mkdtemp(prefix="gtp5g-bench-ab-"))
    try:
        # A revision named twice runs twice, as two trees: the spread between them is
        # the benchmark's own noise.
        yield [this_tree(), *(export(f"{rev} #{i + 1}" if revs.count(rev) > 1 else rev,
                                     commit, tmp / str(i))
                              for i, (rev, commit) in enumerate(commits))]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- one flood -------------------------------------------------------------------------------


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of a process so far, in ns (/proc/PID/task/*/schedstat;
    /proc/PID/stat counts 10 ms ticks, a few percent of one flood)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


@dataclass(frozen=True)
class Flood:
    cpu_s: float
    wall_s: float


def flood(world: World, tree: Tree, data: bytes, gnb: GnbProcess, run: int) -> Flood:
    """Start `tree`'s daemon on a new FIFO, wait for its first push, write `data`, and
    measure its CPU until the FIFO is empty; it must then push the gNB's tasks."""
    fifo = world.fifo()
    home = world.tmp / f"ab-{run}"  # run/ and state/ of its own: revisions' files differ
    home.mkdir()
    config = write_config(
        home / "config.toml", trace={"pipe": str(fifo)},
        api={"url": world.api.url, "public_key": str(world.public), "timeout": 2.0},
        log={"level": "warning"})
    notify = NotifySocket(home / "notify.sock")
    posts = len(world.api.posts())
    d = DaemonProcess(config, notify, home / "daemon.log", {"PYTHONPATH": str(tree.path)},
                      python=world.python, prefix=("env", "-C", str(tree.path)))
    try:
        notify.wait("READY", "1", timeout=20)
        fd = open_writer(fifo)
        try:
            world.api.wait_post(lambda s: True, timeout=10, after=posts)  # start-up done
            posts = len(world.api.posts())
            c0, t0 = cpu_ns(d.pid), time.monotonic()
            write_all(fd, data)
            # Empty: every byte read.  The scan of the last read (at most 256 KiB,
            # about 0.1 % of the corpus, alike for every tree) may fall after this.
            wait_until(lambda: unread(fd) == 0, 300, "daemon drain", 0.001)
            t1, c1 = time.monotonic(), cpu_ns(d.pid)
            world.api.wait_post(lambda s: {x["pid"] for x in s} == set(gnb.tids),
                                timeout=10, after=posts)
        finally:
            os.close(fd)
    finally:
        d.stop()
        notify.close()
    return Flood((c1 - c0) / 1e9, t1 - t0)


# --- the section -------------------------------------------------------------------------------


def run(world: World, lines: int, revs: Sequence[str], rounds: int) -> Dict[str, Any]:
    gnb = GnbProcess("nr-gnb", tuple(f"nr-gnb-t{i}" for i in range(7)))
    try:
        data = make_stream(lines, gnb)
        n = data.count(b"\n")
        with trees(revs) as all_trees:
            floods: Dict[str, List[Flood]] = {t.label: [] for t in all_trees}
            runs = itertools.count()
            for r in range(rounds):
                start = r % len(all_trees)
                for tree in all_trees[start:] + all_trees[:start]:
                    floods[tree.label].append(flood(world, tree, data, gnb, next(runs)))
    finally:
        gnb.stop()
    base = floods[THIS_TREE]
    return {"lines": n, "bytes": len(data), "rounds": rounds,
            "trees": [summary(t, floods[t.label], n, base) for t in all_trees]}


def summary(tree: Tree, runs: List[Flood], lines: int, base: List[Flood]) -> Dict[str, Any]:
    us = [f.cpu_s / lines * 1e6 for f in runs]
    # the same round's runs: drift between rounds cancels out
    ratios = [f.cpu_s / b.cpu_s for f, b in zip(runs, base, strict=True)]
    return {"label": tree.label, "commit": tree.commit,
            "us_per_line": us, "us_per_line_median": statistics.median(us),
            "lines_per_s_median": statistics.median(lines / f.wall_s for f in runs),
            "cpu_ratios_to_this_tree": ratios,
            "cpu_ratio_to_this_tree": statistics.median(ratios),
            "cpu_ratio_quartiles": quartiles(ratios)}


def quartiles(values: List[float]) -> List[float]:
    """[first, third] quartile: how far the rounds' ratios spread around their median."""
    if len(values) < 2:
        return [values[0], values[0]]
    q = statistics.quantiles(values, n=4)
    return [q[0], q[2]]


def rows(r: Dict[str, Any], row: Row) -> None:
    for t in r["trees"]:
        us, mine = t["us_per_line"], t["label"] == THIS_TREE
        row(f"FIFO A/B, {r['lines']:,} lines, {r['rounds']} alternating rounds: "
            f"{t['label']} ({t['commit'][:12]}{' + changes' if 'changes' in t['commit'] else ''})",
            f"{t['us_per_line_median']:.3f} µs CPU per line (range {min(us):.3f} to "
            f"{max(us):.3f}), {t['lines_per_s_median']:,.0f} lines/s; CPU "
            f"{t['cpu_ratio_to_this_tree']:.2f} x this tree's (median of the rounds' ratios; "
            f"quartiles {t['cpu_ratio_quartiles'][0]:.2f} to {t['cpu_ratio_quartiles'][1]:.2f})",
            "≤ 0.5 µs" if mine else "(report)", t["us_per_line_median"] <= 0.5 if mine else None)
