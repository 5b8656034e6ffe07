"""Whom doctor's access checks judge as, and the kernel's answers for that identity:
a real forked child takes the identity (groups, uid, capabilities) and asks the real
kernel about real files — a POSIX ACL, a missing capability, an unsearchable directory,
another user's /proc/PID/exe.  Switching identity needs root: those tests skip
without it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from gtp5g_operator.commands.doctor.identity import (
    CAP_DAC_READ_SEARCH,
    CAP_SYS_PTRACE,
    UNIT_CAPS,
    Answers,
    Identity,
    Questions,
    _read_until_eof,
    ask,
    judge_as,
    parse_status,
    unit_identity,
)

NOBODY, NOGROUP = unit_identity().uid, unit_identity().gid
SERVICE_STATUS = ("Name:\tgtp5g-operator\nUid:\t61234\t61235\t61235\t61235\n"
                  "Gid:\t61234\t61236\t61236\t61236\nGroups:\t4 24 \n"
                  "CapEff:\t0000000000080004\n")

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="taking another identity needs root")


def as_nobody(caps: int = 0, groups: tuple[int, ...] = ()) -> Identity:
    return Identity(NOBODY, NOGROUP, groups, caps, "as a test identity")


# --- whom to judge as (pure, over a fake /proc) ----------------------------------------------


def test_the_status_fields_that_make_an_identity() -> None:
    who = parse_status(SERVICE_STATUS, "as the running service (PID 777)")
    assert who == Identity(61235, 61236, (4, 24), 1 << CAP_DAC_READ_SEARCH | 1 << CAP_SYS_PTRACE,
                           "as the running service (PID 777)")
    assert who.describe() == ("as the running service (PID 777), uid 61235 with "
                              "CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE")
    assert parse_status("Name:\tx\nUid:\t1\n", "?") is None  # a file cut short
    root = parse_status("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n"
                        "CapEff:\t000001ffffffffff\n", "as root")
    assert root is not None and root.describe() == (
        "as root, uid 0 with CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE and 38 "
        "other capabilities")


def test_the_running_service_else_the_shipped_unit(tmp_path: Path) -> None:
    (tmp_path / "777").mkdir()
    (tmp_path / "777" / "status").write_text(SERVICE_STATUS)
    service = judge_as(str(tmp_path), 777, euid=0)
    assert (service.uid, service.groups, service.switch) == (61235, (4, 24), True)
    assert service.who == "as the running service (PID 777)"
    unit = judge_as(str(tmp_path), None, euid=0)
    assert (unit.uid, unit.gid, unit.groups, unit.caps) == (NOBODY, NOGROUP, (), UNIT_CAPS)
    assert judge_as(str(tmp_path), 778, euid=0) == unit  # its status unreadable: the unit's


def test_not_root_it_judges_as_itself(tmp_path: Path) -> None:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "status").write_text("Uid:\t1000\t1000\t1000\t1000\n"
                                              "Gid:\t1000\t1000\t1000\t1000\nGroups:\t\n"
                                              "CapEff:\t0000000000000000\n")
    me = judge_as(str(tmp_path), 777, euid=1000)
    assert (me.uid, me.gid, me.caps, me.switch) == (1000, 1000, 0, False)
    assert me.who == "as doctor itself (not root: it cannot take the service's identity)"


# --- the kernel's answers, as that identity ----------------------------------------------------


def root_only(public_tmp: Path, name: str = "trace_pipe") -> Path:
    path = public_tmp / name
    path.write_text("")
    path.chmod(0o600)
    return path


@needs_root
def test_a_file_the_identity_cannot_read_and_the_capability_that_changes_it(
        public_tmp: Path) -> None:
    path = root_only(public_tmp)
    q = Questions((str(path),))
    assert ask(as_nobody(), q) == Answers({str(path): str(path)})
    assert ask(as_nobody(1 << CAP_DAC_READ_SEARCH), q) == Answers({str(path): ""})
    assert ask(as_nobody(1 << CAP_SYS_PTRACE), q) == Answers({str(path): str(path)})


@needs_root
def test_the_directory_that_stops_it_is_named(public_tmp: Path) -> None:
    inner = public_tmp / "tracing"
    inner.mkdir(mode=0o700)
    path = inner / "trace_pipe"
    path.write_text("")
    path.chmod(0o644)  # readable by all, but behind a directory nobody may search
    assert ask(as_nobody(), Questions((str(path),))).blocked == {str(path): str(inner)}
    assert ask(as_nobody(UNIT_CAPS), Questions((str(path),))).blocked == {str(path): ""}


@needs_root
def test_a_posix_acl_for_a_group_the_identity_has(public_tmp: Path) -> None:
    setfacl = shutil.which("setfacl")
    if setfacl is None:
        pytest.skip("setfacl is missing (Debian package acl)")
    path = root_only(public_tmp)
    done = subprocess.run([setfacl, "-m", "g:4242:r", str(path)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"this file system takes no POSIX ACL: {done.stderr.strip()}")
    assert oct(path.stat().st_mode & 0o777) == "0o640"  # the ACL's mask shows as the group
    q = Questions((str(path),))
    assert ask(as_nobody(groups=(4242,)), q).blocked == {str(path): ""}
    assert ask(as_nobody(groups=(4243,)), q).blocked == {str(path): str(path)}


@needs_root
def test_another_users_proc_exe_needs_cap_sys_ptrace() -> None:
    q = Questions((), other=os.getpid())  # root's process, asked about as nobody
    plain = ask(as_nobody(), q)
    assert (plain.sees_other, plain.exe_error) == (True, "Permission denied")
    assert ask(as_nobody(1 << CAP_SYS_PTRACE), q).exe_error == ""


@needs_root
def test_an_identity_that_cannot_be_taken_is_said() -> None:
    impossible = Identity(NOBODY, NOGROUP, tuple(range(70000)), 0, "as too many groups")
    answers = ask(impossible, Questions(("/",)))
    assert answers.blocked == {} and answers.error.startswith("cannot take the identity: ")


def test_its_own_identity_is_asked_in_this_process(public_tmp: Path) -> None:
    me = Identity(os.geteuid(), os.getegid(), (), 0, "as doctor itself", switch=False)
    path = public_tmp / "f"
    path.write_text("")
    assert ask(me, Questions((str(path),), other=os.getpid())) == Answers(
        {str(path): ""}, True, "")


def test_a_child_that_never_answers_does_not_hold_doctor_up() -> None:
    read_end, write_end = os.pipe()
    try:
        started = time.monotonic()
        assert _read_until_eof(read_end, started + 0.2) is None
        assert time.monotonic() - started < 5
    finally:
        os.close(read_end)
        os.close(write_end)
