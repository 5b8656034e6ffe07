"""The files the running daemon publishes in its runtime directory.

* state.json — the daemon's state for `gtp5g-operator status` and `doctor`;
* metrics.prom — the Prometheus exposition text (served by the endpoint);
* health.json — what /health answers from;
* heartbeat — 16 bytes, mmap'd: when the loop turned last and by when it
  will turn next (CLOCK_MONOTONIC), so another process can tell a stalled
  loop without asking it.

Directories follow systemd's RuntimeDirectory=/StateDirectory=: the
environment variables it sets, else /run/gtp5g-operator and
/var/lib/gtp5g-operator.  Nothing secret is written (no token, no key, no
password).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import mmap
import os
from typing import Any, Dict, Mapping, Optional, Tuple

from .. import files
from ..core.procfs import parse_status
from ..files import FileProblem, atomic_write, make_dirs, read_json_file, read_small_text
from .runtime_names import HEARTBEAT, HEARTBEAT_FILE, STATE_FILE

log = logging.getLogger(__name__)


def _first_dir(env: Mapping[str, str], var: str, default: str) -> str:
    # systemd sets a colon-separated list when several directories are configured
    value = env.get(var, "")
    return value.split(":")[0] if value else default


def runtime_dir(env: Mapping[str, str] = os.environ) -> str:
    return _first_dir(env, "RUNTIME_DIRECTORY", "/run/gtp5g-operator")


def published_dir(env: Mapping[str, str] = os.environ) -> str:
    """Where `status` and `doctor` find the daemon's state.json: $RUNTIME_DIRECTORY only
    when it holds one.  Run by a monitoring agent whose own unit says RuntimeDirectory=
    (zabbix's, often), the variable names the agent's directory, and status said "not
    running" (exit 3) beside a running service."""
    own = runtime_dir(env)
    return own if os.path.lexists(os.path.join(own, STATE_FILE)) else runtime_dir({})


def state_dir(env: Mapping[str, str] = os.environ) -> str:
    return _first_dir(env, "STATE_DIRECTORY", "/var/lib/gtp5g-operator")


class AlreadyRunning(Exception):
    """Another daemon uses the state or runtime directory; the message is one line."""

    def __init__(self, who: str, which: str, directory: str) -> None:
        super().__init__(f"another gtp5g-operator ({who}) is running with the {which} "
                         f"directory {directory}: stop it first, or give this one other "
                         "directories (STATE_DIRECTORY=, RUNTIME_DIRECTORY=)")


def hold_state_directory(directory: str, proc: str = "/proc") -> Optional[int]:
    """Make this the only daemon using `directory`: an exclusive flock(2) on the
    directory itself, held until the process ends (the fd is returned).  Two daemons
    on one state directory overwrite each other's proof of what this host owns, and
    write, clear and delete each other's server objects (one's clear_on_stop removes
    what the other still boosts); a second `gtp5g-operator run` by hand beside the
    service did all of that.  The directory, not a file in it: there is no file that
    a run as root could leave behind unreadable for the service's dynamic user, and
    only who can open the directory can lock it (the unit's is under the root-only
    /var/lib/private; one made by a run by hand is 0755, and a lock of a user who may
    not write there is not taken for a daemon's).  A directory that cannot be opened
    (a run by hand as a user who may not) is one warning, as before: that run cannot
    write there either."""
    try:
        make_dirs(directory)  # 0755 whatever the umask, as atomic_write makes them
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        log.warning("cannot lock the state directory %s: %s (another daemon using it "
                    "would not be noticed)", directory, exc.strerror or exc)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        st = os.fstat(fd)
        holder = _flock_holder(st, proc)
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            log.warning("cannot lock the state directory %s: %s", directory, exc.strerror)
            return None
        # Any user who may open the directory may lock it: made 0755 by a run by hand,
        # an unprivileged user's `flock DIR cat` made every start after it exit 75.  A
        # daemon writes there, so a holder that may not (neither root nor the owner; or
        # gone, its lock kept by a child it passed the fd to) is not one.
        uid = _real_uid(holder, proc) if holder else None
        gone = holder is not None and uid is None and files.signal_errno(holder) == errno.ESRCH
        if gone or uid not in (None, 0, st.st_uid):
            log.warning("PID %d (%s) holds a lock on the state directory %s, and cannot "
                        "write there: not a gtp5g-operator; going on without the lock "
                        "(another daemon using it would not be noticed)", holder,
                        "exited" if gone else f"uid {uid}", directory)
            return None
        who = f"PID {holder}" if holder else "a process /proc/locks does not name"
        raise AlreadyRunning(who, "state", directory) from None
    return fd


def _real_uid(pid: int, proc: str) -> Optional[int]:
    """The real uid of process `pid`, None when it is gone (or cannot be read)."""
    status = read_small_text(os.path.join(proc, str(pid), "status"))
    return parse_status(status.encode())[1] if status else None


def check_runtime_directory(directory: str) -> None:
    """Raise AlreadyRunning while a live daemon publishes in `directory`.  One started
    with another state directory but this runtime directory replaced that daemon's
    heartbeat with its own and removed it at its stop: the first's /health answered
    503 "stalled" from then on, while its loop turned.  Not a lock: the runtime
    directory is readable by every user (status), who could hold a lock on it and
    keep the service from starting; nobody else can write its state.json."""
    state, _ = read_state(directory)
    pid = state.get("pid") if state is not None else None
    if pid != os.getpid() and daemon_alive(pid, directory=directory):
        raise AlreadyRunning(f"PID {pid}", "runtime", directory)


def _flock_holder(st: os.stat_result, proc: str) -> Optional[int]:
    """The PID holding a flock on the file of `st`, from /proc/locks (lines such as
    "1: FLOCK  ADVISORY  WRITE 4711 fd:01:1234 0 EOF"; a waiter's have "->").  Read
    to its end, a line at a time: any user can make it megabytes long (a byte-range
    lock a line, as many as they like on one fd), and the first MiB of it hid their
    flock of the state directory, which was then taken for a daemon's."""
    with contextlib.suppress(OSError), open(os.path.join(proc, "locks"), "rb") as locks:
        for line in locks:
            fields = line.split()
            if len(fields) < 6 or fields[1] != b"FLOCK":
                continue
            device = fields[5].split(b":")
            with contextlib.suppress(ValueError):
                if len(device) == 3 and int(device[2]) == st.st_ino and st.st_dev == \
                        os.makedev(int(device[0], 16), int(device[1], 16)):
                    return int(fields[4])
    return None


class Heartbeat:
    """The loop's pulse in a shared 16-byte file; writing it costs no system call."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, HEARTBEAT_FILE)
        self._map: Optional[mmap.mmap] = None
        self._made: Optional[Tuple[int, int]] = None  # (st_dev, st_ino) of the file we made
        self._beat = (0.0, 0.0)  # the last (turned_at, next_turn_by) written
        self._make(logging.WARNING)

    def check(self) -> None:
        """Make the file when the one we made is gone (its directory removed under us,
        see KeptFile.write), or was never made (/run full at start): without it /health
        answers "stalled" for good, however the loop turns.  Called by the liveness
        pass: one stat(2), or one try to make it, said once per episode."""
        if self._made is not None:
            with contextlib.suppress(OSError):
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == self._made:
                    return
            log.info("%s was removed: making it again", self.path)
            self.close()
            self._make(logging.WARNING)
            return
        self._make(logging.DEBUG)  # failing still: said when it began
        if self._made is not None:
            log.info("%s made: /health tells a stalled loop again", self.path)

    def _make(self, level: int) -> None:
        self._made = None
        try:
            make_dirs(os.path.dirname(self.path))
            # A file of our own, made now: one found here may belong to someone who can
            # truncate it under the mapping, and the next beat would die of SIGBUS.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            log.log(level, "cannot create %s: %s (/health cannot tell a stalled loop)",
                    self.path, exc.strerror)
            return
        try:
            os.fchmod(fd, 0o644)  # whatever the umask: the endpoint reads it as another user
            # Written, not ftruncate()d: a hole's page is allocated at the first store
            # into the mapping, which on a full tmpfs is SIGBUS, not ENOSPC.
            if os.write(fd, bytes(HEARTBEAT.size)) != HEARTBEAT.size:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self._map = mmap.mmap(fd, HEARTBEAT.size)
            # Made again (check()): the promise of this turn, not zeros until the next
            # beat.  extend() writes only a later promise, so an exchange in the turn of
            # the re-making left /health "stalled" for up to api.timeout.
            HEARTBEAT.pack_into(self._map, 0, *self._beat)
            st = os.fstat(fd)
            self._made = (st.st_dev, st.st_ino)
        except (OSError, ValueError) as exc:
            log.log(level, "cannot map %s: %s", self.path, exc)
            with contextlib.suppress(OSError):
                os.unlink(self.path)  # not a heartbeat: /health must not read it as one
        finally:
            os.close(fd)

    def beat(self, now: float, next_turn_by: float) -> None:
        self._beat = (now, next_turn_by)
        if self._map is not None:
            HEARTBEAT.pack_into(self._map, 0, now, next_turn_by)

    def extend(self, next_turn_by: float) -> None:
        """Push the promise of the next turn back (never forward) within a turn."""
        turned_at, promised = self._beat
        if next_turn_by > promised:
            self.beat(turned_at, next_turn_by)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        with contextlib.suppress(OSError):
            os.unlink(self.path)


TEXTFILE_RECORD = "textfile.path"  # in the state directory: the package's purge reads it


def record_textfile(state_directory: str, textfile: str) -> str:
    """Note which metrics textfile this service maintains (one absolute path, or no
    file), so that purging the package removes exactly that file and no other.
    Returns the path recorded before ("" if none): a file this service wrote
    and no longer maintains, which its caller removes (left, node-exporter would
    export its last values for ever)."""
    path = os.path.join(state_directory, TEXTFILE_RECORD)
    before = (read_small_text(path, 4096) or "").strip()
    if not before.startswith("/") or "\n" in before:
        before = ""
    try:
        if not textfile:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        elif textfile != before:
            atomic_write(path, (textfile + "\n").encode(), 0o644)
    except OSError as exc:
        log.warning("cannot record the metrics textfile in %s: %s (purging the package "
                    "will leave %s behind)", path, exc.strerror, textfile or "it")
    return before


def daemon_alive(pid: Any, proc: str = "/proc", directory: str = "") -> bool:
    """Is `pid` (from a state.json) a running gtp5g-operator, and not another program
    that got its PID since?  With `directory`, the one whose state.json names it."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        with open(os.path.join(proc, str(pid), "cmdline"), "rb") as f:
            if b"gtp5g" not in f.read(4096):
                return False
        # The PID of a daemon that was killed is in its state.json, which any user reads:
        # a user who got it (forking through the PID space) for a `sh -c ... gtp5g`
        # made every start after it exit 75 and `status` call the dead daemon running.
        # The daemon wrote state.json: a process of another user is not that daemon.
        with contextlib.suppress(FileNotFoundError):  # removed meanwhile: it stopped
            return not directory or _real_uid(pid, proc) == os.stat(
                os.path.join(directory, STATE_FILE)).st_uid
        return False
    except (FileNotFoundError, PermissionError):
        # /proc mounted with hidepid= hides the service's process (its own user) from
        # other users: `status` from a monitoring agent said "not running" while it ran.
        # A process we may not signal is one we may not see (one we may has exited); which
        # program cannot be told then, so only a PID reused after a crash is taken for ours.
        return proc == "/proc" and files.signal_errno(pid) == errno.EPERM
    except OSError:
        return False


def read_state(directory: str) -> Tuple[Optional[Dict[str, Any]], str]:
    """(state.json's object, "") or (None, why not): "no PATH" when there is none."""
    path = os.path.join(directory, STATE_FILE)
    try:
        value = read_json_file(path)
    except FileNotFoundError:
        return None, f"no {path}"
    except (OSError, FileProblem, ValueError) as exc:
        return None, f"cannot read {path}: {exc}"
    if not isinstance(value, dict):
        return None, f"cannot read {path}: {STATE_FILE} is not a JSON object"
    return value, ""
