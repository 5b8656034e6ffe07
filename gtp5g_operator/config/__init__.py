"""The configuration: the schema with every key's default, validator and
documentation (`schema`), value validators (`values`), parsing and merging
(`parse`, pure), loading the files (`load`), the trace source's paths and the
mount table (`paths`), and rendering (`render`)."""

from .load import check_not_writable_by_others, load_config
from .parse import ConfigError, Vocabulary, describe_changes, parse_config
from .schema import (
    AUTO,
    DEFAULT_CONFIG_PATH,
    ApiConfig,
    Config,
    MatchConfig,
    StrategyConfig,
    TraceConfig,
)

__all__ = [
    "AUTO", "DEFAULT_CONFIG_PATH", "ApiConfig", "Config", "ConfigError",
    "MatchConfig", "StrategyConfig", "TraceConfig", "Vocabulary",
    "check_not_writable_by_others", "describe_changes", "load_config", "parse_config",
]
