"""A Debian bookworm root that boots systemd as PID 1, for the packaged-service tests.

Without a container engine or a host systemd, this is what works here: a
root made by `debootstrap` (cached between runs), an overlay on top of it per
run, and systemd started as PID 1 of a new PID namespace with
`unshare --pid --fork --mount` + `chroot`, with /proc, /sys (rbind), /dev
(rbind) and a tmpfs /run, and `container=` in its environment.  Commands run
inside with `nsenter`.  It shares the host's network, so an API on the host's
127.0.0.1 is reachable.  Teardown kills the PIDs it started and unmounts what
it mounted.

Manual use:  python3 -m tests.system.container boot   (prints how to enter it)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

CACHE = Path(os.environ.get("GTP5G_ROOTFS_CACHE", "/var/cache/gtp5g-operator-tests"))
MIRROR = os.environ.get("GTP5G_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
BASE_PACKAGES = "systemd,systemd-sysv,dbus"


def why_unavailable() -> Optional[str]:
    """None when this machine can run the container, else the reason."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, unshare, mounts)"
    for tool in ("debootstrap", "unshare", "nsenter", "chroot"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"unshare --pid --mount is not permitted here: {probe.stderr.strip()}"
    return None


def base_root() -> Path:
    """The cached debootstrap root (made on first use; a few minutes)."""
    root = CACHE / f"{SUITE}-base"
    done = CACHE / f"{SUITE}-base.complete"
    if done.exists():
        return root
    if root.exists():
        shutil.rmtree(root)
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}",
                    SUITE, str(root), MIRROR], check=True, stdout=subprocess.DEVNULL)
    done.touch()
    return root


class Container:
    def __init__(self, name: str = "gtp5g-test") -> None:
        self.name = name
        self.work = Path(tempfile.mkdtemp(prefix="gtp5g-container-"))
        self.root = self.work / "merged"
        self._unshare: Optional[subprocess.Popen[bytes]] = None
        self.init_pid = 0  # host PID of systemd (PID 1 inside)
        self._mounted = False

    # --- life cycle -----------------------------------------------------------

    def boot(self, timeout: float = 60.0) -> None:
        base = base_root()
        for d in ("upper", "work", "merged"):
            (self.work / d).mkdir()
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={base},upperdir={self.work / 'upper'},"
                        f"workdir={self.work / 'work'}", str(self.root)], check=True)
        self._mounted = True
        shutil.copy("/etc/resolv.conf", self.root / "etc" / "resolv.conf")
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
            raise RuntimeError(f"in container: {command!r} exited {r.returncode}:\n"
                               f"{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
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


def main() -> int:
    why = why_unavailable()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 1
    c = Container()
    c.boot()
    print(f"booted: init is host PID {c.init_pid}; enter with\n"
          f"  nsenter -t {c.init_pid} -m -u -i -p -r -w /bin/bash\n"
          "press Enter to tear it down")
    try:
        sys.stdin.readline()
    finally:
        c.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
