"""Build or reuse what the proof boots, by calling the shared recipes.

Each artefact is reused when its stamp in the cache says it was built from the
pinned sources; otherwise it is built once (output in the cache's logs/) and
stamped.  Fetched code is built only by the recipes under ../shared/tools:
    vm-schedext/setup.sh   kernel 7.2 (Debian), QEMU 10, busybox, guest BTF,
                           Gthulhu's scheduler (from the mirrors, unchanged)
    gthulhu-dm/build.sh    the real Decision Maker, v1.3.0 and PR #135
The recipe assumes /tmp/e2e; it runs from a copy in the cache whose paths
point into the cache instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Tuple

from bench.vm import layout as pins
from bench.vm.layout import REPO, Layout

GUEST_SRC = Path(__file__).resolve().parent / "guest"
# Debian packages of the guest root: the operator's dependencies, curl for the DM's
# run.sh, procps (ps, for looking around in a shell); python3-cffi-backend
# provides what python3-cryptography needs (debootstrap does not resolve virtual
# packages).
GUEST_PACKAGES = ("python3", "python3-jwt", "python3-cryptography", "python3-cffi-backend",
                  "python3-sdnotify",
                  "procps", "curl", "ca-certificates")
DEBIAN_MIRROR = os.environ.get("GTP5G_DEBIAN_MIRROR", "http://deb.debian.org/debian")


class BuildError(Exception):
    """One line saying which artefact could not be had, and where its log is."""


@dataclass
class Cost:
    name: str
    seconds: float
    reused: bool


def _say(msg: str) -> None:
    print(f"vm-proof: {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def exclusive(path: Path, holder: str) -> Iterator[None]:
    """An flock on `path` for the block; says once whom it waits for."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(f"waiting for {holder} ({path})")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def run_logged(argv: List[str], log: Path, what: str, env: Optional[Mapping[str, str]] = None,
                cwd: Optional[Path] = None) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        rc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=None if env is None else {**os.environ, **env},
                            cwd=cwd).returncode
    if rc != 0:
        tail = log.read_bytes()[-1500:].decode(errors="replace")
        sys.stderr.write(tail + "\n")
        raise BuildError(f"{what} failed (exit {rc}); log: {log}")


def _apt_env(lay: Layout) -> Dict[str, str]:
    """apt waits for the dpkg lock instead of failing (other sessions install too)."""
    conf = lay.cache / "apt-lock-timeout.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text('DPkg::Lock::Timeout "1800";\n')
    return {"APT_CONFIG": str(conf), "DEBIAN_FRONTEND": "noninteractive"}


def _git(mirror: Path, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", str(mirror), *args], capture_output=True,
                          text=True, check=True).stdout.strip()


def _deb_field(deb: Path, field: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), field], capture_output=True, text=True,
                          check=True).stdout.strip()


# --- the vm-schedext world: kernel, QEMU, busybox, Gthulhu's scheduler --------------


def _copy_recipe(lay: Layout) -> None:
    """The recipe's scripts with /tmp/e2e replaced by the cache (never committed)."""
    scripts = lay.e2e / "scripts"
    scripts.mkdir(parents=True, exist_ok=True)
    for src in sorted(lay.recipe.iterdir()):
        if src.is_file():
            dst = scripts / src.name
            dst.write_text(src.read_text().replace("/tmp/e2e", str(lay.e2e)))
            dst.chmod(0o755)
    # setup.sh compiles tools/lat.c, which the recipe ships beside its scripts
    (lay.e2e / "tools").mkdir(exist_ok=True)
    shutil.copy(lay.recipe / "lat.c", lay.e2e / "tools" / "lat.c")


def _recipe_versions(lay: Layout) -> Dict[str, str]:
    debs = lay.e2e / "debs"
    kernel = sorted(debs.glob(f"{pins.KERNEL_PACKAGE}_*.deb"))
    qemu = sorted(debs.glob("qemu-system-x86_*.deb"))
    if not kernel or not qemu:
        raise BuildError(f"the recipe left no kernel or QEMU package in {debs}")
    versions = {
        "kernel": f"{pins.KERNEL_PACKAGE} {_deb_field(kernel[-1], 'Version')}",
        "qemu": f"qemu-system-x86 {_deb_field(qemu[-1], 'Version')}",
        "gthulhu": pins.GTHULHU_COMMIT,
    }
    if not _deb_field(qemu[-1], "Version").startswith(pins.QEMU_VERSION_PREFIX):
        raise BuildError(f"QEMU is {versions['qemu']}, pinned {pins.QEMU_VERSION_PREFIX}*")
    return versions


def recipe_world(lay: Layout) -> Dict[str, str]:
    """Kernel, QEMU, busybox and Gthulhu's scheduler; their versions."""
    stamp = lay.e2e / ".setup-complete.json"
    if stamp.is_file():
        versions: Dict[str, str] = json.loads(stamp.read_text())
        if versions.get("gthulhu") == pins.GTHULHU_COMMIT and lay.gthulhu_binary.is_file():
            return versions
    head = _git(lay.mirror_root / "Gthulhu+Gthulhu/repo", "rev-parse", "HEAD")
    if head != pins.GTHULHU_COMMIT:
        raise BuildError(f"the Gthulhu mirror's HEAD is {head[:12]}, pinned "
                         f"{pins.GTHULHU_COMMIT[:12]} (the recipe exports HEAD)")
    _copy_recipe(lay)
    _say("building kernel, QEMU, busybox and Gthulhu's scheduler with vm-schedext/setup.sh "
         f"(about 15-30 min cold; log {lay.logs / 'setup.log'})")
    run_logged([str(lay.e2e / "scripts/setup.sh")], lay.logs / "setup.log", "vm-schedext setup.sh",
                env={**_apt_env(lay), "MIRROR_ROOT": str(lay.mirror_root)}, cwd=lay.cache)
    for need in (lay.kernel, lay.gthulhu_binary, lay.qemu_root / "usr/bin/qemu-system-x86_64",
                 lay.busybox):
        if not need.is_file():
            raise BuildError(f"vm-schedext setup.sh finished without {need}")
    versions = _recipe_versions(lay)
    stamp.write_text(json.dumps(versions, indent=1) + "\n")
    return versions


def missing_cached(lay: Layout) -> Optional[str]:
    """Why the cached artefacts (everything fetched or built from fetched code) are
    not all there, or None; what is ours (probe, .deb, root) is built in seconds."""
    if not (lay.e2e / ".setup-complete.json").is_file():
        return f"no kernel/QEMU/Gthulhu build in {lay.e2e} (make vm-proof builds it, ~30 min)"
    for name, _rev, commit in pins.DM_BUILDS:
        if not _dm_build_ok(lay.dm_dir(name), commit):
            return f"no Decision Maker build {name} in {lay.dm_dir(name)} (make vm-proof)"
    if not _guest_base_paths(lay)[1].is_file():
        return f"no guest root in {lay.cache} (make vm-proof)"
    return None


# --- the real Decision Maker ------------------------------------------------------


def _dm_build_ok(d: Path, commit: str) -> bool:
    info = d / "BUILD_INFO"
    return info.is_file() and commit in info.read_text() and (d / "gthulhu-dm").is_file()


def decision_maker(lay: Layout, name: str, rev: str, commit: str) -> Path:
    """The DM build `name` (shared with other users of build.sh: they hold
    <dm_cache>/<name>.lock while they build; we wait for it)."""
    d = lay.dm_dir(name)
    if _dm_build_ok(d, commit):
        return d
    with exclusive(lay.dm_cache / f"{name}.lock", f"another build of the Decision Maker {name}"):
        if _dm_build_ok(d, commit):
            return d
        mirror = lay.mirror_root / "Gthulhu+Gthulhu/repo"
        if _git(mirror, "rev-parse", f"{rev}^{{commit}}") != commit:
            raise BuildError(f"{rev} in {mirror} is not the pinned {commit[:12]}")
        _say(f"building the Decision Maker {name} with gthulhu-dm/build.sh (a few minutes)")
        run_logged([str(lay.dm_recipe / "build.sh"), str(mirror), commit],
                    lay.logs / f"dm-{name}.log", f"gthulhu-dm build.sh {name}",
                    env={**_apt_env(lay), "GTHULHU_DM_DIR": str(d),
                         "GTHULHU_DM_BUILD": str(lay.cache / "dm-build" / name),
                         "GO125_DIR": str(lay.cache / "go125"),
                         "MIRROR_ROOT": str(lay.mirror_root)})
    if not _dm_build_ok(d, commit):
        raise BuildError(f"the Decision Maker build in {d} does not name {commit[:12]}")
    return d


def dm_source_line(d: Path) -> str:
    """BUILD_INFO's first line: 'source: Gthulhu/Gthulhu <commit> (<date> <subject>)'."""
    return (d / "BUILD_INFO").read_text().splitlines()[0].removeprefix("source: ")


# --- the guest's Debian root ------------------------------------------------------


def _debootstrap_argv(root: Path) -> List[str]:
    return ["debootstrap", "--variant=minbase", "--include=" + ",".join(GUEST_PACKAGES),
            pins.GUEST_SUITE, str(root), DEBIAN_MIRROR]


def _guest_base_paths(lay: Layout) -> Tuple[Path, Path]:
    """The root and its completion stamp, named after what debootstrap is asked."""
    key = hashlib.sha256(" ".join(_debootstrap_argv(Path("ROOT"))).encode()).hexdigest()[:8]
    return lay.cache / f"guest-base-{key}", lay.cache / f"guest-base-{key}.complete"


def guest_base(lay: Layout) -> Path:
    """A minimal Debian root with the operator's dependencies (debootstrap, cached)."""
    root, done = _guest_base_paths(lay)
    if done.is_file():
        return root
    if shutil.which("debootstrap") is None:
        raise BuildError("debootstrap is not installed (apt-get install debootstrap)")
    if root.exists():
        shutil.rmtree(root)
    _say(f"making the guest's Debian root with debootstrap ({pins.GUEST_SUITE}, a few minutes)")
    run_logged(_debootstrap_argv(root), lay.logs / "debootstrap.log", "debootstrap")
    done.write_text(" ".join(_debootstrap_argv(root)) + "\n")
    return root


# --- ours: the probe and the hog, the operator's package ---------------------------


def guest_binaries(lay: Layout) -> Path:
    """nr-gnb and hog, static (they are ours: bench/vm/guest/*.c)."""
    out = lay.work / "bin"
    out.mkdir(parents=True, exist_ok=True)
    for name, src in (("nr-gnb", "nr_gnb.c"), ("hog", "hog.c")):
        run_logged(["gcc", "-O2", "-Wall", "-Wextra", "-static", "-pthread", "-o",
                     str(out / name), str(GUEST_SRC / src)], lay.logs / f"cc-{name}.log",
                    f"compiling {src}")
    return out


def operator_deb(lay: Layout) -> Path:
    """This tree's .deb (packaging/build-deb, as `make deb` does)."""
    out = lay.work / "deb"
    if out.exists():
        shutil.rmtree(out)
    run_logged([str(REPO / "packaging/build-deb"), str(out)], lay.logs / "deb.log",
                "packaging/build-deb", env=_apt_env(lay))
    debs = sorted(out.glob("gtp5g-operator_*_all.deb"))
    if len(debs) != 1:
        raise BuildError(f"packaging/build-deb left {len(debs)} packages in {out}")
    return debs[0]
