"""tests/vm: the sched_ext proof's functional part in QEMU guests (`-m vm`).

Tests marked `vm` boot emulated guests (minutes each): they run only when the
marker expression asks for them (`pytest -m vm`); a plain `pytest` / `make
test` deselects them, so it is as fast as without them.  The pure parts of
bench/vm are tested here too, unmarked (they run everywhere).
"""

from __future__ import annotations

from typing import List

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    if "vm" in (config.getoption("markexpr", "") or ""):
        return
    keep: List[pytest.Item] = []
    drop: List[pytest.Item] = []
    for item in items:
        (drop if item.get_closest_marker("vm") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
