"""Contract tests: the same requests to the fake Decision Maker and to the real one.

Each test runs once per real build (tests/contract/real_dm.py): v1.3.0 paired with
the fake in leaders-only mode, pr135 with the fake in thread-aware mode.  Both
servers get the build's own JWT key, so one public key serves both.  Where no
build exists (CI), every test skips and says where the recipe is.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Tuple

import pytest

from testbed.fake_decision_maker import FakeDecisionMaker
from tests.contract.real_dm import BUILDS, DMBuild, RealDecisionMaker
from tests.contract.transcript import Transcript

Scenario = Callable[[Transcript], None]
MERKLE = "/api/v1/node-intents/merkle"
NODE_INTENTS = "/api/v1/node-intents"
STRATEGIES = "/api/v1/scheduling/strategies"


@dataclass
class DMPair:
    build: DMBuild
    fake: FakeDecisionMaker
    real: RealDecisionMaker

    def transcripts(self) -> Tuple[Transcript, Transcript]:
        key = self.build.public_key()
        unordered = not self.build.match_threads
        return (Transcript(self.fake.url, key, unordered_scheduling=unordered),
                Transcript(self.real.url, key, unordered_scheduling=unordered))

    def run(self, scenario: Scenario) -> Tuple[Transcript, Transcript]:
        """The scenario against the fake, then against the real DM."""
        fake, real = self.transcripts()
        scenario(fake)
        scenario(real)
        return fake, real


@pytest.fixture(params=BUILDS, ids=[b.name for b in BUILDS])
def dm_build(request: pytest.FixtureRequest) -> Iterator[DMBuild]:
    """A complete real build (else a skip saying where the recipe is), kept from being
    rebuilt while the test runs."""
    build: DMBuild = request.param
    with build.in_use() as busy:
        reason = busy or build.missing()
        if reason is not None:
            pytest.skip(reason)
        yield build


@pytest.fixture
def dm_pair(dm_build: DMBuild, tmp_path: Path) -> Iterator[DMPair]:
    """A fresh real DM of this build and a fresh fake in the matching mode."""
    with contextlib.ExitStack() as stack:
        real = RealDecisionMaker(dm_build, tmp_path)
        stack.callback(real.stop)
        fake = FakeDecisionMaker(dm_build.private_key(),
                                 match_threads=dm_build.match_threads).start()
        stack.callback(fake.stop)
        yield DMPair(dm_build, fake, real)


def assert_same(pair: DMPair, fake: Transcript, real: Transcript) -> None:
    """Every step of the two transcripts equal; else all the differing steps, shown."""
    assert len(fake.steps) == len(real.steps)
    differences = [f"{mine[0]}:\n  fake {mine[1:]}\n  real {theirs[1:]}"
                   for mine, theirs in zip(fake.steps, real.steps, strict=True)
                   if mine != theirs]
    assert not differences, (f"{pair.build.name} ({pair.build.source()}), "
                             f"{len(differences)} of {len(fake.steps)} steps differ:\n"
                             + "\n".join(differences))
