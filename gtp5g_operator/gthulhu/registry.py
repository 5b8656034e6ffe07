"""The Gthulhu flavors this service speaks: one ordered list.

Everything that depends on which flavors exist derives from `FLAVORS`: the
configuration's `api.flavor` choices and per-flavor rules, the order in which
`auto` detection tries them, the writer factory, `status` and `doctor`.  A new
flavor is a module with its `ApiWriter` subclass and one line here (placed
where detection should try it: before any flavor that would also recognise
its server).
"""

from __future__ import annotations

import time
from typing import Callable, Tuple, Type

from ..config import Config
from .decision_maker import DecisionMakerWriter
from .detect import AutoWriter
from .http import JsonHttp
from .manager import ManagerWriter
from .v0 import V0Writer
from .writer import ApiWriter

FLAVORS: Tuple[Type[ApiWriter], ...] = (
    DecisionMakerWriter,  # before v0: both trade our key for a token
    V0Writer,
    ManagerWriter,
)


def build_writer(config: Config, state_dir: str,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 flavors: Tuple[Type[ApiWriter], ...] = FLAVORS) -> ApiWriter:
    """The writer `api.flavor` asks for (the configuration was validated against
    `flavors`, so the name is one of them or "auto")."""
    http = JsonHttp(config.api.url, config.api.timeout, config.ca_pem, clock)
    flavor = next((f for f in flavors if f.name == config.api.flavor), None)
    if flavor is None:  # "auto"
        return AutoWriter(http, config, state_dir, flavors, clock, wall_clock)
    return flavor.create(http, config, state_dir, clock, wall_clock)
