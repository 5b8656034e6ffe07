"""2. Where it runs: the PID namespace, what /proc shows, and whether the credentials
at hand can read the trace source and other users' /proc/PID/exe.

Nothing is opened to find out: the trace source must not be opened at all
(a second reader of trace_pipe gets EBUSY, and a reader takes lines from the
service), so access is judged the way the kernel judges it — the file's and
its directories' owner and mode against this process's file-system uid,
groups and effective capabilities (/proc/self/status).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Callable, FrozenSet, List, Optional, Sequence

from ...config.paths import Mount, mount_of, read_mounts
from ...core.procfs import in_initial_pid_namespace
from .config import describe_owner
from .model import Check, fail, ok, warn

CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2  # read any file, search any directory: what the unit grants
CAP_SYS_PTRACE = 19  # read /proc/PID/exe of other users' processes
GRANTED_BY_UNIT = "the shipped unit grants it with AmbientCapabilities="


@dataclass(frozen=True)
class Creds:
    uid: int  # the file-system uid (what permission checks use; normally the euid)
    gids: FrozenSet[int]  # file-system gid and supplementary groups
    caps: int  # effective capability set

    def has(self, cap: int) -> bool:
        return bool(self.caps >> cap & 1)


def _field(text: str, name: str) -> List[str]:
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return line.split()[1:]
    return []


def parse_creds(status: str) -> Creds:
    """Credentials from the text of /proc/PID/status (Uid/Gid: real effective saved fs)."""
    uids, gids = _field(status, "Uid"), _field(status, "Gid")
    groups = {int(g) for g in _field(status, "Groups") if g.isdigit()}
    cap = _field(status, "CapEff")
    return Creds(uid=int(uids[3]) if len(uids) > 3 else os.geteuid(),
                 gids=frozenset({int(gids[3]) if len(gids) > 3 else os.getegid()} | groups),
                 caps=int(cap[0], 16) if cap else 0)


def read_creds(proc: str) -> Creds:
    try:
        with open(os.path.join(proc, "self", "status"), encoding="ascii",
                  errors="replace") as f:
            return parse_creds(f.read(65536))
    except OSError:  # no capabilities known: judge by the mode bits alone
        return Creds(os.geteuid(), frozenset({os.getegid(), *os.getgroups()}), 0)


# --- file access, judged rather than tried ------------------------------------------------

R, X = 4, 1


def permits(st: os.stat_result, creds: Creds, bit: int) -> bool:
    if creds.has(CAP_DAC_READ_SEARCH) or creds.has(CAP_DAC_OVERRIDE):
        return True  # both let a process read any file and search any directory
    if st.st_uid == creds.uid:
        granted = st.st_mode >> 6
    elif st.st_gid in creds.gids:
        granted = st.st_mode >> 3
    else:
        granted = st.st_mode
    return bool(granted & bit)


def read_problem(path: str, creds: Creds,
                 stat_fn: Callable[[str], os.stat_result] = os.stat) -> str:
    """Why `creds` cannot open `path` for reading ("" when they can)."""
    path = os.path.abspath(path)
    parts = path.split("/")[1:]
    steps = ["/" + "/".join(parts[:i]) for i in range(len(parts))] + [path]
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        try:
            st = stat_fn(step)
        except OSError as exc:
            return f"{step}: {exc.strerror}"
        if not permits(st, creds, R if last else X):
            what = "readable" if last else "searchable (x)"
            return (f"{step} ({describe_owner(st)} {stat.S_IMODE(st.st_mode):04o}) is not "
                    f"{what} by uid {creds.uid}")
    return ""


def trace_access_check(paths: Sequence[str], creds: Creds) -> Check:
    """Can the trace source (and for the binary reader its per-CPU files) be read?"""
    present = [p for p in paths if os.path.lexists(p)]
    if not present:
        return warn("trace access", f"{paths[0]} does not exist: nothing to judge",
                    "see the trace source check below")
    problems = [p for p in (read_problem(path, creds) for path in present) if p]
    if problems:
        return fail("trace access", f"{problems[0]} and CAP_DAC_READ_SEARCH is missing",
                    f"run as root or with CAP_DAC_READ_SEARCH ({GRANTED_BY_UNIT})")
    how = "CAP_DAC_READ_SEARCH" if creds.has(CAP_DAC_READ_SEARCH) else (
        "CAP_DAC_OVERRIDE" if creds.has(CAP_DAC_OVERRIDE) else "its mode")
    return ok("trace access", f"uid {creds.uid} can read {', '.join(present)} ({how}); "
                              "judged from owner and mode, nothing was opened")


def exe_access_check(creds: Creds, match_exe: Sequence[str]) -> Check:
    if creds.has(CAP_SYS_PTRACE):
        return ok("exe access", "CAP_SYS_PTRACE: /proc/PID/exe of every user's process can "
                                "be read")
    saw = (f"uid {creds.uid} without CAP_SYS_PTRACE can read /proc/PID/exe only of its own "
           "processes")
    if match_exe:
        return fail("exe access", f"{saw}: match.exe rejects a gNB of any other user",
                    f"run as root or with CAP_SYS_PTRACE ({GRANTED_BY_UNIT})")
    return warn("exe access", f"{saw} (match.exe is empty: only reports miss the executable)",
                "run as root or with CAP_SYS_PTRACE to see every executable")


# --- the PID namespace and /proc ----------------------------------------------------------


def pid_namespace_check(initial: Optional[bool], allowed: bool) -> Check:
    if initial:
        return ok("pid namespace", "the initial PID namespace: trace IDs and /proc agree")
    if initial is None:
        return warn("pid namespace", "cannot tell (no /proc/self/ns/pid)",
                    "make sure it runs on the host, not in a container")
    saw = ("not the initial PID namespace: trace_pipe reports the host's task IDs, "
           "which /proc here does not show")
    if allowed:
        return warn("pid namespace", saw + " (trace.allow_pid_namespace = true)",
                    "right only for a trace source of this namespace, e.g. a test FIFO")
    return fail("pid namespace", saw + "; the service refuses to start here",
                "run it on the host, not in a container without the host's PIDs")


HIDDEN = ("1", "2", "4", "noaccess", "invisible", "ptraceable")


def proc_visibility_check(proc: str, mount: Optional[Mount], creds: Creds) -> Check:
    if mount is None:
        return warn("proc visibility", f"{proc}: not found in the mount table",
                    "make sure the host's /proc is mounted there")
    hidepid = mount.options.get("hidepid", "")
    if hidepid not in HIDDEN:
        return ok("proc visibility", f"{proc} ({mount.fstype}) shows every user's processes "
                                     "(no hidepid)")
    saw = f"{proc} is mounted with hidepid={hidepid}"
    group = mount.options.get("gid", "")
    if creds.has(CAP_SYS_PTRACE) or (group.isdigit() and int(group) in creds.gids):
        return ok("proc visibility", f"{saw}, but this process sees every process "
                                     "(CAP_SYS_PTRACE or the gid= group)")
    return fail("proc visibility", f"{saw}: other users' processes are hidden from uid "
                                   f"{creds.uid} (CAP_SYS_PTRACE is missing)",
                f"run as root or with CAP_SYS_PTRACE ({GRANTED_BY_UNIT}), or mount /proc "
                "without hidepid")


def environment_checks(proc: str, creds: Creds, allow_pid_namespace: bool,
                       trace_paths: Sequence[str], match_exe: Sequence[str]) -> List[Check]:
    mounts = read_mounts(proc) or []
    return [pid_namespace_check(in_initial_pid_namespace(proc), allow_pid_namespace),
            proc_visibility_check(proc, mount_of(proc, mounts), creds),
            trace_access_check(trace_paths, creds),
            exe_access_check(creds, match_exe)]
