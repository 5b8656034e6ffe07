"""1. Configuration: what check-config says, and who may change the files it names.

The daemon, check-config and doctor all judge the file with `load_config`, so
what doctor accepts the daemon runs with.  When it is refused, the rest of
the report still needs the settings: they are taken from the file alone
(without the files it names), else the defaults — and the report says so.
"""

from __future__ import annotations

import dataclasses
import functools
import grp
import os
import pwd
import stat
from typing import Callable, List, Mapping, Optional, Tuple

from ...config import Config, ConfigError, Vocabulary
from ...config.load import (
    cleartext_credentials,
    host_node_name,
    judge_file,
    load_settings,
    named_files,
)
from ...service.vocabulary import VOCABULARY, load
from .model import Check, fail, ok, warn

FileJudge = Callable[[str, os.stat_result], None]


@dataclasses.dataclass(frozen=True)
class ConfigOutcome:
    config: Config
    loaded: bool  # the service would accept it: every file it names was read and checked
    checks: List[Check]


def config_checks(path: str, env: Optional[Mapping[str, str]] = None,
                  vocabulary: Vocabulary = VOCABULARY) -> ConfigOutcome:
    env = os.environ if env is None else env
    try:
        # what the daemon and check-config load, the same way
        config = load(path, env, vocabulary=vocabulary)
    except ConfigError as exc:
        fallback, note = _fallback(path, vocabulary)
        check = fail("config", f"{exc} ({note})",
                     f"fix it; `gtp5g-operator check-config --config {path}` then prints ok")
        return ConfigOutcome(fallback, False, [check, *file_checks(fallback, env, vocabulary)])
    drop_ins = len(config.files) - 1
    check = ok("config", f"{path} is valid{f' with {drop_ins} drop-in(s)' if drop_ins else ''}: "
                         f"API {config.api.url} (flavor {config.api.flavor}), trace.pipe "
                         f"{config.trace.pipe}, match.comm {', '.join(config.match.comm)}")
    cleartext = cleartext_credentials(config, vocabulary)
    transport = [warn("transport", cleartext, "serve the API over https://")] if cleartext else []
    return ConfigOutcome(config, True,
                         [check, *transport, *file_checks(config, env, vocabulary)])


def _fallback(path: str, vocabulary: Vocabulary) -> Tuple[Config, str]:
    """The settings to check the rest with when the service would refuse the files."""
    try:
        config = load_settings(path, vocabulary)
    except ConfigError:
        return Config(source=path), "the other checks use the defaults"
    return (dataclasses.replace(config, node_name=config.api.node_name or host_node_name()),
            "the other checks use the files' settings; the API is not checked")


def file_checks(config: Config, env: Mapping[str, str],
                vocabulary: Vocabulary = VOCABULARY) -> List[Check]:
    return [file_check(what, path, functools.partial(judge_file, secret=secret, env=env))
            for what, path, secret in named_files(config, vocabulary, env)]


def file_check(what: str, path: str, judge: FileJudge) -> Check:
    try:
        st = os.stat(path)
    except OSError as exc:
        where = ("pass --config PATH" if what == "config file"
                 else "correct its path in the configuration")
        return fail(what, f"{path}: {exc.strerror}", f"create it, or {where}")
    owner = describe_owner(st)
    try:
        judge(path, st)
    except ConfigError as exc:
        # The message ends with the command that fixes it ("...; run chmod go-w PATH").
        problem, _, command = str(exc).partition("; run ")
        fix = command or f"chown root {path}"
        return fail(what, f"{problem} (owner {owner})", f"the service refuses it: {fix}")
    return ok(what, f"{path}: owner {owner}, mode {stat.S_IMODE(st.st_mode):04o}")


def describe_owner(st: os.stat_result) -> str:
    return f"{_name(pwd.getpwuid, st.st_uid)}:{_name(grp.getgrgid, st.st_gid)}"


def _name(lookup: Callable[[int], object], ident: int) -> str:
    try:
        entry: Optional[object] = lookup(ident)
    except KeyError:
        return str(ident)
    return str(getattr(entry, "pw_name", None) or getattr(entry, "gr_name", ident))
