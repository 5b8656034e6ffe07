"""Parse TOML text into a validated Config: pure.

Errors are `ConfigError`s whose message is one line naming the file and the
key path, e.g.
``config.toml: strategy.execution_time_ns: expected a positive integer, got "20ms"``.
Unknown keys are errors: a typo must never silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import sys
from typing import Any, Callable, Dict, Mapping, Tuple

from . import values as v
from .schema import (
    RULE_FLAVORS,
    ApiConfig,
    Config,
    LogConfig,
    MatchConfig,
    MetricsConfig,
    StrategyConfig,
    TraceConfig,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python < 3.11
    import tomli as tomllib


class ConfigError(Exception):
    """A configuration problem, with a one-line message naming file and key."""


_SCHEMA: Dict[str, Tuple[type, Dict[str, Callable[[Any], Any]]]] = {
    "trace": (TraceConfig, {
        "pipe": v.trace_pipe,
        "format": v.choice("auto", "raw", "text"),
        "allow_pid_namespace": v.boolean,
    }),
    "match": (MatchConfig, {"comm": v.comm_list, "exe": v.exe_list, "uid": v.uid_list}),
    "api": (ApiConfig, {
        "url": v.api_url,
        "flavor": v.choice("auto", "v0", "decision-maker", "manager"),
        "public_key": v.abs_path,
        "timeout": v.seconds(0.1, 60.0),
        "ca_file": v.optional_abs_path,
        "node_name": v.node_name,
        "username": v.username,
        "password_file": v.optional_abs_path,
    }),
    "strategy": (StrategyConfig, {
        "priority": v.priority,
        "execution_time_ns": v.positive_ns,
        "targets": v.choice("tgid", "tid", "both"),
        "mode": v.choice("overwrite", "merge"),
        "resync_interval": v.seconds(0.5, 3600.0),
        "liveness_interval": v.seconds(0.1, 3600.0),
        "clear_on_stop": v.boolean,
    }),
    "log": (LogConfig, {"level": v.choice("debug", "info", "warning", "error")}),
    "metrics": (MetricsConfig, {
        "listen": v.listen_address,
        "allow_remote": v.boolean,
        "textfile": v.optional_abs_path,
    }),
}
SECTIONS = tuple(_SCHEMA)


def parse_config(text: str, source: str = "config.toml") -> Config:
    """Parse TOML text into a Config (without reading the files it names)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # message carries "(at line L, column C)"
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    except ValueError:  # int() inside tomllib refuses a decimal of over 4,300 digits
        raise ConfigError(f"{source}: invalid TOML: an integer too long to read") from None
    except RecursionError:  # arrays or inline tables nested about a thousand deep
        raise ConfigError(f"{source}: invalid TOML: arrays or tables nested too deeply"
                          ) from None
    return build_config(raw, source)


def build_config(raw: Mapping[str, Any], source: str) -> Config:
    sections = {name: _section(name, value, source) for name, value in raw.items()}
    config = Config(source=source, **sections)
    for check in (_check_metrics_address, _check_timeout, _check_flavor):
        problem = check(config)
        if problem:
            raise ConfigError(f"{source}: {problem}")
    return config


def _section(name: str, value: Any, source: str) -> Any:
    if name not in _SCHEMA:
        raise ConfigError(f"{source}: {v.fmt(name)[1:-1]}: unknown section "
                          f"(known: {', '.join(_SCHEMA)})")
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {name}: expected a table [{name}], got {v.fmt(value)}")
    cls, fields = _SCHEMA[name]
    kwargs = {}
    for key, item in value.items():
        if key not in fields:
            raise ConfigError(f"{source}: {name}.{v.fmt(key)[1:-1]}: unknown key "
                              f"(known: {', '.join(fields)})")
        try:
            kwargs[key] = fields[key](item)
        except ValueError as exc:
            raise ConfigError(f"{source}: {name}.{key}: {exc}") from None
    return cls(**kwargs)


def _check_metrics_address(config: Config) -> str:
    listen = config.metrics.listen
    if listen and not config.metrics.allow_remote and not ipaddress.ip_address(
            v.split_listen(listen)[0]).is_loopback:
        return (f"metrics.listen: {listen} is not a loopback address; set "
                "metrics.allow_remote = true to expose metrics beyond this host")
    return ""


def _check_timeout(config: Config) -> str:
    if config.api.timeout >= config.strategy.resync_interval:
        return (f"api.timeout: must be shorter than strategy.resync_interval "
                f"({config.strategy.resync_interval:g} s)")
    return ""


def _check_flavor(config: Config) -> str:
    api, strategy = config.api, config.strategy
    if api.flavor in RULE_FLAVORS and strategy.mode == "merge":
        return (f'strategy.mode: "merge" is for the v0 API only; a {api.flavor} keeps each '
                "writer's rules apart by itself (use \"overwrite\")")
    if api.flavor != "v0" and strategy.priority is not True and strategy.priority <= 0:
        return (f"strategy.priority: {v.fmt(strategy.priority)} would not boost anything: the "
                "Decision Maker and the Manager take an integer > 0 (true means 1); only "
                'api.flavor = "v0" (the 2025 API) takes false')
    if api.flavor == "manager" and not api.username:
        return 'api.username: required with api.flavor = "manager"'
    return ""


def describe_changes(old: Config, new: Config) -> Tuple[str, ...]:
    """Key paths whose values differ, e.g. ("strategy.execution_time_ns",)."""
    changed = []
    for section in _SCHEMA:
        a, b = getattr(old, section), getattr(new, section)
        for f in dataclasses.fields(a):
            if getattr(a, f.name) != getattr(b, f.name):
                changed.append(f"{section}.{f.name}")
    for attr, what in (("public_key_pem", "api.public_key"), ("ca_pem", "api.ca_file"),
                       ("password", "the API password")):
        if getattr(old, attr) != getattr(new, attr):
            changed.append(f"{what} (contents)")
    return tuple(changed)
