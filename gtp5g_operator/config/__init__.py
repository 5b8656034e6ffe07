"""The configuration: schema (`schema`), value validators (`values`), parsing
(`parse`, pure) and loading with the files it names (`load`)."""

from .load import check_not_writable_by_others, load_config
from .parse import SECTIONS, ConfigError, describe_changes, parse_config
from .schema import (
    DEFAULT_CONFIG_PATH,
    FLAVORS,
    RULE_FLAVORS,
    TRACE_PIPE_CANDIDATES,
    ApiConfig,
    Config,
    LogConfig,
    MatchConfig,
    MetricsConfig,
    StrategyConfig,
    TraceConfig,
)
from .values import split_listen

__all__ = [
    "DEFAULT_CONFIG_PATH", "FLAVORS", "RULE_FLAVORS", "SECTIONS", "TRACE_PIPE_CANDIDATES",
    "ApiConfig", "Config", "ConfigError", "LogConfig", "MatchConfig", "MetricsConfig",
    "StrategyConfig", "TraceConfig", "check_not_writable_by_others", "describe_changes",
    "load_config", "parse_config", "split_listen",
]
