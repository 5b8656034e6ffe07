"""The configuration's shape: immutable dataclasses with the documented defaults.

Pure data.  Values are validated by `config.values` when the TOML is parsed;
the fields that are not in the TOML (file contents read at load time) are at
the end of `Config` and kept out of its repr, so that a secret read from a
file can never reach a log line through a dataclass repr.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Tuple, Union

DEFAULT_CONFIG_PATH = "/etc/gtp5g-operator/config.toml"
TRACE_PIPE_CANDIDATES = (
    "/sys/kernel/tracing/trace_pipe",
    "/sys/kernel/debug/tracing/trace_pipe",
)
TASK_COMM_LEN = 16  # kernel limit including the NUL: names are at most 15 bytes
CREDENTIAL_NAME = "gthulhu-password"  # LoadCredential=gthulhu-password:...
FLAVORS = ("auto", "v0", "decision-maker", "manager")
RULE_FLAVORS = ("decision-maker", "manager")  # the server matches by name: no PIDs, no merge


@dataclass(frozen=True)
class TraceConfig:
    pipe: str = "auto"
    format: str = "auto"  # auto | raw | text
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
    flavor: str = "auto"
    public_key: str = "/etc/gtp5g-operator/jwt_public_key.pem"
    timeout: float = 5.0
    ca_file: str = ""
    node_name: str = ""  # "" = this host's name (as Kubernetes names nodes)
    username: str = ""  # Manager only
    password_file: str = ""  # Manager only; "" = $CREDENTIALS_DIRECTORY/gthulhu-password


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
    listen: str = ""  # "host:port" of the /metrics and /health endpoint; "" = off
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
    # Not from TOML: where it came from and what the named files hold, read
    # once at load so that no request re-reads a file and a reload can tell
    # whether a file's content changed.
    source: str = ""
    public_key_pem: str = field(default="", repr=False)
    ca_pem: str = field(default="", repr=False)
    password: str = field(default="", repr=False)  # secret: never logged or written
    node_name: str = ""  # api.node_name, or the host name when that is empty

    @property
    def rule_flavor(self) -> bool:
        return self.api.flavor in RULE_FLAVORS
