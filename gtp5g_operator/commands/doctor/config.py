"""1. Configuration: what check-config says, and who may change the files it names.

The daemon, check-config and doctor all judge the file with `load_config`, so
what doctor accepts the daemon runs with.  When it is refused, the rest of
the report still needs the settings: they are taken from the file alone
(without the files it names), else the defaults — and the report says so.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import socket
import stat
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from ...config import Config, ConfigError, check_not_writable_by_others, load_config
from ...config.load import check_not_readable_by_others, read_text
from ...config.parse import parse_config
from .model import Check, fail, ok

FileJudge = Callable[[str, os.stat_result], None]


@dataclasses.dataclass(frozen=True)
class ConfigOutcome:
    config: Config
    loaded: bool  # load_config accepted it: every file it names was read and checked
    checks: List[Check]


# Where systemd keeps the running unit's credentials (LoadCredential=): the Manager's
# password may be there only, and doctor runs outside the unit.
UNIT_CREDENTIALS = "/run/credentials/gtp5g-operator.service"


def credentials_env(env: Mapping[str, str], unit_dir: str = UNIT_CREDENTIALS) -> Dict[str, str]:
    if env.get("CREDENTIALS_DIRECTORY") or not os.path.isdir(unit_dir):
        return dict(env)
    return {**env, "CREDENTIALS_DIRECTORY": unit_dir}


def config_checks(path: str, env: Optional[Mapping[str, str]] = None) -> ConfigOutcome:
    try:
        config = load_config(path, credentials_env(os.environ if env is None else env))
    except ConfigError as exc:
        fallback, note = _fallback(path)
        check = fail("config", f"{exc} ({note})",
                     f"fix it; `gtp5g-operator check-config --config {path}` then prints ok")
        return ConfigOutcome(fallback, False, [check, *file_checks(fallback, path)])
    check = ok("config", f"{path} is valid: API {config.api.url} (flavor {config.api.flavor}), "
                         f"trace.pipe {config.trace.pipe}, match.comm "
                         f"{', '.join(config.match.comm)}")
    return ConfigOutcome(config, True, [check, *file_checks(config, path)])


def _fallback(path: str) -> Tuple[Config, str]:
    """The settings to check the rest with when load_config refused the file."""
    try:
        config = parse_config(read_text(path, "configuration"), path)
    except ConfigError:
        return Config(source=path), "the other checks use the defaults"
    node = config.api.node_name or socket.gethostname().split(".")[0].lower()
    return (dataclasses.replace(config, node_name=node),
            "the other checks use the file's settings; the API is not checked")


def named_files(config: Config, path: str) -> List[Tuple[str, str, FileJudge]]:
    """(what, path, judge) of every file the configuration is read from."""
    files: List[Tuple[str, str, FileJudge]] = [("config file", path,
                                                check_not_writable_by_others)]
    api = config.api
    if api.flavor != "manager":
        files.append(("key file", api.public_key, check_not_writable_by_others))
    if api.ca_file:
        files.append(("CA file", api.ca_file, check_not_writable_by_others))
    if api.password_file:
        files.append(("password file", api.password_file, _private))
    return files


def _private(path: str, st: os.stat_result) -> None:
    check_not_writable_by_others(path, st)
    check_not_readable_by_others(path, st)


def file_checks(config: Config, path: str) -> List[Check]:
    return [file_check(what, name, judge) for what, name, judge in named_files(config, path)]


def file_check(what: str, path: str, judge: FileJudge) -> Check:
    try:
        st = os.stat(path)
    except OSError as exc:
        return fail(what, f"{path}: {exc.strerror}", "create it, or correct the path in the "
                    "configuration")
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
