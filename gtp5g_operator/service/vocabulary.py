"""The registries the configuration is checked against, and the one way to load it.

`config` (a lower layer) cannot know which Gthulhu flavors and trace readers
exist; they are listed in `gthulhu.registry` and `trace.readers`.  The
daemon, `check-config` and `doctor` all load through `load` here, so they
accept exactly the same configurations.
"""

from __future__ import annotations

import os
from typing import Mapping

from ..config import Config, Vocabulary, load_config
from ..gthulhu.registry import FLAVORS
from ..trace.readers import READERS

VOCABULARY = Vocabulary(flavors=FLAVORS, readers=tuple(r.kind for r in READERS))


def load(path: str, env: Mapping[str, str] = os.environ,
         vocabulary: Vocabulary = VOCABULARY) -> Config:
    """`vocabulary`: another registry (a test's flavor added)."""
    return load_config(path, vocabulary, env)


def example_config() -> str:
    """packaging/config.toml: every key at its default, documented (`make example-config`)."""
    from ..config.render import example_config as render

    return render(VOCABULARY)
