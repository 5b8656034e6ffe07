"""Reading and writing the daemon's files safely.

Reading: only regular files, opened without blocking (a FIFO put where the
configuration, the key or the CA file should be would otherwise hang
`check-config`, the start and every reload), and never more than a limit —
a file over the limit is an error, not a silent truncation.

Writing: atomic (readers see the old file or the new one, never half), and
the temporary file is created exclusively, without following links and
without blocking, so that nobody who can write the directory can make the
daemon write elsewhere or hang on a FIFO planted under the temporary name.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import secrets
import stat
from typing import Any, Optional, Set

MAX_FILE_SIZE = 1 << 20  # configuration, keys and CA bundles are a few KiB


class FileProblem(Exception):
    """A file that cannot be used; the message is one line without the path."""


def read_regular_file(path: str, limit: int = MAX_FILE_SIZE) -> tuple[bytes, os.stat_result]:
    """The whole content of a regular file of at most `limit` bytes, and its stat."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise FileProblem(exc.strerror or str(exc)) from exc  # the cause: read_json_file
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileProblem(f"not a regular file ({file_kind(st.st_mode)})")
        if st.st_size > limit:
            raise FileProblem(f"larger than {limit} bytes ({st.st_size} bytes)")
        data = bytearray()
        while chunk := os.read(fd, 65536):
            data += chunk
            if len(data) > limit:  # grew while we read it
                raise FileProblem(f"larger than {limit} bytes")
        return bytes(data), st
    except OSError as exc:
        raise FileProblem(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)


def read_small_text(path: str, limit: int = 65536) -> Optional[str]:
    """A small regular file's text (kernel files, our own state), or None when it
    cannot be read as one — never blocking, whatever is at `path`."""
    try:
        data, _ = read_regular_file(path, limit)
    except FileProblem:
        return None
    return data.decode("utf-8", "replace")


# What one document may hold: a decoded value costs far more than its text, up to 25
# times (a 1 MiB answer of ["ā","ā",...] becomes 18 MB of str objects, of
# [{"a":"ā"},...] 26 MB), and the daemon (~21 MB) with its endpoint must stay under
# the unit's MemoryHigh=48M.  The caps keep a 1 MiB document under ~15 MB (the
# costliest: one object of 70,000 distinct keys, at the value cap alone), and leave
# room for the largest real answers that fit http.MAX_BODY (1 MiB of v0 strategies:
# ~19,000 objects, ~56,000 commas; of another writer's selector strategy, which v0
# lists expanded, one entry per PID with its selectors: ~33,000 and ~55,000; of
# Manager policies: ~16,000 and ~41,000).
MAX_JSON_CONTAINERS = 40_000  # objects and arrays
MAX_JSON_VALUES = 70_000  # counted as commas: each separates two values


def decode_json(data: bytes) -> Any:
    """The JSON value of `data`, or ValueError — for anything at all in `data`.

    Total, because what it decodes comes from servers and files others may
    write: not UTF-8, not JSON, NaN or Infinity, nesting deeper than the parser
    can follow (json raises RecursionError there), or more objects, arrays or
    values than a few MB of memory hold (MAX_JSON_CONTAINERS) are all ValueError.
    A number too large for a float (1e999) is one too: kept, it would be sent
    back as `Infinity`, which is not JSON, by whatever re-sends what it read
    (merge mode keeps others' entries).
    """
    if data.count(b"{") + data.count(b"[") > MAX_JSON_CONTAINERS:
        raise ValueError(f"more than {MAX_JSON_CONTAINERS} JSON objects and arrays")
    if data.count(b",") > MAX_JSON_VALUES:  # (commas inside strings count too: never fewer)
        raise ValueError(f"more than {MAX_JSON_VALUES} JSON values")
    try:
        return json.loads(data, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def read_json_file(path: str) -> Any:
    """The JSON value of a small regular file.  Raises FileNotFoundError when it
    does not exist, FileProblem when it is not a regular file or is too large,
    ValueError when it is not JSON (`decode_json`)."""
    try:
        data, _ = read_regular_file(path)
    except FileProblem as exc:
        # The open's own answer, not an earlier check: a file removed between the two
        # (state.json at every clean stop, read by status from cron) is absent, not
        # "cannot read ...: No such file or directory".
        if isinstance(exc.__cause__, FileNotFoundError):
            raise FileNotFoundError(path) from None
        raise
    return decode_json(data)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} does not fit a float")
    return value


def file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a regular file")):
        if test(mode):
            return name
    return "a special file"


def make_dirs(path: str) -> None:
    """os.makedirs(path, exist_ok=True), but every directory it makes is 0755 whatever
    the umask: run by hand under umask 000, /run/gtp5g-operator and the state directory
    came out world-writable (anyone could replace the ownership records, and the
    daemon then deletes what they name); under umask 077 the endpoint, which reads the
    runtime directory as nobody, could not serve /health at all."""
    if not path or os.path.isdir(path):
        return
    make_dirs(os.path.dirname(path))
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:  # made meanwhile, or not a directory: the write says so
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, 0o755)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, mode: int = 0o644, durable: bool = False,
                 make_directory: bool = True) -> None:
    """Write data to a temporary file beside path and rename it over path, making
    path's directory first if need be (make_dirs; not with `make_directory` False).

    The mode is set explicitly (the unit's UMask=0077 would make files
    unreadable for `gtp5g-operator status` or node-exporter).  `durable`
    fsyncs first, for files that must survive a power loss; runtime files on
    tmpfs gain nothing from it and would pay a blocking wait.
    """
    if make_directory:
        make_dirs(os.path.dirname(path))
    if path not in _swept:
        _swept.add(path)
        remove_stale_temporaries(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NONBLOCK
             | os.O_CLOEXEC)
    try:
        fd = os.open(tmp, flags, mode)
    except FileExistsError:  # left over from a crash, or planted: replace it
        try:
            os.unlink(tmp)
        except (PermissionError, IsADirectoryError):
            # Planted by another user in a sticky directory (the textfile's, when others
            # may write there): not ours to remove, and the name is known (our PID is
            # public), so one nobody can guess instead.  A directory (EISDIR) even when
            # run by hand as root, which may remove others' files there.
            tmp = f"{tmp}.{secrets.token_hex(8)}"
        fd = os.open(tmp, flags, mode)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno == errno.EISDIR:  # (only rename can)
            raise IsADirectoryError(errno.EISDIR, "is a directory", path) from None
        raise
    if durable:
        directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY
                            | os.O_CLOEXEC)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


_swept: Set[str] = set()  # the paths whose directory atomic_write has swept (once each)
_TEMPORARY = re.compile(r"\.tmp\.([0-9]{1,7})(?:\.[0-9a-f]{16})?")  # atomic_write's names


def remove_stale_temporaries(path: str) -> None:
    """Remove the temporary files of `path` that an atomic_write killed between its
    create and its rename left behind (SIGKILL or the watchdog's abort during the
    fsync, a power cut): nothing else ever would, and they piled up in the state
    directory and beside the metrics textfile.  Only what is provably ours, for the
    textfile's directory is node-exporter's and other writers': `path`'s own name
    with atomic_write's suffix, a regular file of our user, written by a process
    that no longer runs (or by this one, which is not writing it now)."""
    directory, base = os.path.split(path)
    try:
        names = os.listdir(directory or ".")
    except OSError:
        return
    for name in names:
        match = _TEMPORARY.fullmatch(name[len(base):]) if name.startswith(base) else None
        if match is None or _running(int(match.group(1))):
            continue
        stale = os.path.join(directory, name)
        with contextlib.suppress(OSError):
            st = os.lstat(stale)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
                os.unlink(stale)


def _running(pid: int) -> bool:
    return pid != os.getpid() and signal_errno(pid) != errno.ESRCH


def signal_errno(pid: int) -> int:
    """kill(pid, 0)'s errno: 0 for a process of ours, EPERM for another user's, ESRCH
    for none (a number past pid_t too: no process's PID)."""
    try:
        os.kill(pid, 0)
    except OverflowError:
        return errno.ESRCH
    except OSError as exc:
        return exc.errno or errno.ESRCH
    return 0
