"""The real Gthulhu Decision Maker, where a build of it exists on this machine.

This repository holds no recipe that builds it (a rule of the workplace): the
recipe and what it needs are in ../shared/tools/gthulhu-dm/README.md.  A build
is a folder made by that recipe's build.sh (binary `gthulhu-dm`, its JWT key
pair, a config template, `run.sh` and, written last, `BUILD_INFO`), found under
$GTP5G_GTHULHU_DM_ROOT (default /var/cache/gtp5g-operator-tests/gthulhu-dm) as:

    v1.3.0/   tag v1.3.0: rules match thread-group leaders only
    pr135/    refs/pull/135/head (d29da16): every thread's own comm, listed by TID

Each is started with the build's own run.sh, on 127.0.0.1 and a free port.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

DM_ROOT_ENV = "GTP5G_GTHULHU_DM_ROOT"
DEFAULT_DM_ROOT = Path("/var/cache/gtp5g-operator-tests/gthulhu-dm")
RECIPE = "../shared/tools/gthulhu-dm/README.md"
BUILD_FILES = ("BUILD_INFO", "gthulhu-dm", "run.sh", "dm_config.template.toml",
               "jwt_private_key.pem", "jwt_public_key.pem")
LISTEN_PREFIX = "GTHULHU_DM_LISTEN "
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class DMBuild:
    """One build of the real DM, and the mode of the fake that must behave like it."""

    name: str
    match_threads: bool  # the fake's mode that imitates this build

    @property
    def directory(self) -> Path:
        return Path(os.environ.get(DM_ROOT_ENV) or DEFAULT_DM_ROOT) / self.name

    def missing(self) -> Optional[str]:
        """Why this build cannot be used (a skip reason), or None."""
        absent = [f for f in BUILD_FILES if not (self.directory / f).is_file()]
        if not absent:
            return None
        what = f" (missing {', '.join(absent)})" if self.directory.is_dir() else ""
        return (f"no real Decision Maker built at {self.directory}{what}: see {RECIPE} "
                f"(${DM_ROOT_ENV} moves the root)")

    @contextlib.contextmanager
    def in_use(self, timeout: float = 600.0) -> Iterator[Optional[str]]:
        """Hold a shared lock on <root>/<name>.lock, the lock a builder holds exclusively
        (flock), so that no rebuild wipes the build while a test runs it.  Yields a
        skip reason instead when a build goes on for longer than `timeout`."""
        lock = self.directory.parent / f"{self.name}.lock"
        if not lock.exists():
            yield None
            return
        with open(lock, "rb") as f:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        yield f"{self.directory} is being rebuilt ({lock} held for {timeout} s)"
                        return
                    time.sleep(1.0)
            try:
                yield None
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def private_key(self) -> bytes:
        return (self.directory / "jwt_private_key.pem").read_bytes()

    def public_key(self) -> str:
        return (self.directory / "jwt_public_key.pem").read_text()

    def source(self) -> str:
        """The first line of BUILD_INFO: which upstream commit this is."""
        return (self.directory / "BUILD_INFO").read_text().splitlines()[0]


LEADERS_ONLY = DMBuild("v1.3.0", match_threads=False)
THREAD_AWARE = DMBuild("pr135", match_threads=True)
BUILDS = (LEADERS_ONLY, THREAD_AWARE)


def _term_when_parent_dies() -> None:
    """In the child: SIGTERM (passed on to the DM by run.sh) if the tests die first."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _read_line(fd: int, deadline: float) -> str:
    """One line from a pipe, or what came of it by EOF or the deadline."""
    chunks = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        byte = os.read(fd, 1)
        if byte in (b"", b"\n"):
            break
        chunks.append(byte)
    return b"".join(chunks).decode(errors="replace")


class RealDecisionMaker:
    """The real DM as a child process (run.sh in its own session), until stop()."""

    def __init__(self, build: DMBuild, workdir: Path, start_timeout: float = 60.0,
                 port: int = 0) -> None:
        """`port` 0: a free one (the DM's own choice)."""
        self.build = build
        # run.sh keeps each run's config and log in $GTHULHU_DM_DIR/run.XXXXXX: a folder
        # of links to the build keeps those out of the shared build.
        home = workdir / f"dm-{build.name}-{port}"
        home.mkdir(parents=True)
        for name in ("gthulhu-dm", "dm_config.template.toml", "jwt_private_key.pem",
                     "jwt_public_key.pem"):
            (home / name).symlink_to(build.directory / name)
        self.log_path = home / "run.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DM_")}
        env.update(GTHULHU_DM_DIR=str(home), GTHULHU_DM_START_TIMEOUT=str(int(start_timeout)))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([str(build.directory / "run.sh"), str(port)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=log, env=env, start_new_session=True,
                                         preexec_fn=_term_when_parent_dies)
        assert self.proc.stdout is not None
        line = _read_line(self.proc.stdout.fileno(), time.monotonic() + start_timeout + 5)
        if not line.startswith(LISTEN_PREFIX):
            self.stop()
            raise RuntimeError(f"the real DM {build.name} did not start (said {line!r}): "
                               + self.log()[-2000:])
        self.address = line[len(LISTEN_PREFIX):].strip()

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM to run.sh (passed on to the DM); the whole session is killed after 10 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
