"""Configuration: parse and validate the TOML file into an immutable Config.

Everything here is pure except `load_config`, which reads the file (and the
public key it names).  Errors are `ConfigError`s whose message is one line
naming the file and the key path, e.g.
``config.toml: strategy.execution_time_ns: expected a positive integer, got "20ms"``.
Unknown keys are errors: a typo must never silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress
import os
import stat
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Tuple, Union
from urllib.parse import urlsplit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python < 3.11
    import tomli as tomllib

DEFAULT_CONFIG_PATH = "/etc/gtp5g-operator/config.toml"
TRACE_PIPE_CANDIDATES = (
    "/sys/kernel/tracing/trace_pipe",
    "/sys/kernel/debug/tracing/trace_pipe",
)
TASK_COMM_LEN = 16  # kernel limit including the NUL: names are at most 15 bytes


class ConfigError(Exception):
    """A configuration problem, with a one-line message naming file and key."""


@dataclass(frozen=True)
class TraceConfig:
    pipe: str = "auto"
    # trace_pipe reports IDs of the initial PID namespace; in another one /proc
    # names other processes.  Only for a trace source of that namespace (tests).
    allow_pid_namespace: bool = False


@dataclass(frozen=True)
class MatchConfig:
    comm: Tuple[str, ...] = ("nr-gnb",)
    exe: Tuple[str, ...] = ()
    uid: Tuple[int, ...] = ()


@dataclass(frozen=True)
class ApiConfig:
    url: str = "http://127.0.0.1:8080"
    public_key: str = "/etc/gtp5g-operator/jwt_public_key.pem"
    timeout: float = 5.0
    ca_file: str = ""


@dataclass(frozen=True)
class StrategyConfig:
    priority: Union[bool, int] = True
    execution_time_ns: int = 20_000_000
    targets: str = "both"
    mode: str = "overwrite"
    resync_interval: float = 10.0
    liveness_interval: float = 5.0
    clear_on_stop: bool = False


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = ""  # "host:port" of the /metrics endpoint; "" = off
    allow_remote: bool = False
    textfile: str = ""  # node-exporter textfile collector file; "" = off


@dataclass(frozen=True)
class Config:
    trace: TraceConfig = field(default_factory=TraceConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    # Not from TOML: where it came from and the key's PEM text, so that a
    # reload can tell whether the key changed and no request re-reads files.
    source: str = ""
    public_key_pem: str = ""


# --- validators: each takes the raw TOML value and returns the typed value or
# raises ValueError with the "expected ..." text.


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _expect(cond: bool, what: str, value: Any) -> None:
    if not cond:
        raise ValueError(f"expected {what}, got {_fmt(value)}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float))) and not isinstance(v, bool)


def _nonempty_str(v: Any) -> str:
    _expect(isinstance(v, str) and v != "", "a non-empty string", v)
    return str(v)


def _bool(v: Any) -> bool:
    _expect(isinstance(v, bool), "true or false", v)
    return bool(v)


def _seconds(low: float, high: float) -> Callable[[Any], float]:
    def check(v: Any) -> float:
        _expect(_is_number(v) and low < v <= high, f"a number of seconds in ({low}, {high}]", v)
        return float(v)

    return check


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        _expect(v in choices, "one of " + ", ".join(f'"{c}"' for c in choices), v)
        return str(v)

    return check


def _comm_list(v: Any) -> Tuple[str, ...]:
    what = "a non-empty list of process names (1 to 15 bytes each)"
    _expect(isinstance(v, list) and len(v) > 0, what, v)
    for name in v:
        ok = isinstance(name, str) and 0 < len(name.encode()) < TASK_COMM_LEN
        _expect(ok, what, name)
    return tuple(v)


def _exe_list(v: Any) -> Tuple[str, ...]:
    what = "a list of absolute executable paths"
    _expect(isinstance(v, list), what, v)
    for path in v:
        _expect(isinstance(path, str) and path.startswith("/"), what, path)
    return tuple(v)


def _uid_list(v: Any) -> Tuple[int, ...]:
    what = "a list of non-negative integer uids"
    _expect(isinstance(v, list), what, v)
    for uid in v:
        _expect(_is_int(uid) and 0 <= uid < 2**32, what, uid)
    return tuple(v)


def _trace_pipe(v: Any) -> str:
    _expect(isinstance(v, str) and (v == "auto" or v.startswith("/")),
            '"auto" or an absolute path', v)
    return str(v)


def _api_url(v: Any) -> str:
    what = "an http:// or https:// URL with a host"
    _expect(isinstance(v, str), what, v)
    parts = urlsplit(v)
    _expect(parts.scheme in ("http", "https") and bool(parts.hostname), what, v)
    return str(v).rstrip("/")


def _abs_path(v: Any) -> str:
    _expect(isinstance(v, str) and v.startswith("/"), "an absolute path", v)
    return str(v)


def _optional_abs_path(v: Any) -> str:
    _expect(isinstance(v, str) and (v == "" or v.startswith("/")),
            'an absolute path or ""', v)
    return str(v)


def _priority(v: Any) -> Union[bool, int]:
    # The 2025 API takes a bool, later releases an integer: both are passed through
    # unchanged, since the server rejects the other type with a 400.
    _expect(isinstance(v, bool) or (_is_int(v) and -(2**31) <= v < 2**31),
            "true/false (2025 API) or an integer (later API)", v)
    return v  # type: ignore[no-any-return]


def split_listen(value: str) -> Tuple[str, int]:
    """("127.0.0.1", 9469) from "127.0.0.1:9469" or "[::1]:9469"."""
    host, _, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(value)
    return host, int(port)


def _listen_address(v: Any) -> str:
    what = '"" (off) or "address:port", e.g. "127.0.0.1:9469"'
    _expect(isinstance(v, str), what, v)
    if v:
        try:
            ipaddress.ip_address(split_listen(v)[0])
        except ValueError:
            raise ValueError(f"expected {what}, got {_fmt(v)}") from None
    return str(v)


def _positive_ns(v: Any) -> int:
    _expect(_is_int(v) and 0 < v < 2**63, "a positive integer (nanoseconds)", v)
    return int(v)


_SCHEMA: Dict[str, Tuple[type, Dict[str, Callable[[Any], Any]]]] = {
    "trace": (TraceConfig, {"pipe": _trace_pipe, "allow_pid_namespace": _bool}),
    "match": (MatchConfig, {"comm": _comm_list, "exe": _exe_list, "uid": _uid_list}),
    "api": (ApiConfig, {
        "url": _api_url,
        "public_key": _abs_path,
        "timeout": _seconds(0.0, 60.0),
        "ca_file": _optional_abs_path,
    }),
    "strategy": (StrategyConfig, {
        "priority": _priority,
        "execution_time_ns": _positive_ns,
        "targets": _choice("tgid", "tid", "both"),
        "mode": _choice("overwrite", "merge"),
        "resync_interval": _seconds(0.0, 3600.0),
        "liveness_interval": _seconds(0.0, 3600.0),
        "clear_on_stop": _bool,
    }),
    "log": (LogConfig, {"level": _choice("debug", "info", "warning", "error")}),
    "metrics": (MetricsConfig, {
        "listen": _listen_address,
        "allow_remote": _bool,
        "textfile": _optional_abs_path,
    }),
}


def parse_config(text: str, source: str = "config.toml") -> Config:
    """Parse TOML text into a Config (without reading the key file)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # message carries "(at line L, column C)"
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    return build_config(raw, source)


def build_config(raw: Mapping[str, Any], source: str) -> Config:
    sections: Dict[str, Any] = {}
    for name, value in raw.items():
        if name not in _SCHEMA:
            raise ConfigError(f"{source}: {name}: unknown section (known: {', '.join(_SCHEMA)})")
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {name}: expected a table [{name}], got {_fmt(value)}")
        cls, fields = _SCHEMA[name]
        kwargs = {}
        for key, item in value.items():
            if key not in fields:
                raise ConfigError(f"{source}: {name}.{key}: unknown key "
                                  f"(known: {', '.join(fields)})")
            try:
                kwargs[key] = fields[key](item)
            except ValueError as exc:
                raise ConfigError(f"{source}: {name}.{key}: {exc}") from None
        sections[name] = cls(**kwargs)
    config = Config(source=source, **sections)
    listen = config.metrics.listen
    if listen and not config.metrics.allow_remote and not ipaddress.ip_address(
            split_listen(listen)[0]).is_loopback:
        raise ConfigError(f"{source}: metrics.listen: {listen} is not a loopback address; "
                          "set metrics.allow_remote = true to expose metrics beyond this host")
    if config.api.timeout >= config.strategy.resync_interval:
        raise ConfigError(f"{source}: api.timeout: must be shorter than "
                          f"strategy.resync_interval ({config.strategy.resync_interval:g} s)")
    return config


def check_not_writable_by_others(path: str, st: os.stat_result) -> None:
    """Refuse files others could edit (like sshd's StrictModes).

    The file steers the CPU scheduler as root: if another user could edit it
    (or the key it names), that user could boost anything.
    """
    if st.st_uid not in (0, os.geteuid()):
        raise ConfigError(f"{path}: owned by uid {st.st_uid}; must be owned by root")
    if st.st_mode & stat.S_IWOTH or (st.st_mode & stat.S_IWGRP and st.st_gid != 0):
        raise ConfigError(f"{path}: writable by other users (mode "
                          f"{stat.S_IMODE(st.st_mode):04o}); run chmod go-w {path}")


def _read_text(path: str, what: str) -> str:
    try:
        with open(path, "rb") as f:
            check_not_writable_by_others(path, os.fstat(f.fileno()))
            data = f.read(1 << 20)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: {what} is not UTF-8 (byte {exc.start})") from None


def validate_public_key(pem: str, path: str) -> None:
    """The API only accepts an RSA public key in PKIX PEM: check that up front."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        raise ConfigError(f"{path}: api.public_key: not a PEM public key "
                          "(expected -----BEGIN PUBLIC KEY-----)") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigError(f"{path}: api.public_key: not an RSA key "
                          f"({type(key).__name__.lstrip('_')}); the API needs RSA")


def load_config(path: str) -> Config:
    """Read, parse and validate the whole configuration, key file included."""
    config = parse_config(_read_text(path, "configuration"), path)
    key_path = config.api.public_key
    pem = _read_text(key_path, "public key")
    validate_public_key(pem, key_path)
    if config.api.ca_file:
        _read_text(config.api.ca_file, "CA file")
    metrics = config.metrics
    if (metrics.listen or metrics.textfile) and importlib.util.find_spec(
            "prometheus_client") is None:
        raise ConfigError(f"{path}: metrics: the prometheus_client module is not installed "
                          "(Debian: python3-prometheus-client)")
    return dataclasses.replace(config, public_key_pem=pem)


def describe_changes(old: Config, new: Config) -> Tuple[str, ...]:
    """Key paths whose values differ, e.g. ("strategy.execution_time_ns",)."""
    changed = []
    for section in _SCHEMA:
        a, b = getattr(old, section), getattr(new, section)
        for f in dataclasses.fields(a):
            if getattr(a, f.name) != getattr(b, f.name):
                changed.append(f"{section}.{f.name}")
    if old.public_key_pem != new.public_key_pem:
        changed.append("api.public_key (contents)")
    return tuple(changed)

