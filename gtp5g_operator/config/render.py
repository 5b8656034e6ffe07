"""The configuration as text: the effective values with their origins
(`check-config --print`, like `sshd -T`), and the example file with every key
commented out at its default (packaging/config.toml is generated from the
schema by `example_config`, and a test keeps the two equal)."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from typing import Any, List

from .parse import Vocabulary, keys, sections
from .schema import Config

DEFAULT = "default"


def toml_value(value: Any) -> str:
    """A validated value as TOML writes it (strings as JSON strings are valid TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def effective_config(config: Config) -> str:
    """Every key's value and the file that set it ("default" when none did)."""
    lines: List[str] = []
    for name in sections():
        lines.append(f"[{name}]")
        part = getattr(config, name)
        for f in dataclasses.fields(part):
            origin = config.origins.get(f"{name}.{f.name}", DEFAULT)
            lines.append(f"{f.name} = {toml_value(getattr(part, f.name))}  # {origin}")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


HEADER = """\
# gtp5g-operator(8): every configuration key, commented out at its default.
#
# This file is an example; the service reads /etc/gtp5g-operator/config.toml
# and then /etc/gtp5g-operator/config.d/*.toml in lexical order, each file
# overriding the keys it sets (e.g. config.d/50-site.toml with [api] url =
# "..." and [match] uid = [...]).  Unknown keys and wrong types are errors (the
# service refuses to start, and `systemctl reload` keeps the running
# configuration).  Check a change, and see where each value comes from:
#     gtp5g-operator check-config --print
# These files and the key file must be owned by root and not writable by other users.
"""


def _comment(text: str) -> List[str]:
    body = textwrap.dedent(text).strip("\n")
    return [f"# {line}".rstrip() for line in body.splitlines()]


def example_config(vocabulary: Vocabulary) -> str:
    lines = [HEADER]
    for name, cls in sections().items():
        lines.append(f"[{name}]")
        for key, f in keys(cls).items():
            lines += _comment(f.metadata["doc"])
            if f.metadata.get("choices") == "flavors":
                lines += [f"#   {json.dumps(fl.name):17} {fl.summary}" for fl in vocabulary.flavors]
            lines.append(f"# {key} = {toml_value(f.default)}")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
