"""Speaking to Gthulhu: one writer per flavor behind one interface (`writer`).

`http` (JSON over HTTP within one deadline), `auth` (tokens), `v0` (the 2025
API, with `merge`), and `build_writer`, which picks the writer for
`api.flavor`.
"""

from __future__ import annotations

import time
from typing import Callable

from ..config import Config
from .http import JsonHttp
from .merge import OwnedIds
from .v0 import V0Writer
from .writer import ApiWriter


def build_writer(config: Config, state_dir: str,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> ApiWriter:
    http = JsonHttp(config.api.url, config.api.timeout, config.ca_pem, clock)
    owned = OwnedIds(state_dir, config.api.url) if config.strategy.mode == "merge" else None
    return V0Writer(http, config, owned, clock, wall_clock)
