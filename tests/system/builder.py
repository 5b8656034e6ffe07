"""The package built as a Debian release builds it: in a clean root of that release.

The unit goes where the building release's debhelper puts it
(/lib/systemd/system on bookworm, /usr/lib/systemd/system on trixie), and
each release's lintian has its own tags, so one .deb cannot serve both: each
suite's package is built by `packaging/build-deb` in a chroot of that suite
(sbuild's idea, without sbuild) and checked there by that suite's lintian.

Roots: a debootstrap minbase plus the build dependencies, cached beside the
container roots (`<suite>-build-<recipe hash>`, about two minutes to make).
Each build runs in an overlay on it inside a private mount and PID namespace,
so the cached root never changes and nothing stays mounted.  Built packages
are cached too (`debs/<suite>-<source hash>/`): a tree already built is not
built again.

Manual use:  python3 -m tests.system.builder SUITE [COMMIT]   (prints the .deb)
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from tests.system.container import CACHE, KNOWN, locked

REPO = Path(__file__).resolve().parent.parent.parent
# The build dependencies of this tree and of 0.1.0's (setuptools), lintian,
# and git-free tools only: sources come in as files.
BUILD_PACKAGES = ("build-essential fakeroot lintian debhelper dh-python "
                  "pybuild-plugin-pyproject python3-all python3-hatchling python3-setuptools "
                  "python3-cryptography python3-jwt python3-pytest python3-sdnotify")
# The release fleets run before this one, as its users installed it.
PREVIOUS_RELEASE = ("0.1.0", "a1ae6b9")
BUILD_TIMEOUT = 1200.0
BUILD_USER = 65534  # nobody: the package builds without root


@dataclass(frozen=True)
class Built:
    deb: Path
    lintian: str  # what this suite's lintian said of the source and the binary
    suite: str


def _recipe(suite: str) -> str:
    return f"debootstrap --variant=minbase {suite} {KNOWN[suite].mirror}; apt {BUILD_PACKAGES}"


def builder_root(suite: str) -> Path:
    """The cached build root of `suite` (made on first use)."""
    key = f"{suite}-build-{hashlib.sha256(_recipe(suite).encode()).hexdigest()[:8]}"
    root, done = CACHE / key, CACHE / f"{key}.complete"
    with locked(suite):
        if done.exists():
            return root
        for old in CACHE.glob(f"{suite}-build-*"):  # older recipes
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        subprocess.run(["debootstrap", "--variant=minbase", suite, str(root),
                        KNOWN[suite].mirror], check=True, stdout=subprocess.DEVNULL)
        in_chroot(root, "apt-get update -q && apt-get install -y -q --no-install-recommends "
                  + BUILD_PACKAGES + " >/dev/null && apt-get clean", timeout=1800)
        done.write_text(_recipe(suite) + "\n")
    return root


def in_chroot(root: Path, command: str, timeout: float, upper: Optional[Path] = None
              ) -> subprocess.CompletedProcess[str]:
    """Run `command` in `root` (in an overlay whose changes land in `upper`, when given),
    in a private mount and PID namespace: every mount goes with the command."""
    top = root
    script = []
    if upper is not None:
        top = upper.parent / "merged"
        for d in (upper, upper.parent / "work", top):
            d.mkdir(exist_ok=True)
        script.append(f"mount -t overlay overlay -o lowerdir={root},upperdir={upper},"
                      f"workdir={upper.parent / 'work'} {top}")
    if upper is None:  # making the root itself: it needs the host's resolver for apt
        resolv = root / "etc" / "resolv.conf"
        if resolv.is_symlink():
            resolv.unlink()
        shutil.copy("/etc/resolv.conf", resolv)
    script += [f"mount -t proc proc {top}/proc", f"mount --rbind /dev {top}/dev",
               f"mount -t tmpfs tmpfs {top}/tmp"]
    if upper is not None:
        script.append(f"cp /etc/resolv.conf {top}/etc/resolv.conf")
    script.append(f"exec chroot {top} /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "
                  "HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive sh -ec \"$0\"")
    r = subprocess.run(["unshare", "--mount", "--pid", "--fork", "--propagation", "private",
                        "sh", "-ec", " && ".join(script), command],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"in {root.name}: {command!r} exited {r.returncode}:\n"
                           f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def worktree_files(repo: Path = REPO) -> List[str]:
    """The files of this tree as a commit would hold them (tracked or new, not ignored)."""
    out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "-co", "--exclude-standard"],
                         capture_output=True, check=True).stdout
    return sorted(f for f in out.decode().split("\0") if f and os.path.lexists(repo / f))


def _tree_hash(repo: Path, files: List[str]) -> str:
    h = hashlib.sha256()
    for name in files:
        path = repo / name
        h.update(name.encode() + b"\0")
        h.update(os.readlink(path).encode() if path.is_symlink() else path.read_bytes())
        h.update(b"\0%o\0" % (path.lstat().st_mode & 0o111))
    return h.hexdigest()[:16]


def has_commit(commit: str, repo: Path = REPO) -> bool:
    return subprocess.run(["git", "-C", str(repo), "cat-file", "-e", f"{commit}^{{commit}}"],
                          capture_output=True).returncode == 0


def build(suite: str, commit: Optional[str] = None, check: bool = True) -> Built:
    """The package of this tree (or of `commit`) built in `suite`'s clean root;
    `check=False` builds with DEB_BUILD_OPTIONS=nocheck (the unit tests not run)."""
    if commit is None:
        files = worktree_files()
        key = _tree_hash(REPO, files)
    else:
        key = subprocess.run(["git", "-C", str(REPO), "rev-parse", f"{commit}^{{tree}}"],
                             capture_output=True, text=True, check=True).stdout.strip()[:16]
    cached = CACHE / "debs" / f"{suite}-{key}{'' if check else '-nocheck'}"
    done = cached / "complete"
    if not done.exists():
        root = builder_root(suite)
        with tempfile.TemporaryDirectory(prefix=f"gtp5g-build-{suite}-") as tmp:
            upper = Path(tmp) / "upper"
            src = upper / "src"
            src.mkdir(parents=True)
            if commit is None:
                with subprocess.Popen(["tar", "-C", str(REPO), "--null", "-T", "-", "-cf", "-"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE) as tar:
                    assert tar.stdin is not None and tar.stdout is not None
                    tar.stdin.write(b"\0".join(f.encode() for f in files))
                    tar.stdin.close()
                    subprocess.run(["tar", "-C", str(src), "-xf", "-"], stdin=tar.stdout,
                                   check=True)
            else:
                archive = subprocess.Popen(["git", "-C", str(REPO), "archive", commit],
                                           stdout=subprocess.PIPE)
                subprocess.run(["tar", "-C", str(src), "-xf", "-"], stdin=archive.stdout,
                               check=True)
                assert archive.wait() == 0
            options = "" if check else "DEB_BUILD_OPTIONS=nocheck "
            # this tree's wheel and sdist too, by the suite's own hatchling (a
            # previous release may have another backend: not asked of it)
            python_dists = ("" if commit is not None else
                            " && python3 -m hatchling build -d /out/dist")
            # As a user without a home, as Debian's buildds, sbuild and a developer's
            # dpkg-buildpackage build (Rules-Requires-Root: no): the build, and the unit
            # tests it runs, must not need root.
            in_chroot(root, f"mkdir /out && chown -R {BUILD_USER}:{BUILD_USER} /src /out && "
                      f"cd /src && {{ setpriv --reuid={BUILD_USER} --regid={BUILD_USER} "
                      f"--clear-groups env HOME=/nonexistent sh -ec '{options}LINTIAN=yes "
                      f"packaging/build-deb /out{python_dists}' >/out.log 2>&1; }} "
                      "|| { tail -60 /out.log; exit 1; }",
                      timeout=BUILD_TIMEOUT, upper=upper)
            shutil.rmtree(cached, ignore_errors=True)
            cached.mkdir(parents=True)
            shutil.copytree(upper / "out", cached, dirs_exist_ok=True)
            (cached / "build.log").write_bytes((upper / "out.log").read_bytes())
        done.write_text(f"{suite} {commit or 'worktree'}\n")
    debs = sorted(cached.glob("gtp5g-operator_*_all.deb"))
    assert len(debs) == 1, debs
    lintian = (cached / "lintian.txt").read_text() if (cached / "lintian.txt").exists() else ""
    return Built(debs[0], lintian, suite)


def repack(deb: Path, version: str, tmp: Path, steal: str = "") -> Path:
    """The package under a higher version with a changed file (as the next release
    would change one), its conffile unchanged; with `steal`, also a file another
    package owns, so that dpkg's unpack fails after the preinst ran."""
    tree = tmp / f"tree-{version}"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    if steal:
        (tree / steal).parent.mkdir(parents=True, exist_ok=True)
        (tree / steal).write_text("not apt's\n")
    control = tree / "DEBIAN" / "control"
    control.write_text(re.sub(r"^Version: .*$", f"Version: {version}", control.read_text(),
                              flags=re.M))
    subprocess.run(["sed", "-i", "s/^CPUQuota=50%$/CPUQuota=60%/",
                    *map(str, tree.glob("**/systemd/system/gtp5g-operator.service"))],
                   check=True)
    subprocess.run(["sh", "-c", "find . -type f ! -path './DEBIAN/*' -printf '%P\\0'"
                    " | xargs -0 md5sum > DEBIAN/md5sums"], cwd=tree, check=True)
    out = tmp / f"gtp5g-operator_{version}_all.deb"
    subprocess.run(["dpkg-deb", "-b", "--root-owner-group", str(tree), str(out)], check=True,
                   capture_output=True)
    return out


def lintian_tags(text: str, levels: str = "EW") -> List[str]:
    """The tags of the given levels in lintian's output (explanations dropped)."""
    return [line for line in text.splitlines() if line[:2] in {f"{c}:" for c in levels}]


def main(argv: List[str]) -> int:
    suite = argv[1] if len(argv) > 1 else "bookworm"
    built = build(suite, argv[2] if len(argv) > 2 else None)
    print(built.deb)
    print("\n".join(lintian_tags(built.lintian, "EWI")) or "lintian: no E/W/I tags")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
