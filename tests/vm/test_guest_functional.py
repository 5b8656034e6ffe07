"""The functional proof in emulated sched_ext guests (`pytest -m vm`; minutes per case).

For each Decision Maker build, one guest runs the whole chain on its own
loopback (the operator from this tree's .deb, the real DM, Gthulhu's
scheduler in kernel mode, a gNB-like process writing to trace_marker) and the
scheduler's map must get exactly what that DM lists — the gNB's leader for
v1.3.0, its every thread for PR #135 — within seconds of the gNB's first
event, nothing foreign, and lose them when the gNB exits.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from bench.vm import artefacts, guest_root, layout, proof, verdict
from bench.vm.layout import Layout

pytestmark = pytest.mark.vm


def _why_not(lay: Layout) -> str:
    if os.geteuid() != 0:
        return "needs root (chroot dpkg for the guest root)"
    for tool in ("cpio", "gcc", "chroot", "dpkg-buildpackage"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    missing = artefacts.missing_cached(lay)
    sources = lay.missing_sources()
    if missing and sources:
        return f"{missing}; it cannot be built here either: {sources}"
    return missing or ""


@pytest.fixture(scope="module")
def guest() -> Iterator[Tuple[Layout, Path]]:
    lay = dataclasses.replace(Layout.from_env(), work_name="work-pytest")
    why = _why_not(lay)
    if why:
        pytest.skip(why)
    dms = {name: lay.dm_dir(name) for name, _, _ in layout.DM_BUILDS}
    initrd = guest_root.assemble(lay, artefacts.guest_base(lay), artefacts.operator_deb(lay),
                                 dms, artefacts.guest_binaries(lay))
    yield lay, initrd


@pytest.mark.parametrize("dm", [name for name, _, _ in layout.DM_BUILDS])
def test_scheduler_boosts_what_the_dm_lists_and_drops_it_at_exit(
        guest: Tuple[Layout, Path], dm: str) -> None:
    lay, initrd = guest
    args = proof.parse_args(["--functional-only", "--dm", dm, "--no-results"])
    run = proof.run_dm(lay, initrd, dm, args)
    assert run.records, f"no guest finished in {run.boots} boots: {run.oopses + run.failures}"
    f = verdict.judge_functional(dm, run.expect, run.records)
    assert f.ok, f"{f.summary()}; {f.readback.text}"
