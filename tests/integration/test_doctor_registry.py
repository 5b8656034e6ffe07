"""A flavor is one class and one line in the registry: a test registers a dummy flavor
and sees the configuration, detection, `status` and the whole of doctor accept it —
nothing else in doctor names the flavors.  The dummy speaks to the test bed's real v0
server through the real token route (and is tried first, as a new flavor placed
before v0 would be)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Type

from gtp5g_operator.commands.doctor.options import Options
from gtp5g_operator.commands.doctor.runner import run_checks
from gtp5g_operator.commands.status import format_status
from gtp5g_operator.config import Config, Vocabulary
from gtp5g_operator.core.readback import Comparison
from gtp5g_operator.core.tracker import ProcessView
from gtp5g_operator.gthulhu.detect import Probe, detect
from gtp5g_operator.gthulhu.http import JsonHttp
from gtp5g_operator.gthulhu.registry import FLAVORS
from gtp5g_operator.gthulhu.writer import ApiWriter, Holdings, PublicKeyToken
from gtp5g_operator.service.vocabulary import VOCABULARY, load
from testbed.fake_gthulhu import FakeGthulhu
from testbed.harness import write_config
from tests.conftest import base_config

WHAT_IT_HOLDS = "the dummy holds what a dummy holds"


class DummyWriter(ApiWriter):
    name = "dummy"
    display = "dummy API"
    summary = "a flavor of this test only"
    login: PublicKeyToken

    @classmethod
    def probe(cls, probe: Probe, deadline: float) -> bool:
        return probe.token(deadline) is not None

    @classmethod
    def create(cls, http: JsonHttp, config: Config, state_dir: str,
               clock: Callable[[], float], wall_clock: Callable[[], float]) -> DummyWriter:
        writer = cls(http, config.strategy)
        writer.login = PublicKeyToken(http, config, False, clock, wall_clock)
        return writer

    def write(self, views: Sequence[ProcessView], deadline: float) -> int:
        raise AssertionError("doctor never writes")

    def clear(self, deadline: float) -> None:
        raise AssertionError("doctor never clears")

    def holdings(self, deadline: float, last_rule: Optional[str] = None) -> Holdings:
        return Holdings(WHAT_IT_HOLDS, None)

    def read_back(self, views: Sequence[ProcessView], deadline: float,
                  rule: Optional[str] = None) -> Optional[Comparison]:
        return None

    def verify_problem(self) -> str:
        return "a dummy cannot say what the scheduler boosts; nothing to do"


REGISTRY: Tuple[Type[ApiWriter], ...] = (DummyWriter, *FLAVORS)


def test_a_registered_flavor_is_accepted_everywhere(tmp_path: Path, trace_pipe: Path,
                                                    api: FakeGthulhu,
                                                    keys: Dict[str, Path]) -> None:
    path = write_config(tmp_path / "config.toml", **base_config(
        trace_pipe, api.url, keys["public"], api={"flavor": "dummy"},
        match={"comm": ["dgnb-nobodys"]}))
    # the configuration: only with the flavor registered
    config = load(str(path), vocabulary=Vocabulary(REGISTRY, VOCABULARY.readers))
    assert config.api.flavor == "dummy"
    # detection: tried in the registry's order
    http = JsonHttp(api.url, 2.0)
    try:
        assert detect(Probe(http, config), REGISTRY, time.monotonic() + 2.0) is DummyWriter
    finally:
        http.close()
    # status: shows whatever flavor the running service says it speaks
    state: Dict[str, Any] = {"pid": 1, "api": {"url": api.url, "flavor": "dummy"}}
    assert f"API:        {api.url} (dummy)" in format_status(state, time.time())
    # doctor, whole
    options = Options(config=str(path), sysfs=str(tmp_path / "no-sys"),
                      runtime_dir=str(tmp_path / "run"), window=0.0)
    checks = {c.name: c for c in run_checks(options, flavors=REGISTRY, systemctl="/bin/false")}
    assert checks["config"].level == "ok"
    assert checks["api flavor"].saw == "the server is a Gthulhu dummy API; api.flavor = dummy"
    assert checks["api token"].level == "ok"
    assert checks["api strategies"].saw == WHAT_IT_HOLDS
    assert checks["boost"].saw == "no live target would be boosted: nothing to read back"
    assert api.posts() == []
    # and without it, the same file is refused by name
    refused = {c.name: c for c in run_checks(options, systemctl="/bin/false")}
    assert refused["config"].level == "fail" and "api.flavor" in refused["config"].saw
