"""The guest's root file system, packed as one initramfs (cpio).

A Debian root (artefacts.guest_base) plus: this tree's operator installed from
its .deb with dpkg, the Decision Maker builds under /opt/dm/<name>/ (binary,
config template, key pair, their run.sh), Gthulhu's scheduler under
/opt/gthulhu/, and ours under /opt/proof/ (the orchestrator, the gNB-like
probe, the hog, busybox for ip/hostname/poweroff).  /init is guest/init.sh.
The kernel unpacks it into RAM, so no block or file-system driver is needed
(the cloud kernel has them as modules).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Dict

from bench.vm.artefacts import GUEST_SRC, BuildError, run_logged
from bench.vm.layout import REPO, Layout

# files of a DM build the guest needs (build.sh's output, minus nothing else)
DM_FILES = ("gthulhu-dm", "dm_config.template.toml", "jwt_private_key.pem",
            "jwt_public_key.pem", "run.sh", "BUILD_INFO")
# ours, importable in the guest as bench.vm.guest.run
PROOF_MODULES = ("bench/__init__.py", "bench/vm/__init__.py", "bench/vm/gthulhu_log.py",
                 "bench/vm/guest/__init__.py", "bench/vm/guest/run.py")
TRIM = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
        "var/cache/apt", "var/lib/apt/lists")


def _install_deb(root: Path, deb: Path, log: Path) -> None:
    inside = root / "tmp" / deb.name
    shutil.copy(deb, inside)
    run_logged(["chroot", str(root), "dpkg", "-i", f"/tmp/{deb.name}"], log,
                "installing the operator's .deb into the guest root")
    inside.unlink()


def _copy(src: Path, dst: Path, mode: int = 0o755) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    dst.chmod(mode)


def assemble(lay: Layout, base: Path, deb: Path, dms: Dict[str, Path], bins: Path) -> Path:
    """Build the root in the cache's work/ and pack it; the cpio's path."""
    root = lay.work / "root"
    if root.exists():
        shutil.rmtree(root)
    subprocess.run(["cp", "-a", str(base), str(root)], check=True)
    _install_deb(root, deb, lay.logs / "guest-dpkg.log")
    for name, d in dms.items():
        for f in DM_FILES:
            _copy(d / f, root / "opt/dm" / name / f, 0o600 if "private" in f else 0o755)
    _copy(lay.gthulhu_binary, root / "opt/gthulhu/gthulhu")
    _copy(lay.busybox, root / "opt/proof/busybox")
    for name in ("nr-gnb", "hog"):
        _copy(bins / name, root / "opt/proof/bin" / name)
    for rel in PROOF_MODULES:
        _copy(REPO / rel, root / "opt/proof" / rel, 0o644)
    _copy(GUEST_SRC / "init.sh", root / "init")
    for rel in TRIM:
        shutil.rmtree(root / rel, ignore_errors=True)
    return pack(root, lay.work / "root.cpio")


def pack(root: Path, out: Path) -> Path:
    """newc cpio, uncompressed: unpacking gzip costs more emulated CPU than copying."""
    find = subprocess.Popen(["find", ".", "-print0"], cwd=root, stdout=subprocess.PIPE)
    with open(out, "wb") as f:
        rc = subprocess.run(["cpio", "--null", "-o", "-H", "newc", "--quiet"], cwd=root,
                            stdin=find.stdout, stdout=f).returncode
    find.wait()
    if rc != 0 or find.returncode != 0:
        raise BuildError(f"packing {root} into {out} failed")
    return out
