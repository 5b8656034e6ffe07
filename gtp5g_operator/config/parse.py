"""TOML documents into a validated Config: pure.

A configuration is one main file and any drop-ins (`load` reads them); each
is partial TOML of the same schema, and a later document overrides an
earlier one key by key.  Errors are `ConfigError`s whose message is one line
naming the file that set the key and the key path, e.g.
``config.d/50-site.toml: strategy.execution_time_ns: expected a positive integer
(nanoseconds), got "20ms"`` (on one line).
Unknown keys are errors: a typo must never silently fall back to a default.

Which flavors and trace readers exist is not known here (they live in
higher layers): the caller passes them in a `Vocabulary`, and each flavor
states its own constraints (`FlavorRules`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import sys
from dataclasses import dataclass
from typing import (
    Any,
    Dict,
    FrozenSet,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Union,
)

from . import values as v
from .schema import AUTO, Config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python < 3.11
    import tomli as tomllib


class ConfigError(Exception):
    """A configuration problem, with a one-line message naming file and key."""


class FlavorRules(Protocol):
    """What the configuration needs to know of a Gthulhu flavor."""

    name: str  # its api.flavor value
    summary: str  # one line for the example configuration

    def credentials(self, config: Config) -> FrozenSet[str]:
        """What it logs in with: "public-key" (a token for our key), "password"."""
        ...

    def priority_problem(self, priority: Union[bool, int]) -> str:
        """Why this flavor cannot take `strategy.priority` ("" when it can)."""
        ...

    def config_problem(self, config: Config) -> str:
        """What else this flavor cannot honour ("strategy.mode: ...", or "")."""
        ...


@dataclass(frozen=True)
class Vocabulary:
    """The names some keys take, from the registries of the layers above."""

    flavors: Sequence[FlavorRules]
    readers: Sequence[str]  # trace reader kinds, in the order "auto" tries them

    def choices(self, kind: str) -> Tuple[str, ...]:
        names = [f.name for f in self.flavors] if kind == "flavors" else list(self.readers)
        return (AUTO, *names)

    def flavor(self, name: str) -> Optional[FlavorRules]:
        return next((f for f in self.flavors if f.name == name), None)


Document = Tuple[str, Mapping[str, Any]]  # (file, its TOML as a mapping)


def sections() -> Dict[str, type]:
    """The TOML sections: Config's fields marked as sections, in order."""
    return {f.name: f.default_factory for f in dataclasses.fields(Config)  # type: ignore[misc]
            if f.metadata.get("section")}


def keys(cls: type) -> Dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls)}


def read_toml(text: str, source: str) -> Dict[str, Any]:
    if text.startswith("\ufeff"):
        # Some editors put one there; tomllib says only "Invalid statement (at line 1,
        # column 1)", pointing at a line that looks right because the mark is invisible.
        raise ConfigError(f"{source}: invalid TOML: the file starts with a byte order mark "
                          "(bytes EF BB BF), which TOML does not allow: save it as UTF-8 "
                          "without a BOM")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # message carries "(at line L, column C)"
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    except ValueError:  # int() inside tomllib refuses a decimal of over 4,300 digits
        raise ConfigError(f"{source}: invalid TOML: an integer too long to read") from None
    except RecursionError:  # arrays or inline tables nested about a thousand deep
        raise ConfigError(f"{source}: invalid TOML: arrays or tables nested too deeply"
                          ) from None


def merge(documents: Sequence[Document]) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, str]]:
    """The documents' keys, later ones winning key by key, and which file set each."""
    merged: Dict[str, Dict[str, Any]] = {}
    origins: Dict[str, str] = {}
    known = sections()
    for source, doc in documents:
        for name, value in doc.items():
            if name not in known:
                raise ConfigError(f"{source}: {v.fmt(name)[1:-1]}: "
                                  f"{_outside_tables(name, value, known)}")
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {name}: expected a table [{name}], got "
                                  f"{v.fmt(value)}")
            fields = keys(known[name])
            for key, item in value.items():
                if key not in fields:
                    raise ConfigError(f"{source}: {name}.{v.fmt(key)[1:-1]}: unknown key "
                                      f"(known: {', '.join(fields)})")
                merged.setdefault(name, {})[key] = item
                origins[f"{name}.{key}"] = source
    return merged, origins


def _outside_tables(name: str, value: Any, known: Mapping[str, type]) -> str:
    """What is wrong with a top-level name that is no section.  A key written above
    its table's header (`level = "debug"` before `[log]`, or with no header at all)
    is the usual cause, and was called an "unknown section"."""
    if isinstance(value, dict):
        return f"unknown section (known: {', '.join(known)})"
    owners = [section for section, cls in known.items() if name in keys(cls)]
    if owners:
        return (f"a key outside any table: put it under [{owners[0]}] "
                f"({owners[0]}.{name})")
    return f"unknown key outside any table (known sections: {', '.join(known)})"


def build_config(raw: Mapping[str, Mapping[str, Any]], origins: Mapping[str, str],
                 vocabulary: Vocabulary, source: str) -> Config:
    """Validate merged sections into a Config (`origins` names the file of each key)."""
    built = {}
    for name, cls in sections().items():
        kwargs = {}
        fields = keys(cls)
        for key, item in raw.get(name, {}).items():
            meta = fields[key].metadata
            choices = meta["choices"]  # a vocabulary the caller supplies, else a fixed check
            check = v.choice(*vocabulary.choices(choices)) if choices else meta["check"]
            try:
                kwargs[key] = check(item)
            except ValueError as exc:
                raise ConfigError(f"{origins.get(f'{name}.{key}', source)}: {name}.{key}: "
                                  f"{exc}") from None
        built[name] = cls(**kwargs)
    config = Config(source=source, origins=dict(origins), **built)
    for problem in (_metrics_address(config), _timeout(config), _flavor(config, vocabulary)):
        if problem:
            key = problem.split(":", 1)[0]
            # A rule across keys may be broken by the other key alone (the one the
            # message is about still at its default): name the file that set that.
            related = (key, *RELATED.get(key, ()))
            origin = next((origins[k] for k in related if k in origins), source)
            raise ConfigError(f"{origin}: {problem}")
    return config


# The keys a cross-key rule (below) also depends on, by the key its message names.
RELATED = {
    "api.timeout": ("strategy.resync_interval",),
    "metrics.listen": ("metrics.allow_remote",),
    "strategy.priority": ("api.flavor",),
    "strategy.mode": ("api.flavor",),
    "api.username": ("api.flavor",),
}


def parse_config(text: str, vocabulary: Vocabulary, source: str = "config.toml") -> Config:
    """Parse one TOML document into a Config (without reading the files it names)."""
    raw, origins = merge([(source, read_toml(text, source))])
    return build_config(raw, origins, vocabulary, source)


# --- rules across keys -----------------------------------------------------------------------


def _metrics_address(config: Config) -> str:
    listen = config.metrics.listen
    if listen and not config.metrics.allow_remote and not ipaddress.ip_address(
            v.split_listen(listen)[0]).is_loopback:
        return (f"metrics.listen: {listen} is not a loopback address; set "
                "metrics.allow_remote = true to expose metrics beyond this host")
    return ""


def _timeout(config: Config) -> str:
    if config.api.timeout >= config.strategy.resync_interval:
        return (f"api.timeout: must be shorter than strategy.resync_interval "
                f"({config.strategy.resync_interval:g} s)")
    return ""


def _flavor(config: Config, vocabulary: Vocabulary) -> str:
    """An explicit flavor's own constraints; with "auto", the priority must suit every
    flavor that could be detected."""
    chosen = vocabulary.flavor(config.api.flavor)
    if chosen is not None:
        return (chosen.priority_problem(config.strategy.priority)
                or chosen.config_problem(config))
    for flavor in vocabulary.flavors:
        problem = flavor.priority_problem(config.strategy.priority)
        if problem:
            return f"{problem} (api.flavor = \"auto\" may find a {flavor.name})"
    return ""


def describe_changes(old: Config, new: Config) -> Tuple[str, ...]:
    """Key paths whose values differ, e.g. ("strategy.execution_time_ns",)."""
    changed = []
    for name in sections():
        a, b = getattr(old, name), getattr(new, name)
        for f in dataclasses.fields(a):
            if getattr(a, f.name) != getattr(b, f.name):
                changed.append(f"{name}.{f.name}")
    for attr, what in (("public_key_pem", "api.public_key"), ("ca_pem", "api.ca_file"),
                       ("password", "the API password")):
        if getattr(old, attr) != getattr(new, attr):
            changed.append(f"{what} (contents)")
    return tuple(changed)
