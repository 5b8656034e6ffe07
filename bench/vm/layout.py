"""Where the proof's artefacts live, where their sources are, and the pinned versions.

Everything fetched or built from fetched code stays in the cache
(`GTP5G_VM_CACHE`, default /var/cache/gtp5g-operator-tests/vm); this tree only
calls the shared recipes (`GTP5G_SHARED_TOOLS`, default ../shared/tools beside
the repository) and holds its own guest code.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Tuple

REPO = Path(__file__).resolve().parents[2]
TESTS_CACHE = Path("/var/cache/gtp5g-operator-tests")

# --- pins: what the proof is built from -------------------------------------------
# The vm-schedext recipe's choices, checked after its setup (a Debian archive moves).
KERNEL_PACKAGE = "linux-binary-7.2.13+deb14-cloud-amd64"
KERNEL_RELEASE = "7.2.13+deb14-cloud-amd64"
QEMU_VERSION_PREFIX = "1:10.0."  # qemu-system-x86 from bookworm-backports (the recipe's QEMU 10)
# Gthulhu's scheduler: the mirror's HEAD is exported by the recipe; it must be this commit.
GTHULHU_COMMIT = "c969a96b10cb551b28e2f4a8320b803d62fe3f9b"
GUEST_SUITE = "bookworm"
# The real Decision Maker, two builds (../shared/tools/gthulhu-dm/build.sh).
DM_BUILDS: Tuple[Tuple[str, str, str], ...] = (
    # name, git revision in the mirror, commit it must resolve to
    ("v1.3.0", "v1.3.0", "0520224327d0ebaaae7fcf2849fac08ca6126f56"),
    ("pr135", "refs/pull/135/head", "d29da168f45ba3585e0a148dbd501e367a53b12c"),
)
# The bare clones the recipes build from (vm-schedext: the first six; gthulhu-dm:
# Gthulhu/Gthulhu and the Go modules Debian lacks).
MIRRORS = ("Gthulhu+Gthulhu", "Gthulhu+qumun", "Gthulhu+libbpfgo", "Gthulhu+plugin",
           "sched-ext+scx", "libbpf+libbpf", "uber-go+fx", "uber-go+dig",
           "mongodb+mongo-go-driver", "labstack+echo", "golang-jwt+jwt")
# What each build lists for a rule naming the gNB's process and thread names.
DM_BOOSTS = {"v1.3.0": "leader", "pr135": "threads"}


def _main_checkout() -> Optional[Path]:
    """The main working tree of this repository (a worktree's common .git's parent)."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--git-common-dir"],
                             capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    common = Path(out)
    if not common.is_absolute():
        common = REPO / common
    return common.resolve().parent


def _beside_repo(name: str) -> Path:
    """`../name` beside this checkout, else beside the main checkout (worktrees)."""
    first = REPO.parent / name
    if first.exists():
        return first
    main = _main_checkout()
    return main.parent / name if main is not None else first


@dataclass(frozen=True)
class Layout:
    cache: Path          # everything this proof builds or fetches
    dm_cache: Path       # the Decision Maker builds, shared with other users of build.sh
    shared_tools: Path   # ../shared/tools: vm-schedext/ and gthulhu-dm/
    mirror_root: Path    # bare clones as OWNER+NAME/repo
    work_name: str = "work"  # per-run files under the cache (tests use their own)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Layout:
        return cls(
            cache=Path(env.get("GTP5G_VM_CACHE", str(TESTS_CACHE / "vm"))),
            dm_cache=Path(env.get("GTP5G_DM_CACHE", str(TESTS_CACHE / "gthulhu-dm"))),
            shared_tools=Path(env.get("GTP5G_SHARED_TOOLS", str(_beside_repo("shared/tools")))),
            mirror_root=Path(env.get("MIRROR_ROOT", str(_beside_repo(".mirror")))),
        )

    # the vm-schedext recipe's world (its /tmp/e2e, moved into the cache)
    @property
    def e2e(self) -> Path:
        return self.cache / "e2e"

    @property
    def recipe(self) -> Path:
        return self.shared_tools / "vm-schedext"

    @property
    def dm_recipe(self) -> Path:
        return self.shared_tools / "gthulhu-dm"

    @property
    def kernel(self) -> Path:
        return self.e2e / "kernel/k72/usr/lib/modules" / KERNEL_RELEASE / "vmlinuz"

    @property
    def qemu_root(self) -> Path:
        return self.e2e / "qemu10/root"

    @property
    def gthulhu_binary(self) -> Path:
        return self.e2e / "gthulhu-bin/gthulhu"

    @property
    def busybox(self) -> Path:
        return self.e2e / "bb/usr/bin/busybox"

    def dm_dir(self, name: str) -> Path:
        return self.dm_cache / name

    @property
    def logs(self) -> Path:
        return self.cache / "logs"

    @property
    def work(self) -> Path:
        """Per-run files: the guest root, its cpio, the boots' logs."""
        return self.cache / self.work_name

    def missing_sources(self) -> Optional[str]:
        """Why the artefacts cannot be built here, or None."""
        if not (self.recipe / "setup.sh").is_file():
            return f"no vm-schedext recipe at {self.recipe} (set GTP5G_SHARED_TOOLS)"
        if not (self.dm_recipe / "build.sh").is_file():
            return f"no gthulhu-dm recipe at {self.dm_recipe} (set GTP5G_SHARED_TOOLS)"
        for repo in MIRRORS:
            if not (self.mirror_root / repo / "repo").is_dir():
                return f"no mirror {self.mirror_root / repo / 'repo'} (set MIRROR_ROOT)"
        return None
