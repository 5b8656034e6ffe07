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
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple

from ...config import Config, ConfigError, Vocabulary
from ...config.load import (
    cleartext_credentials,
    host_node_name,
    judge_file,
    load_settings,
    named_files,
)
from ...config.paths import TRACE_PIPE_CANDIDATES, hidden_by_unit, resolve_pipe
from ...service.vocabulary import VOCABULARY, load
from .model import Check, fail, ok, warn

FileJudge = Callable[[str, os.stat_result], None]
Hidden = Sequence[Tuple[str, str]]


@dataclasses.dataclass(frozen=True)
class ConfigOutcome:
    config: Config
    loaded: bool  # the service would accept it: every file it names was read and checked
    checks: List[Check]


def config_checks(path: str, env: Optional[Mapping[str, str]] = None,
                  vocabulary: Vocabulary = VOCABULARY, hidden: Hidden = ()) -> ConfigOutcome:
    """`hidden`: (directory, setting) the installed unit hides from the service."""
    env = os.environ if env is None else env
    try:
        # what the daemon and check-config load, the same way
        config = load(path, env, vocabulary=vocabulary)
    except ConfigError as exc:
        fallback, note = _fallback(path, vocabulary)
        check = fail("config", f"{exc} ({note})",
                     f"fix it; `gtp5g-operator check-config --config {path}` then prints ok")
        return ConfigOutcome(fallback, False,
                             [check, *file_checks(fallback, env, vocabulary, hidden)])
    drop_ins = len(config.files) - 1
    check = ok("config", f"{path} is valid{f' with {drop_ins} drop-in(s)' if drop_ins else ''}: "
                         f"API {config.api.url} (flavor {config.api.flavor}), trace.pipe "
                         f"{config.trace.pipe}, match.comm {', '.join(config.match.comm)}")
    cleartext = cleartext_credentials(config, vocabulary)
    transport = [warn("transport", cleartext, "serve the API over https://")] if cleartext else []
    return ConfigOutcome(config, True,
                         [check, *transport, *file_checks(config, env, vocabulary, hidden)])


def _fallback(path: str, vocabulary: Vocabulary) -> Tuple[Config, str]:
    """The settings to check the rest with when the service would refuse the files."""
    try:
        # Owner and mode unjudged: a file the service refuses for them still says what the
        # admin meant (its key file, match.comm), and has its own line saying why it is
        # refused; with the defaults instead, the key file line sent the admin to create
        # /etc/gtp5g-operator/jwt_public_key.pem, which the files do not name.
        config = load_settings(path, vocabulary, judged=False)
    except ConfigError:
        return Config(source=path), "the other checks use the defaults"
    but = ""
    try:
        load_settings(path, vocabulary)
    except ConfigError:  # refused for owner or mode: another user may have written them
        # Their paths are only shown and stat()ed, but root's doctor reads the files in
        # trace.pipe's directory: a trace.pipe of theirs had it open what they linked
        # there (a FIFO; a device such as /dev/watchdog, whose open has effects).
        if resolve_pipe(config.trace.pipe) not in TRACE_PIPE_CANDIDATES:
            config = dataclasses.replace(config, trace=dataclasses.replace(
                config.trace, pipe="auto"))
            but = ' but trace.pipe, "auto" here (they may be another user\'s)'
    return (dataclasses.replace(config, node_name=config.api.node_name or host_node_name()),
            f"the other checks use the files' settings{but}; the API is not checked")


def file_checks(config: Config, env: Mapping[str, str],
                vocabulary: Vocabulary = VOCABULARY, hidden: Hidden = ()) -> List[Check]:
    checks = [file_check(what, path, functools.partial(judge_file, secret=secret, env=env),
                         hidden)
              for what, path, secret in named_files(config, vocabulary, env)]
    textfile = hidden_check("metrics textfile", config.metrics.textfile, hidden, written=True)
    return checks + ([textfile] if config.metrics.textfile and textfile else [])


def hidden_check(what: str, path: str, hidden: Hidden, written: bool = False
                 ) -> Optional[Check]:
    """A path this shell sees and the service does not (the unit's PrivateTmp=,
    ProtectHome=): the service would not find the file, or write one no one reads."""
    setting = hidden_by_unit(path, hidden) if hidden else ""
    if not setting:
        return None
    if not written:
        effect = "the service does not see it (No such file or directory)"
    elif setting.startswith("PrivateTmp"):
        effect = "the service writes a copy of its own there, which node-exporter never reads"
    else:  # ProtectHome=yes or tmpfs: empty and inaccessible or read-only (systemd.exec(5))
        effect = "the service cannot write there (the place is empty and not writable for it)"
    real = os.path.realpath(path)
    shown = path if real == os.path.abspath(path) else f"{path} (resolved: {real})"
    return warn(what, f"{shown}: the unit's {setting} hides that place: {effect}",
                "move it under /etc/gtp5g-operator" if not written else
                "use node-exporter's textfile directory, e.g. "
                "/var/lib/prometheus/node-exporter/gtp5g_operator.prom")


def file_check(what: str, path: str, judge: FileJudge, hidden: Hidden = ()) -> Check:
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
        # The message ends with the command that fixes it ("...; run chmod go-w PATH"),
        # which may be its directory's
        problem, _, command = str(exc).partition("; run ")
        return fail(what, f"{problem} (owner {owner})", f"the service refuses it: {command}")
    return hidden_check(what, path, hidden) or ok(what, f"{path}: owner {owner}, mode "
                                               f"{stat.S_IMODE(st.st_mode):04o}")


def describe_owner(st: os.stat_result) -> str:
    return f"{_name(pwd.getpwuid, st.st_uid)}:{_name(grp.getgrgid, st.st_gid)}"


def _name(lookup: Callable[[int], Tuple[Any, ...]], ident: int) -> str:
    try:
        return str(lookup(ident)[0] or ident)  # pw_name, gr_name; an empty one: the ID
    except KeyError:
        return str(ident)
