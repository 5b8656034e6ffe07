"""A Debian (or Ubuntu) root that boots systemd as PID 1, for the packaged-service tests.

The suites tested by default: bookworm (Debian 12, systemd 252) and trixie
(Debian 13, systemd 257).  Ubuntu's jammy (22.04, systemd 249) and noble
(24.04, systemd 255) can be added by hand (GTP5G_SYSTEM_SUITES, below): they
need the Ubuntu archive and its keyring, which Debian does not ship.

Without a container engine or a host systemd, this is what works here: a
root made by `debootstrap` (cached between runs, one per suite and recipe),
an overlay on top of it per run, and systemd started as PID 1 of a new PID
namespace with `unshare --pid --fork --mount` + `chroot`, with /proc, /sys
(rbind), /dev (rbind) and a tmpfs /run, and `container=` in its
environment.  Commands run inside with `nsenter`.  It shares the host's
network, so an API on the host's 127.0.0.1 is reachable.  Teardown kills the
PIDs it started and unmounts what it mounted.

Environment:
  GTP5G_ROOTFS_CACHE     where the roots are kept (/var/cache/gtp5g-operator-tests)
  GTP5G_DEBIAN_MIRROR    Debian mirror (http://deb.debian.org/debian)
  GTP5G_SYSTEM_SUITES    the suites to walk, e.g. "bookworm trixie jammy noble"
                         (default: bookworm trixie)
  GTP5G_UBUNTU_MIRROR    Ubuntu mirror (http://archive.ubuntu.com/ubuntu)
  GTP5G_UBUNTU_KEYRING   the Ubuntu archive keyring (ubuntu-archive-keyring.gpg,
                         from Ubuntu's ubuntu-keyring package): needed for jammy/noble
  DEBOOTSTRAP_DIR        a debootstrap tree that knows a suite this host's does not
                         (bookworm's has no noble script: a copy with noble -> gutsy)

Manual use:  python3 -m tests.system.container boot [SUITE]   (prints how to enter it)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

CACHE = Path(os.environ.get("GTP5G_ROOTFS_CACHE", "/var/cache/gtp5g-operator-tests"))
DEBIAN_MIRROR = os.environ.get("GTP5G_DEBIAN_MIRROR", "http://deb.debian.org/debian")
UBUNTU_MIRROR = os.environ.get("GTP5G_UBUNTU_MIRROR", "http://archive.ubuntu.com/ubuntu")
BASE_PACKAGES = "systemd,systemd-sysv,dbus"


@dataclass(frozen=True)
class Suite:
    name: str
    label: str  # "Debian 12"
    systemd: int  # the systemd major version the release ships (fixed for a release)
    mirror: str
    components: str = "main"
    # apt lines added after debootstrap (updates and security pockets)
    extra_sources: Tuple[str, ...] = ()
    ubuntu: bool = False


def _ubuntu(name: str, label: str, systemd: int) -> Suite:
    return Suite(name, label, systemd, UBUNTU_MIRROR, "main,universe",
                 tuple(f"deb {UBUNTU_MIRROR} {name}-{pocket} main universe"
                       for pocket in ("updates", "security")), ubuntu=True)


KNOWN: Dict[str, Suite] = {s.name: s for s in (
    Suite("bookworm", "Debian 12", 252, DEBIAN_MIRROR),
    Suite("trixie", "Debian 13", 257, DEBIAN_MIRROR),
    _ubuntu("jammy", "Ubuntu 22.04", 249),
    _ubuntu("noble", "Ubuntu 24.04", 255),
)}
DEFAULT_SUITE = "bookworm"
# suite name -> label, for the suites this run walks
SUITES: Dict[str, str] = {
    name: KNOWN[name].label if name in KNOWN else name
    for name in os.environ.get("GTP5G_SYSTEM_SUITES", "bookworm trixie").split()}


def why_unavailable(suite: Optional[str] = DEFAULT_SUITE) -> Optional[str]:
    """None when this machine can run the container of `suite` (None: of any
    suite, as far as the host goes), else the reason."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, unshare, mounts)"
    for tool in ("debootstrap", "unshare", "nsenter", "chroot", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if suite is not None:
        if suite not in KNOWN:
            return f"unknown suite {suite!r} (known: {', '.join(KNOWN)})"
        if KNOWN[suite].ubuntu and not _ubuntu_keyring():
            return (f"{suite} ({KNOWN[suite].label}) needs the Ubuntu archive keyring: "
                    "set GTP5G_UBUNTU_KEYRING to ubuntu-archive-keyring.gpg")
        if not _root_complete(suite):
            script = _debootstrap_scripts() / suite
            if not script.exists():
                return (f"this debootstrap has no script for {suite} ({KNOWN[suite].label}): "
                        f"{script} is missing (a newer debootstrap, or DEBOOTSTRAP_DIR)")
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"unshare --pid --mount is not permitted here: {probe.stderr.strip()}"
    return None


def _ubuntu_keyring() -> Optional[Path]:
    path = os.environ.get("GTP5G_UBUNTU_KEYRING", "")
    return Path(path) if path and Path(path).is_file() else None


def _debootstrap_scripts() -> Path:
    return Path(os.environ.get("DEBOOTSTRAP_DIR", "/usr/share/debootstrap")) / "scripts"


def _debootstrap_argv(suite: Suite, root: Path) -> List[str]:
    argv = ["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}"]
    if suite.components != "main":
        argv.append(f"--components={suite.components}")
    keyring = _ubuntu_keyring() if suite.ubuntu else None
    if keyring:
        argv.append(f"--keyring={keyring}")
    return [*argv, suite.name, str(root), suite.mirror]


def _cache_key(name: str) -> str:
    """The cached root's name: the suite, plus what it was made from."""
    suite = KNOWN[name]
    argv = [a for a in _debootstrap_argv(suite, Path("ROOT")) if not a.startswith("--keyring=")]
    recipe = " ".join(argv + list(suite.extra_sources))
    keyring = _ubuntu_keyring() if suite.ubuntu else None
    if keyring:  # its content, not where it lies
        recipe += " keyring " + hashlib.sha256(keyring.read_bytes()).hexdigest()
    return f"{name}-base-{hashlib.sha256(recipe.encode()).hexdigest()[:8]}"


def _root_complete(suite: str) -> bool:
    return (CACHE / f"{_cache_key(suite)}.complete").exists()


@contextlib.contextmanager
def locked(suite: str) -> Iterator[None]:
    """Two test runs must not debootstrap the same root at once."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{suite}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def base_root(name: str = DEFAULT_SUITE) -> Path:
    """The cached debootstrap root of suite `name` (made on first use; about a minute)."""
    if name not in KNOWN:
        raise ValueError(f"unknown suite {name!r} (known: {', '.join(KNOWN)})")
    suite = KNOWN[name]
    key = _cache_key(name)
    root, done = CACHE / key, CACHE / f"{key}.complete"
    with locked(name):
        if done.exists():
            return root
        for old in CACHE.glob(f"{name}-base*"):  # older recipes of this suite
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        argv = _debootstrap_argv(suite, root)
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        if suite.extra_sources:
            with open(root / "etc" / "apt" / "sources.list", "a") as sources:
                sources.write("".join(line + "\n" for line in suite.extra_sources))
        done.write_text(" ".join(argv) + "\n")
    return root


DGRAM_QLEN = Path("/proc/sys/net/unix/max_dgram_qlen")


def _read_sysctl(path: Path) -> Optional[str]:
    try:
        return path.read_text()
    except OSError:
        return None


class Container:
    def __init__(self, name: str = "gtp5g-test", suite: str = DEFAULT_SUITE) -> None:
        self.name = name
        self.suite = suite
        self.work = Path(tempfile.mkdtemp(prefix=f"gtp5g-container-{suite}-"))
        self.root = self.work / "merged"
        self._unshare: Optional[subprocess.Popen[bytes]] = None
        self.init_pid = 0  # host PID of systemd (PID 1 inside)
        self._mounted = False
        self._qlen: Optional[str] = None

    # --- life cycle -----------------------------------------------------------

    def boot(self, timeout: float = 60.0) -> None:
        base = base_root(self.suite)
        # systemd as PID 1 raises net.unix.max_dgram_qlen to 512 at start, and the
        # container shares the host's network namespace: stop() puts it back.
        self._qlen = _read_sysctl(DGRAM_QLEN)
        for d in ("upper", "work", "merged"):
            (self.work / d).mkdir()
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={base},upperdir={self.work / 'upper'},"
                        f"workdir={self.work / 'work'}", str(self.root)], check=True)
        self._mounted = True
        resolv = self.root / "etc" / "resolv.conf"
        if resolv.is_symlink():  # e.g. to systemd-resolved's file, absent here
            resolv.unlink()
        shutil.copy("/etc/resolv.conf", resolv)
        (self.root / "etc" / "hostname").write_text(self.name + "\n")
        script = (
            f"mount -t proc proc {self.root}/proc && "
            f"mount --rbind /sys {self.root}/sys && mount --rbind /dev {self.root}/dev && "
            f"mount -t tmpfs tmpfs {self.root}/run && "
            f"exec chroot {self.root} /usr/bin/env -i container={self.name} "
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin /lib/systemd/systemd"
        )
        self._log = open(self.work / "console.log", "wb")  # noqa: SIM115 (closed in stop)
        self._unshare = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount", "--propagation", "private",
             "sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self.init_pid:
            children = Path(f"/proc/{self._unshare.pid}/task/{self._unshare.pid}/children")
            try:
                pids = children.read_text().split()
            except OSError:
                pids = []
            if pids:
                self.init_pid = int(pids[0])
            elif time.monotonic() > deadline or self._unshare.poll() is not None:
                raise RuntimeError("container did not start: " + self.console())
            else:
                time.sleep(0.05)
        self._wait_running(deadline)

    def _wait_running(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            r = self.run("systemctl is-system-running", check=False)
            if r.stdout.strip() in ("running", "degraded"):
                return
            time.sleep(0.5)
        raise RuntimeError("systemd did not reach running: " + self.console())

    def console(self) -> str:
        try:
            return (self.work / "console.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Kill the PIDs we started (init first: the kernel kills the rest of its
        namespace), then unmount and remove what we made."""
        if self.init_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.init_pid, signal.SIGKILL)
        if self._unshare is not None:
            try:
                self._unshare.wait(30)
            except subprocess.TimeoutExpired:
                self._unshare.kill()
                self._unshare.wait(30)
            self._log.close()
        # The namespace's init is gone once the kernel has reaped everything in it.
        deadline = time.monotonic() + 30
        while self.init_pid and Path(f"/proc/{self.init_pid}").exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"container init {self.init_pid} survived SIGKILL")
            time.sleep(0.05)
        if self._mounted:
            subprocess.run(["umount", "-l", str(self.root)], check=False)
            self._mounted = False
        if self._qlen is not None:
            DGRAM_QLEN.write_text(self._qlen)
            self._qlen = None
        shutil.rmtree(self.work, ignore_errors=True)

    # --- inside ------------------------------------------------------------------

    def run(self, command: str, check: bool = True, timeout: float = 600,
            input: Optional[str] = None) -> subprocess.CompletedProcess[str]:
        """Run a shell command inside (all namespaces of the container's init)."""
        argv: List[str] = ["nsenter", "-t", str(self.init_pid), "-m", "-u", "-i", "-p",
                           "-r", "-w", "/usr/bin/env", "-i",
                           "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
                           "DEBIAN_FRONTEND=noninteractive", "SYSTEMD_PAGER=", "sh", "-c",
                           command]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise RuntimeError(f"in container ({self.suite}): {command!r} exited "
                               f"{r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        return r

    def popen(self, command: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["nsenter", "-t", str(self.init_pid), "-m", "-u", "-i", "-p", "-r", "-w",
             "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "sh", "-c",
             command],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def path(self, inside: str) -> Path:
        """The host path of a file inside the container."""
        return self.root / inside.lstrip("/")


def main(argv: List[str]) -> int:
    suite = argv[2] if len(argv) > 2 else DEFAULT_SUITE
    why = why_unavailable(suite)
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 1
    c = Container(suite=suite)
    c.boot()
    print(f"booted {suite}: init is host PID {c.init_pid}; enter with\n"
          f"  nsenter -t {c.init_pid} -m -u -i -p -r -w /bin/bash\n"
          "press Enter to tear it down")
    try:
        sys.stdin.readline()
    finally:
        c.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
