"""Speaking to Gthulhu: one writer per flavor behind one interface (`writer`).

`http` (JSON over HTTP within one deadline), `auth` (tokens), the writers
`v0` (the 2025 API, with `merge`), `decision_maker` and `manager`, and
`detect` (api.flavor = "auto").  `build_writer` picks the writer.
"""

from __future__ import annotations

import time
from typing import Callable

from ..config import Config
from .detect import AutoWriter, make_flavor_writer
from .http import JsonHttp
from .writer import ApiWriter


def build_writer(config: Config, state_dir: str,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> ApiWriter:
    http = JsonHttp(config.api.url, config.api.timeout, config.ca_pem, clock)
    if config.api.flavor == "auto":
        return AutoWriter(http, config, state_dir, clock, wall_clock)
    return make_flavor_writer(config.api.flavor, http, config, state_dir, clock, wall_clock)
