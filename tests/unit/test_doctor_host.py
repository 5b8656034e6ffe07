"""doctor's checks of the host, over injected roots: the configuration and its files,
what the kernel's answers mean for the service's identity (the answers themselves:
test_doctor_identity.py), /proc (a fake /proc), and the targets found there."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence

import pytest

from gtp5g_operator.commands.doctor.config import config_checks, file_check, hidden_check
from gtp5g_operator.commands.doctor.environment import (
    environment_checks,
    exe_access_check,
    other_user_process,
    pid_namespace_check,
    proc_visibility_check,
    trace_access_check,
)
from gtp5g_operator.commands.doctor.identity import UNIT_CAPS, Answers, Identity
from gtp5g_operator.commands.doctor.model import FAIL, OK, WARN, Check
from gtp5g_operator.commands.doctor.service import unit_hidden
from gtp5g_operator.commands.doctor.targets import admit, find_targets, targets_checks
from gtp5g_operator.config import ConfigError, MatchConfig, check_not_writable_by_others, load
from gtp5g_operator.config.load import read_text
from gtp5g_operator.config.paths import Mount, hidden_by_unit, mount_of, parse_mountinfo
from gtp5g_operator.core.procfs import ProcessInfo
from testbed.harness import write_config
from testbed.tls import make_ca_and_server_cert

INIT_NS = "pid:[4026531836]"
STATUS_ROOT = ("Name:\tbash\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n"
               "CapEff:\t000001ffffffffff\n")
UNIT = Identity(65534, 65534, (), UNIT_CAPS, "as the shipped unit runs it")
# Who owns the files a test makes: root:root in CI, the builder in a package build
# as a user (buildds, sbuild, dpkg-buildpackage; Rules-Requires-Root: no).
OWNER = f"{pwd.getpwuid(os.geteuid()).pw_name}:{grp.getgrgid(os.getegid()).gr_name}"
USER = Identity(1000, 1000, (1000,), 0, "as doctor itself", switch=False)


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
            (d / "task" / str(tid) / "comm").write_text(f"{comm}-{tid}\n" if tid != pid
                                                        else comm + "\n")
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
    assert checks["config file"].saw == f"{path}: owner {OWNER}, mode 0644"
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


def test_a_file_refused_for_its_mode_is_still_read_for_the_other_checks(
        tmp_path: Path, keys: Dict[str, Path]) -> None:
    # Checked with the defaults, the key file line said "/etc/gtp5g-operator/jwt_public_key.pem:
    # No such file or directory -> create it": a file the configuration does not name.
    path = config_file(tmp_path, keys)
    path.chmod(0o666)
    out = config_checks(str(path))
    checks = by_name(out.checks)
    assert not out.loaded and out.config.api.url == "http://127.0.0.1:9"
    assert checks["config"].level == FAIL and "the files' settings" in checks["config"].saw
    assert checks["config file"].level == FAIL  # the refusal keeps its own line and fix
    assert checks["key file"].level == OK and str(keys["public"]) in checks["key file"].saw


def test_a_file_others_may_write_does_not_choose_what_root_opens(
        tmp_path: Path, keys: Dict[str, Path]) -> None:
    """doctor runs as root and reads the files in trace.pipe's directory (per_cpu/*/stats,
    buffer_size_kb...).  From a file the service refuses as possibly another user's, that
    directory was theirs to fill: a link there to a FIFO was opened by root's doctor (seen
    with inotify), and a link to a device (/dev/watchdog) would be.  The key file and
    match.comm are still the file's; the trace source is the default's."""
    path = config_file(tmp_path, keys)
    path.chmod(0o666)
    out = config_checks(str(path))
    assert not out.loaded and out.config.trace.pipe == "auto"
    assert "but trace.pipe, \"auto\" here" in by_name(out.checks)["config"].saw
    assert by_name(out.checks)["key file"].level == OK  # the rest is still the file's
    path.chmod(0o644)
    # refused for another reason (a key file missing): the file is trusted
    write_config(path, trace={"pipe": str(tmp_path / "trace_pipe")},
                 api={"url": "http://127.0.0.1:9", "public_key": str(tmp_path / "nokey")})
    out = config_checks(str(path))
    assert not out.loaded and out.config.trace.pipe == str(tmp_path / "trace_pipe")


def test_files_others_may_write_fail_with_the_fix(tmp_path: Path,
                                                  keys: Dict[str, Path]) -> None:
    path = config_file(tmp_path, keys)
    path.chmod(0o666)
    check = by_name(config_checks(str(path)).checks)["config file"]
    assert check.level == FAIL
    assert check.saw == f"{path}: writable by other users (mode 0666) (owner {OWNER})"
    assert check.advice == f"the service refuses it: chmod go-w {path}"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_a_file_another_user_owns_fails_with_the_fix(tmp_path: Path,
                                                     keys: Dict[str, Path]) -> None:
    path = config_file(tmp_path, keys)
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


@pytest.mark.parametrize("url,manager,said", [
    ("http://10.0.0.5:8080", True, "the Manager's password and the tokens cross the network"),
    ("http://gthulhu-api.example:80", False, "the API's tokens cross the network"),
    ("http://127.0.0.1:8080", True, None), ("http://[::1]:8080", True, None),
    ("http://localhost:8080", False, None), ("https://10.0.0.5", True, None),
])
def test_credentials_sent_in_clear_to_another_host_are_a_warning(
        tmp_path: Path, keys: Dict[str, Path], url: str, manager: bool,
        said: Optional[str]) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    api = ({"flavor": "manager", "username": "op", "password_file": str(secret)} if manager
           else {"public_key": str(keys["public"])})
    path = write_config(tmp_path / "config.toml", trace={"pipe": "auto"}, api={"url": url, **api})
    out = config_checks(str(path))
    assert out.loaded, out.checks[0].saw
    transport = by_name(out.checks).get("transport")
    if said is None:
        assert transport is None
    else:
        assert transport is not None and transport.level == WARN and said in transport.saw
        assert "s3cret" not in transport.saw


def test_the_ca_file_is_judged_like_the_others(tmp_path: Path, keys: Dict[str, Path]) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not even PEM\n")
    path = config_file(tmp_path, keys, ca_file=str(ca))
    out = config_checks(str(path))
    assert not out.loaded and "api.ca_file: no PEM certificate" in out.checks[0].saw
    assert by_name(out.checks)["CA file"].level == OK  # its modes are fine, its content not
    ca.chmod(0o646)
    assert by_name(config_checks(str(path)).checks)["CA file"].level == FAIL


def test_a_file_in_a_directory_others_may_write_fails_as_check_config_refuses_it(
        tmp_path: Path, keys: Dict[str, Path]) -> None:
    """The named files' directories are judged too (whoever may write one may rename a
    CA of theirs over the file): doctor's line for the file must say what check-config
    says, with the fix for the directory (not a chown of the file, which is root's)."""
    held = tmp_path / "held"
    held.mkdir()
    ca = make_ca_and_server_cert(held)["ca"]
    path = config_file(tmp_path, keys, ca_file=str(ca))
    held.chmod(0o777)
    out = config_checks(str(path))
    checks = by_name(out.checks)
    problem = f"{ca}: its directory {held}: writable by other users (mode 0777)"
    assert not out.loaded and checks["config"].saw.startswith(problem)
    assert checks["CA file"].level == FAIL and checks["CA file"].saw == f"{problem} (owner {OWNER})"
    assert checks["CA file"].advice == f"the service refuses it: chmod go-w {held}"
    held.chmod(0o1777)  # sticky and ours: others may not rename over it
    out = config_checks(str(path))
    assert out.loaded and by_name(out.checks)["CA file"].level == OK
    if os.geteuid() == 0:  # chown to another uid needs root
        os.chown(held, 61234, 61234)
        check = by_name(config_checks(str(path)).checks)["CA file"]
        assert check.level == FAIL and f"{held}: owned by uid 61234" in check.saw
        assert check.advice == f"the service refuses it: chown root {held}"


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


# --- 2. where it runs: what the kernel's answers mean ------------------------------------


def test_trace_access_says_what_the_kernel_said(public_tmp: Path) -> None:
    d = public_tmp / "tracing"
    d.mkdir(mode=0o700)
    f = d / "trace_pipe"
    f.write_text("")
    f.chmod(0o440)
    check = trace_access_check([str(f)], UNIT, Answers({str(f): ""}))
    assert check.level == OK
    assert check.saw == (f"as the shipped unit runs it, uid 65534 with CAP_DAC_READ_SEARCH, "
                         f"CAP_SYS_PTRACE may read {f} (the kernel's answer to faccessat; "
                         "nothing was opened)")
    check = trace_access_check([str(f)], USER, Answers({str(f): str(d)}))
    assert check.level == FAIL
    assert check.saw == (f"as doctor itself, uid 1000 without capabilities may not read {f} "
                         f"({d} ({OWNER} 0700) is not searchable) (the kernel's answer)")
    assert check.advice.startswith("doctor judged its own access, not the service's: run it "
                                   "as root")
    check = trace_access_check([str(f)], UNIT, Answers({str(f): str(f)}))
    assert check.saw.endswith(f"may not read {f} ({f} ({OWNER} 0440)) (the kernel's answer)")
    # The unit's identity holds CAP_DAC_READ_SEARCH: "give it" would send a person in a
    # circle; what refuses it then is not the mode bits.
    assert check.advice == ("it holds CAP_DAC_READ_SEARCH already: a security module "
                            "(AppArmor, SELinux) refuses it: look for its denial in the "
                            "kernel log")
    plain = Identity(65534, 65534, (), 0, "as the service runs it")
    check = trace_access_check([str(f)], plain, Answers({str(f): str(f)}))
    assert check.advice == ("give it CAP_DAC_READ_SEARCH (the shipped unit grants it with "
                            f"AmbientCapabilities=) or read access (setfacl -m u:65534:r {f})")
    assert trace_access_check([str(public_tmp / "none")], UNIT, Answers()).level == WARN
    broken = trace_access_check([str(f)], UNIT, Answers(error="no answer within 5 s"))
    assert broken.level == WARN and broken.saw.endswith("no answer within 5 s")


def test_exe_access_of_another_users_process() -> None:
    assert exe_access_check(UNIT, Answers(exe_error=""), (4242, 1000), ()).level == OK
    denied = Answers(exe_error="Permission denied")
    pinned = exe_access_check(USER, denied, (1, 0), ("/usr/bin/nr-gnb",))
    assert pinned.level == FAIL
    assert pinned.saw == ("as doctor itself, uid 1000 without capabilities may not read "
                          "/proc/1/exe of PID 1 (uid 0): Permission denied; match.exe rejects "
                          "a gNB of any other user")
    assert exe_access_check(USER, denied, (1, 0), ()).level == WARN
    assert pinned.advice == ("give it CAP_SYS_PTRACE (the shipped unit grants it with "
                             "AmbientCapabilities=)")
    # The unit's identity holds CAP_SYS_PTRACE: on a host where even root may not read
    # PID 1's exe, doctor said "... with CAP_SYS_PTRACE may not read ... -> give it
    # CAP_SYS_PTRACE"
    held = exe_access_check(UNIT, denied, (1, 0), ())
    assert held.level == WARN and "give it" not in held.advice
    assert held.advice.startswith("it holds CAP_SYS_PTRACE already: try readlink /proc/1/exe "
                                  "as root")
    alone = exe_access_check(UNIT, Answers(), None, ())
    assert alone.level == OK and "nothing to ask" in alone.saw


def test_another_users_process_to_ask_about(host: FakeProc) -> None:
    found = find_targets(str(host.root), MatchConfig(comm=("nr-gnb", "bash")))
    assert other_user_process(str(host.root), found, 0) == (4242, 1000)  # a target
    assert other_user_process(str(host.root), found, 1000) == (6000, 0)
    assert other_user_process(str(host.root), [], 1000) is None  # no init in this /proc
    host.add(1, "init")
    assert other_user_process(str(host.root), [], 1000) == (1, 0)
    assert other_user_process(str(host.root), [], 0) is None


def test_pid_namespace(tmp_path: Path) -> None:
    assert pid_namespace_check(True, False).level == OK
    check = pid_namespace_check(False, False)
    assert check.level == FAIL and "refuses to start" in check.saw
    assert pid_namespace_check(False, True).level == WARN
    assert pid_namespace_check(None, False).level == WARN
    other = FakeProc(tmp_path / "other", ns="pid:[4026532999]")
    checks = by_name(environment_checks(str(other.root), UNIT, Answers(), None, False,
                                        [str(tmp_path)], ()))
    assert checks["pid namespace"].level == FAIL
    init = FakeProc(tmp_path / "init")
    checks = by_name(environment_checks(str(init.root), UNIT, Answers(), None, False,
                                        [str(tmp_path)], ()))
    assert checks["pid namespace"].level == OK and checks["proc visibility"].level == OK


def test_hidepid_is_judged_by_what_the_identity_sees(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path / "proc", mountinfo=(
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
        f"22 1 0:21 / {tmp_path / 'proc'} rw,nosuid - proc proc rw,hidepid=invisible\n"))
    mounts = parse_mountinfo((fake.root / "self" / "mountinfo").read_text())
    mount = mount_of(str(fake.root), mounts)
    assert mount == Mount(str(fake.root), "proc", {"rw": "", "nosuid": "",
                                                   "hidepid": "invisible"})
    check = proc_visibility_check("/proc", mount, USER, Answers(sees_other=False), (1, 0))
    assert check.level == FAIL
    assert check.saw == ("/proc is mounted with hidepid=invisible: as doctor itself, uid 1000 "
                         "without capabilities does not see PID 1 of uid 0 (the kernel's "
                         "answer)")
    assert check.advice == ("give it CAP_SYS_PTRACE (the shipped unit grants it with "
                            "AmbientCapabilities=), or mount /proc without hidepid")
    held = proc_visibility_check("/proc", mount, UNIT, Answers(sees_other=False), (1, 0))
    assert held.level == FAIL and held.advice.startswith("it holds CAP_SYS_PTRACE already: ")
    seen = proc_visibility_check("/proc", mount, UNIT, Answers(sees_other=True), (1, 0))
    assert seen.level == OK and "sees PID 1 of uid 0" in seen.saw
    assert proc_visibility_check("/proc", mount, UNIT, Answers(), None).level == WARN
    plain = Mount("/proc", "proc", {"rw": ""})
    assert proc_visibility_check("/proc", plain, USER, Answers(), None).level == OK
    assert proc_visibility_check("/proc", None, USER, Answers(), None).level == WARN


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
    view = found[0].view()  # what the read-back compares: every thread, with its name
    assert (view.tgid, view.tids, view.thread_names) == (
        4242, (4242, 4243, 4244), frozenset({"nr-gnb", "nr-gnb-4243", "nr-gnb-4244"}))
    checks = by_name(targets_checks(match, found))
    assert checks["match rules"].level == OK
    assert checks["targets"].saw == "1 process named nr-gnb, 1 would be boosted"
    assert (checks["target"].level, checks["target"].subject) == (OK, "4242")
    assert checks["target"].saw == ("PID 4242 nr-gnb, uid 1000, exe /tmp/nr-gnb, "
                                         "3 threads: would be boosted")


@pytest.mark.parametrize("match,why,advice", [
    (MatchConfig(uid=(0,)), "its uid 1000 is not in match.uid", "add 1000 to match.uid"),
    (MatchConfig(exe=("/usr/bin/nr-gnb",), uid=(1000,)),
     "its executable /tmp/nr-gnb is not in match.exe", 'add "/tmp/nr-gnb" to match.exe'),
    (MatchConfig(exe=("/usr/bin/nr-gnb",), uid=(0,)),  # both refuse it: both named
     "its executable /tmp/nr-gnb is not in match.exe",
     'add "/tmp/nr-gnb" to match.exe and add 1000 to match.uid'),
])
def test_a_target_the_rules_exclude_says_why(host: FakeProc, match: MatchConfig,
                                             why: str, advice: str) -> None:
    checks = by_name(targets_checks(match, find_targets(str(host.root), match)))
    assert checks["targets"].level == WARN and "none would be boosted" in checks["targets"].saw
    assert checks["target"].level == WARN
    assert checks["target"].saw.endswith(f"not boosted: {why}")
    # done as advised, the service's own rule boosts it
    assert checks["target"].advice == f"if this is the gNB, {advice}"
    exe, uid = match.exe, match.uid
    for step in advice.split(" and "):
        value, field = step.removeprefix("add ").split(" to ")
        if field == "match.exe":
            exe = (*exe, value.strip('"'))
        else:
            uid = (*uid, int(value))
    fixed = MatchConfig(exe=exe, uid=uid)
    assert [t.boosted for t in find_targets(str(host.root), fixed)] == [True]


def test_a_target_renamed_since_it_was_listed_is_advised_its_name() -> None:
    """Both allow-lists admit it and its name no longer does (renamed between doctor's
    two looks): the advice names match.comm, never an empty step."""
    info = ProcessInfo(4242, 1, "nr-gnb-2", "/usr/bin/nr-gnb", 1000)
    advice = admit(info, MatchConfig(exe=("/usr/bin/nr-gnb",), uid=(1000,)))
    assert advice == 'if this is the gNB, add "nr-gnb-2" to match.comm'


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
    assert "target" not in checks


# --- places the installed unit hides from the service ------------------------------------


def stand_in_systemctl(tmp_path: Path, said: str) -> str:
    path = tmp_path / "systemctl"
    path.write_text(f'#!/bin/sh\n[ "$1 $2" = "show gtp5g-operator" ] || exit 1\nprintf "{said}"\n')
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("said,hidden", [
    ("LoadState=loaded\\nPrivateTmp=yes\\nProtectHome=yes\\n",
     {"/tmp": "PrivateTmp=yes", "/root": "ProtectHome=yes"}),
    ("LoadState=loaded\\nPrivateTmp=no\\nProtectHome=read-only\\n", {}),  # a drop-in's
    ("LoadState=loaded\\nPrivateTmp=yes\\nProtectHome=tmpfs\\n",
     {"/var/tmp": "PrivateTmp=yes", "/home": "ProtectHome=tmpfs"}),
    ("LoadState=not-found\\nPrivateTmp=no\\nProtectHome=no\\n", {}),  # not installed
])
def test_what_the_installed_unit_hides_is_asked_of_systemd(
        tmp_path: Path, said: str, hidden: Dict[str, str]) -> None:
    found = dict(unit_hidden(stand_in_systemctl(tmp_path, said)))
    assert {top: found[top] for top in hidden} == hidden
    assert bool(found) == bool(hidden)


@pytest.fixture
def in_tmp() -> Iterator[Path]:
    """A directory under /tmp, which the shipped unit hides (PrivateTmp=yes), wherever
    TMPDIR puts pytest's tmp_path."""
    d = Path(tempfile.mkdtemp(dir="/tmp"))
    yield d
    shutil.rmtree(d)


def test_files_the_unit_hides_from_the_service_are_a_warning(
        in_tmp: Path, keys: Dict[str, Path]) -> None:
    """A key under /tmp passes from a shell; under the shipped unit's PrivateTmp=yes the
    service does not find it, and a textfile there is its own copy."""
    key = in_tmp / "public.pem"
    shutil.copy(keys["public"], key)
    path = write_config(in_tmp / "config.toml", trace={"pipe": str(in_tmp / "trace_pipe")},
                        api={"url": "http://127.0.0.1:9", "public_key": str(key)},
                        metrics={"textfile": str(in_tmp / "op.prom")})
    hidden = unit_hidden(stand_in_systemctl(
        in_tmp, "LoadState=loaded\\nPrivateTmp=yes\\nProtectHome=yes\\n"))
    shown = by_name(config_checks(str(path), hidden=hidden).checks)
    for what in ("key file", "metrics textfile"):
        assert shown[what].level == WARN and "PrivateTmp=yes hides" in shown[what].saw
    assert "/etc/gtp5g-operator" in shown["key file"].advice
    assert "node-exporter" in shown["metrics textfile"].advice
    unhidden = by_name(config_checks(str(path)).checks)  # no unit installed: nothing said
    assert unhidden["key file"].level == OK and "metrics textfile" not in unhidden


@pytest.mark.parametrize("home", ["yes", "tmpfs"])
def test_a_textfile_under_protect_home_is_said_to_be_unwritable_not_a_copy(
        home: str) -> None:
    """ProtectHome=yes makes /home empty and inaccessible, =tmpfs an empty read-only
    tmpfs (systemd.exec(5)): the service cannot write its textfile there at all, which
    doctor said was "a copy of its own, which node-exporter never reads"."""
    check = hidden_check("metrics textfile", "/home/op/textfile/op.prom",
                         [("/home", f"ProtectHome={home}")], written=True)
    assert check is not None and check.level == WARN
    assert "cannot write there" in check.saw and "copy" not in check.saw, check.saw


@pytest.mark.parametrize("link_to", ["key.pem", "."])  # the file, or its directory
def test_a_link_into_a_place_the_unit_hides_is_a_warning_naming_both_paths(
        tmp_path: Path, link_to: str) -> None:
    """A key at /etc/x.pem that is a symlink into /tmp is not found by the service
    (PrivateTmp=yes); doctor looked at the link's own path and said nothing."""
    private = tmp_path / "private"  # standing in for /tmp (tmp_path is under it)
    private.mkdir()
    (private / "key.pem").write_text("k")
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "link").symlink_to(private / link_to)
    path = etc / "link" if link_to == "key.pem" else etc / "link" / "key.pem"
    check = hidden_check("key file", str(path), [(str(private), "PrivateTmp=yes")])
    assert check is not None and check.level == WARN
    assert check.saw.startswith(f"{path} (resolved: {private / 'key.pem'}): the unit's "
                                "PrivateTmp=yes hides that place"), check.saw


def test_the_service_names_the_setting_that_may_hide_a_missing_file(in_tmp: Path) -> None:
    missing = str(in_tmp / "gone.pem")
    with pytest.raises(ConfigError) as under_systemd:
        read_text(missing, "public key", env={"INVOCATION_ID": "0123"})
    assert "if it exists: the unit's PrivateTmp=yes hides it" in str(under_systemd.value)
    with pytest.raises(ConfigError) as from_a_shell:
        read_text(missing, "public key", env={})
    assert "hides" not in str(from_a_shell.value)


def test_the_service_names_the_setting_for_a_link_into_a_hidden_place(in_tmp: Path) -> None:
    """/etc/x.pem linking into /tmp dangles for the service (PrivateTmp=yes): its error
    gave no hint, since the link itself exists."""
    if not os.path.isdir("/dev/shm") or hidden_by_unit("/dev/shm/x"):
        pytest.skip("needs /dev/shm, a place the unit does not hide, for the link")
    target = in_tmp / "key.pem"
    link = Path(tempfile.mkdtemp(dir="/dev/shm")) / "key.pem"
    try:
        link.symlink_to(target)
        with pytest.raises(ConfigError) as err:
            read_text(str(link), "public key", env={"INVOCATION_ID": "0123"})
    finally:
        shutil.rmtree(link.parent)
    assert "if it exists: the unit's PrivateTmp=yes hides it" in str(err.value)
