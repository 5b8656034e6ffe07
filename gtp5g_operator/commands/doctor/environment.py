"""2. Where it runs: the PID namespace, what /proc shows, and what the service's
identity may read — the trace source and other users' /proc/PID/exe — as the
kernel answers for that identity (identity.py), nothing judged from mode bits."""

from __future__ import annotations

import os
import stat
from typing import List, Optional, Sequence, Tuple

from ...config.paths import Mount, mount_of, read_mounts
from ...core.procfs import ProcFS, in_initial_pid_namespace
from .config import describe_owner
from .identity import CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, NAMED_CAPS, Answers, Identity
from .model import Check, fail, ok, warn
from .targets import Target

GRANTED_BY_UNIT = "the shipped unit grants it with AmbientCapabilities="
HIDDEN = ("1", "2", "4", "noaccess", "invisible", "ptraceable")
Other = Tuple[int, int]  # (PID, uid) of a process of another user


def other_user_process(proc: str, targets: Sequence[Target], uid: int) -> Optional[Other]:
    """A target of another user than `uid`, else init if it is another user's."""
    for t in targets:
        if t.info.uid != uid:
            return t.info.tgid, t.info.uid
    init = ProcFS(proc).process(1)
    return (1, init.uid) if init is not None and init.uid != uid else None


def grant(who: Identity, cap: int, held: str, more: str = "") -> str:
    """Advice for `who`, refused what `cap` allows.  Told to grant what it holds, a
    person goes in a circle: with the capability the refusal is not the permissions'
    (a security module, a mount option, a sandboxed host refusing even root)."""
    name = NAMED_CAPS[cap]
    if who.caps >> cap & 1:
        return f"it holds {name} already: {held}"
    return f"give it {name} ({GRANTED_BY_UNIT}){more}"


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


def proc_visibility_check(proc: str, mount: Optional[Mount], who: Identity,
                          answers: Answers, other: Optional[Other]) -> Check:
    if mount is None:
        return warn("proc visibility", f"{proc}: not found in the mount table",
                    "make sure the host's /proc is mounted there")
    hidepid = mount.options.get("hidepid", "")
    if hidepid not in HIDDEN:
        return ok("proc visibility", f"{proc} ({mount.fstype}) shows every user's processes "
                                     "(no hidepid)")
    saw = f"{proc} is mounted with hidepid={hidepid}"
    if other is None or answers.sees_other is None:
        return warn("proc visibility", f"{saw}; no process of another user to ask about",
                    "look again while the gNB runs")
    if answers.sees_other:
        return ok("proc visibility", f"{saw}, but {who.describe()} sees PID {other[0]} of "
                                     f"uid {other[1]} (the kernel's answer)")
    return fail("proc visibility", f"{saw}: {who.describe()} does not see PID {other[0]} of "
                                   f"uid {other[1]} (the kernel's answer)",
                grant(who, CAP_SYS_PTRACE, "a security module or the mount's gid= option "
                      "decides here: mount /proc without hidepid",
                      ", or mount /proc without hidepid"))


def _shown(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return path
    return f"{path} ({describe_owner(st)} {stat.S_IMODE(st.st_mode):04o})"


def trace_access_check(paths: Sequence[str], who: Identity, answers: Answers) -> Check:
    """May the service's identity open the trace source (and, for the binary reader,
    its per-CPU files)?  Asked of the kernel; nothing is opened."""
    present = [p for p in paths if os.path.lexists(p)]
    if not present:
        return warn("trace access", f"{paths[0]} does not exist: nothing to ask",
                    "see the trace source check below")
    if answers.error:
        return warn("trace access", f"cannot ask the kernel {who.who}: {answers.error}",
                    "not judged; see the service's log when it opens the trace source")
    stops = [(p, answers.blocked.get(p, p)) for p in present if answers.blocked.get(p, p)]
    if not stops:
        return ok("trace access", f"{who.describe()} may read {', '.join(present)} (the "
                                  "kernel's answer to faccessat; nothing was opened)")
    path, at = stops[0]
    where = f" ({_shown(at)} is not searchable)" if at != path else f" ({_shown(path)})"
    mine = "" if who.switch else "doctor judged its own access, not the service's: run it " \
                                 "as root to judge as the service; else "
    return fail("trace access", f"{who.describe()} may not read {path}{where} (the kernel's "
                                "answer)",
                mine + grant(who, CAP_DAC_READ_SEARCH, "a security module (AppArmor, "
                             "SELinux) refuses it: look for its denial in the kernel log",
                             f" or read access (setfacl -m u:{who.uid}:r {path})"))


def exe_access_check(who: Identity, answers: Answers, other: Optional[Other],
                     match_exe: Sequence[str]) -> Check:
    if other is None:
        return ok("exe access", f"no process of a user other than uid {who.uid} runs here: "
                                "nothing to ask")
    if answers.exe_error is None:
        return warn("exe access", f"cannot ask the kernel {who.who}: {answers.error}",
                    "not judged")
    pid, uid = other
    saw = f"{who.describe()} {{}} read /proc/{pid}/exe of PID {pid} (uid {uid})"
    if not answers.exe_error:
        return ok("exe access", saw.format("may") + " (the kernel's answer)")
    saw = saw.format("may not") + f": {answers.exe_error}"
    advice = grant(who, CAP_SYS_PTRACE, f"try readlink /proc/{pid}/exe as root; if root is "
                   "refused too, this host (a sandbox, a security module) hides other "
                   "processes' executables from everyone")
    if match_exe:
        return fail("exe access", f"{saw}; match.exe rejects a gNB of any other user", advice)
    return warn("exe access", f"{saw} (match.exe is empty: only reports miss the executable)",
                advice)


def environment_checks(proc: str, who: Identity, answers: Answers, other: Optional[Other],
                       allow_pid_namespace: bool, trace_paths: Sequence[str],
                       match_exe: Sequence[str]) -> List[Check]:
    mounts = read_mounts(proc) or []
    return [pid_namespace_check(in_initial_pid_namespace(proc), allow_pid_namespace),
            proc_visibility_check(proc, mount_of(proc, mounts), who, answers, other),
            trace_access_check(trace_paths, who, answers),
            exe_access_check(who, answers, other, match_exe)]
