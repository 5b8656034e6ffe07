"""doctor's checks of the host, over injected roots: the configuration and its files,
the credentials and /proc (a fake /proc), and the targets found there."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence

import pytest

from gtp5g_operator.commands.doctor.config import config_checks, file_check
from gtp5g_operator.commands.doctor.environment import (
    CAP_DAC_READ_SEARCH,
    CAP_SYS_PTRACE,
    Creds,
    environment_checks,
    exe_access_check,
    parse_creds,
    pid_namespace_check,
    proc_visibility_check,
    read_creds,
    read_problem,
    trace_access_check,
)
from gtp5g_operator.commands.doctor.model import FAIL, OK, WARN, Check
from gtp5g_operator.commands.doctor.targets import find_targets, targets_checks
from gtp5g_operator.config import MatchConfig, check_not_writable_by_others, load
from gtp5g_operator.config.paths import Mount, mount_of, parse_mountinfo
from testbed.harness import write_config

INIT_NS = "pid:[4026531836]"
STATUS_ROOT = ("Name:\tbash\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n"
               "CapEff:\t000001ffffffffff\n")
STATUS_USER = ("Name:\tbash\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\n"
               "Groups:\t24 1000\nCapEff:\t0000000000000000\n")


class FakeProc:
    """A /proc tree: self (credentials, mounts, PID namespace) and processes."""

    def __init__(self, root: Path, status: str = STATUS_ROOT, ns: Optional[str] = INIT_NS,
                 mountinfo: str = "") -> None:
        self.root = root
        me = root / "self"
        (me / "ns").mkdir(parents=True)
        (me / "status").write_text(status)
        (me / "mountinfo").write_text(mountinfo or
                                      f"22 27 0:21 / {root} rw,relatime - proc proc rw\n")
        if ns is not None:
            os.symlink(ns, me / "ns" / "pid")

    def add(self, pid: int, comm: str, uid: int = 0, exe: str = "/usr/bin/nr-gnb",
            threads: Sequence[int] = ()) -> None:
        d = self.root / str(pid)
        for tid in (pid, *threads):
            (d / "task" / str(tid)).mkdir(parents=True)
            (d / "task" / str(tid) / "stat").write_text(self._stat(tid, comm))
        (d / "stat").write_text(self._stat(pid, comm))
        (d / "status").write_text(f"Name:\t{comm}\nTgid:\t{pid}\nUid:\t{uid}\t{uid}\t{uid}\t"
                                  f"{uid}\n")
        (d / "comm").write_text(comm + "\n")
        (d / "cmdline").write_bytes(comm.encode() + b"\0")
        os.symlink(exe, d / "exe")

    @staticmethod
    def _stat(pid: int, comm: str) -> str:
        return f"{pid} ({comm}) S " + " ".join(["1"] * 18 + ["4242"] + ["0"] * 5) + "\n"


def by_name(checks: Sequence[Check]) -> Dict[str, Check]:
    return {c.name: c for c in checks}


# --- 1. configuration ---------------------------------------------------------------------


def config_file(tmp_path: Path, keys: Dict[str, Path], **api: object) -> Path:
    return write_config(tmp_path / "config.toml",
                        trace={"pipe": str(tmp_path / "trace_pipe")},
                        api={"url": "http://127.0.0.1:9", "public_key": str(keys["public"]),
                             **api})


def test_a_valid_configuration_and_its_files_are_ok(tmp_path: Path,
                                                    keys: Dict[str, Path]) -> None:
    path = config_file(tmp_path, keys)
    out = config_checks(str(path))
    assert out.loaded and out.config.api.url == "http://127.0.0.1:9"
    checks = by_name(out.checks)
    assert checks["config"].level == OK and f"{path} is valid" in checks["config"].saw
    assert checks["config file"].level == OK
    assert checks["config file"].saw == f"{path}: owner root:root, mode 0644"
    assert checks["key file"].level == OK and str(keys["public"]) in checks["key file"].saw


def test_an_invalid_configuration_says_what_check_config_says(tmp_path: Path,
                                                              keys: Dict[str, Path]) -> None:
    path = config_file(tmp_path, keys, timeout="5s")
    out = config_checks(str(path))
    assert not out.loaded
    check = by_name(out.checks)["config"]
    assert check.level == FAIL
    assert check.saw.startswith(f'{path}: api.timeout: ') and "got \"5s\"" in check.saw
    assert "the other checks use the defaults" in check.saw  # the file did not parse
    assert "check-config" in check.advice


def test_a_refused_key_file_keeps_the_files_settings(tmp_path: Path,
                                                     keys: Dict[str, Path]) -> None:
    path = config_file(tmp_path, keys, public_key=str(tmp_path / "missing.pem"))
    out = config_checks(str(path))
    checks = by_name(out.checks)
    assert not out.loaded and out.config.api.url == "http://127.0.0.1:9"
    assert "the files' settings" in checks["config"].saw
    assert checks["key file"].level == FAIL
    assert checks["key file"].saw == f"{tmp_path / 'missing.pem'}: No such file or directory"


def test_files_others_may_write_fail_with_the_fix(tmp_path: Path,
                                                  keys: Dict[str, Path]) -> None:
    path = config_file(tmp_path, keys)
    path.chmod(0o666)
    check = by_name(config_checks(str(path)).checks)["config file"]
    assert check.level == FAIL
    assert check.saw == f"{path}: writable by other users (mode 0666) (owner root:root)"
    assert check.advice == f"the service refuses it: chmod go-w {path}"
    path.chmod(0o644)
    os.chown(path, 4321, 0)
    check = file_check("config file", str(path), check_not_writable_by_others)
    assert check.level == FAIL and "owned by uid 4321" in check.saw
    assert check.advice == f"the service refuses it: chown root {path}"


def test_a_password_file_others_can_read_fails(tmp_path: Path, keys: Dict[str, Path]) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    path = write_config(tmp_path / "config.toml", trace={"pipe": "auto"},
                        api={"flavor": "manager", "username": "op",
                             "password_file": str(secret)})
    checks = by_name(config_checks(str(path)).checks)
    assert "key file" not in checks  # the Manager takes a password, not our key
    assert checks["password file"].level == FAIL
    assert "readable by other users (mode 0644)" in checks["password file"].saw
    secret.chmod(0o600)
    assert by_name(config_checks(str(path)).checks)["password file"].level == OK


def test_the_ca_file_is_judged_like_the_others(tmp_path: Path, keys: Dict[str, Path]) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not even PEM\n")
    path = config_file(tmp_path, keys, ca_file=str(ca))
    out = config_checks(str(path))
    assert not out.loaded and "api.ca_file: no PEM certificate" in out.checks[0].saw
    assert by_name(out.checks)["CA file"].level == OK  # its modes are fine, its content not
    ca.chmod(0o646)
    assert by_name(config_checks(str(path)).checks)["CA file"].level == FAIL


def test_the_running_units_credential_is_found(tmp_path: Path, keys: Dict[str, Path]) -> None:
    """Under systemd the Manager's password may be a LoadCredential= only: doctor, run
    from a shell, looks where systemd keeps the running unit's credentials."""
    path = write_config(tmp_path / "config.toml", trace={"pipe": "auto"},
                        api={"flavor": "manager", "username": "op"})
    assert not config_checks(str(path), env={}).loaded
    unit = tmp_path / "credentials"
    unit.mkdir()
    (unit / "gthulhu-password").write_text("s3cret\n")
    (unit / "gthulhu-password").chmod(0o600)
    with pytest.MonkeyPatch.context() as mp:  # where a root shell finds the running unit's
        mp.setattr(load, "UNIT_CREDENTIALS", str(unit))
        assert config_checks(str(path), env={}).loaded
    assert config_checks(str(path), env={"CREDENTIALS_DIRECTORY": str(unit)}).loaded
    assert not config_checks(str(path), env={"CREDENTIALS_DIRECTORY": "/x"}).loaded


# --- 2. where it runs ---------------------------------------------------------------------


def test_credentials_from_proc_self_status(tmp_path: Path) -> None:
    assert parse_creds(STATUS_USER) == Creds(1000, frozenset({1000, 24}), 0)
    root = parse_creds(STATUS_ROOT)
    assert root.uid == 0 and root.has(CAP_DAC_READ_SEARCH) and root.has(CAP_SYS_PTRACE)
    fake = FakeProc(tmp_path / "proc", status=STATUS_USER)
    assert read_creds(str(fake.root)).uid == 1000


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A directory every user may search (pytest's own tmp_path is root's, 0700)."""
    base = Path(tempfile.mkdtemp(prefix="doctor-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base)


def test_read_access_is_judged_from_modes_and_capabilities(public_tmp: Path) -> None:
    d = public_tmp / "tracing"
    d.mkdir(mode=0o700)
    f = d / "trace_pipe"
    f.write_text("")
    f.chmod(0o440)
    user = Creds(1000, frozenset({1000}), 0)
    problem = read_problem(str(f), user)
    assert problem == f"{d} (root:root 0700) is not searchable (x) by uid 1000"
    d.chmod(0o755)
    assert read_problem(str(f), user) == f"{f} (root:root 0440) is not readable by uid 1000"
    assert read_problem(str(f), Creds(1000, frozenset({0}), 0)) == ""  # the group may read
    assert read_problem(str(f), Creds(1000, frozenset(), 1 << CAP_DAC_READ_SEARCH)) == ""
    check = trace_access_check([str(f)], user)
    assert check.level == FAIL and "CAP_DAC_READ_SEARCH is missing" in check.saw
    assert "AmbientCapabilities" in check.advice
    check = trace_access_check([str(f)], parse_creds(STATUS_ROOT))
    assert check.level == OK and "nothing was opened" in check.saw
    assert trace_access_check([str(public_tmp / "none")], user).level == WARN


def test_exe_access_needs_cap_sys_ptrace() -> None:
    assert exe_access_check(parse_creds(STATUS_ROOT), ()).level == OK
    user = parse_creds(STATUS_USER)
    pinned = exe_access_check(user, ("/usr/bin/nr-gnb",))
    assert pinned.level == FAIL and "without CAP_SYS_PTRACE" in pinned.saw
    assert exe_access_check(user, ()).level == WARN


def test_pid_namespace(tmp_path: Path) -> None:
    assert pid_namespace_check(True, False).level == OK
    check = pid_namespace_check(False, False)
    assert check.level == FAIL and "refuses to start" in check.saw
    assert pid_namespace_check(False, True).level == WARN
    assert pid_namespace_check(None, False).level == WARN
    other = FakeProc(tmp_path / "other", ns="pid:[4026532999]")
    checks = by_name(environment_checks(str(other.root), parse_creds(STATUS_ROOT), False,
                                        [str(tmp_path)], ()))
    assert checks["pid namespace"].level == FAIL
    init = FakeProc(tmp_path / "init")
    checks = by_name(environment_checks(str(init.root), parse_creds(STATUS_ROOT), False,
                                        [str(tmp_path)], ()))
    assert checks["pid namespace"].level == OK and checks["proc visibility"].level == OK


def test_hidepid_hides_other_users_processes_without_cap_sys_ptrace(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path / "proc", mountinfo=(
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
        f"22 1 0:21 / {tmp_path / 'proc'} rw,nosuid - proc proc rw,hidepid=invisible\n"))
    mounts = parse_mountinfo((fake.root / "self" / "mountinfo").read_text())
    mount = mount_of(str(fake.root), mounts)
    assert mount == Mount(str(fake.root), "proc", {"rw": "", "nosuid": "",
                                                   "hidepid": "invisible"})
    check = proc_visibility_check("/proc", mount, parse_creds(STATUS_USER))
    assert check.level == FAIL
    assert check.saw == ("/proc is mounted with hidepid=invisible: other users' processes "
                         "are hidden from uid 1000 (CAP_SYS_PTRACE is missing)")
    assert proc_visibility_check("/proc", mount, parse_creds(STATUS_ROOT)).level == OK
    plain = Mount("/proc", "proc", {"rw": ""})
    assert proc_visibility_check("/proc", plain, parse_creds(STATUS_USER)).level == OK
    assert proc_visibility_check("/proc", None, parse_creds(STATUS_USER)).level == WARN


# --- 4. targets ---------------------------------------------------------------------------


@pytest.fixture
def host(tmp_path: Path) -> FakeProc:
    fake = FakeProc(tmp_path / "proc")
    fake.add(4242, "nr-gnb", uid=1000, exe="/tmp/nr-gnb", threads=(4243, 4244))
    fake.add(5000, "nr-gnbx", uid=1000)  # a decoy: not even listed
    fake.add(6000, "bash")
    return fake


def test_a_target_that_matches_would_be_boosted(host: FakeProc) -> None:
    match = MatchConfig(exe=("/tmp/nr-gnb",), uid=(1000,))
    found = find_targets(str(host.root), match)
    assert [(t.info.tgid, t.tids, t.boosted) for t in found] == [(4242, (4242, 4243, 4244),
                                                                  True)]
    checks = by_name(targets_checks(match, found))
    assert checks["match rules"].level == OK
    assert checks["targets"].saw == "1 process named nr-gnb, 1 would be boosted"
    assert checks["target 4242"].level == OK
    assert checks["target 4242"].saw == ("PID 4242 nr-gnb, uid 1000, exe /tmp/nr-gnb, "
                                         "3 threads: would be boosted")


@pytest.mark.parametrize("match,why", [
    (MatchConfig(uid=(0,)), "its uid 1000 is not in match.uid"),
    (MatchConfig(exe=("/usr/bin/nr-gnb",)), "its executable /tmp/nr-gnb is not in match.exe"),
])
def test_a_target_the_rules_exclude_says_why(host: FakeProc, match: MatchConfig,
                                             why: str) -> None:
    checks = by_name(targets_checks(match, find_targets(str(host.root), match)))
    assert checks["targets"].level == WARN and "none would be boosted" in checks["targets"].saw
    assert checks["target 4242"].level == WARN
    assert checks["target 4242"].saw.endswith(f"not boosted: {why}")


def test_empty_allow_lists_warn_with_what_to_pin(host: FakeProc) -> None:
    match = MatchConfig()
    checks = by_name(targets_checks(match, find_targets(str(host.root), match)))
    assert checks["match rules"].level == WARN
    assert "both allow-lists are empty" in checks["match rules"].saw
    assert checks["match rules"].advice == ('pin the gNB, e.g. match.exe = ["/tmp/nr-gnb"], '
                                            "match.uid = [1000]")


def test_no_target_running(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path / "proc")
    checks = by_name(targets_checks(MatchConfig(), find_targets(str(fake.root), MatchConfig())))
    assert checks["targets"].level == WARN
    assert checks["targets"].saw == "no process named nr-gnb is running"
    assert [n for n in checks if n.startswith("target ")] == []
