"""Images for the tests, made offline: OCI images from busybox with umoci (and their archives
with skopeo), and Debian images built once by ``orq-server image build`` and kept outside the
checkout, keyed by what went into them, so a second run is fast."""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import OrqServer

from server.runtimes import PROBES_KEY, RECIPES

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CACHE = Path(os.environ.get("ORQ_TEST_CACHE") or Path.home() / ".cache" / "orq-tests")
DEBIAN = ("deb", ["python3"])  # a small Debian image (bash and sh come with every Debian)
# every runtime's packages in one image (built once, ~2 min; cached)
LANGS = ("langs", sorted({p for r in RECIPES for p in r.packages}))
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static: one static binary, no libraries
# what decides a built image (its content, its catalogue row, its probed runtimes): a change
# here builds the templates again
BUILD_INPUTS = ("server/images/build.py", "server/images/store.py", "server/store/db.py")


def sh(*argv: str | Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True,
                          **kw)


def image_cmd(data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``orq-server image ARGS... --data-dir DATA``."""
    proc = subprocess.run([str(BIN / "orq-server"), "image", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=900, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"orq-server image {' '.join(args)}: {proc.stderr[-3000:]}")
    return proc


def busybox_layout(out: Path, marker: str = "one", env: str = "ORQ_MARK=from-config") -> Path:
    """An OCI layout (one tag) of two layers over busybox. Layer 1: /bin/sh etc. as symlinks
    to busybox, /etc/marker, /etc/doomed, /opt/dir/{a,b}. Layer 2 deletes /etc/doomed (a
    whiteout), replaces /opt/dir by a directory holding only c (an opaque directory),
    adds /etc/hard as a hard link of /etc/layer2 and /etc/link as a symlink to marker."""
    layout, work = out / "layout", out / "bundle"
    sh("umoci", "init", "--layout", layout)
    sh("umoci", "new", "--image", f"{layout}:base")
    sh("umoci", "unpack", "--image", f"{layout}:base", work)
    root = work / "rootfs"
    for d in ("bin", "etc", "opt/dir", "usr/bin"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for tool in ("sh", "ls", "cat", "echo", "id", "sleep", "date", "stat", "env", "ps", "wc"):
        (root / "bin" / tool).symlink_to("busybox")
    (root / "etc" / "marker").write_text(f"marker {marker}\n")
    (root / "etc" / "doomed").write_text("deleted by layer 2\n")
    (root / "opt" / "dir" / "a").write_text("a\n")
    (root / "opt" / "dir" / "b").write_text("b\n")
    sh("umoci", "repack", "--image", f"{layout}:base", work)
    shutil.rmtree(work)
    sh("umoci", "unpack", "--image", f"{layout}:base", work)
    (root / "etc" / "doomed").unlink()
    shutil.rmtree(root / "opt" / "dir")
    (root / "opt" / "dir").mkdir()
    (root / "opt" / "dir" / "c").write_text("c\n")
    (root / "etc" / "layer2").write_text("second layer\n")
    os.link(root / "etc" / "layer2", root / "etc" / "hard")
    (root / "etc" / "link").symlink_to("marker")
    sh("umoci", "repack", "--image", f"{layout}:top", work)
    sh("umoci", "config", "--image", f"{layout}:top", "--config.env", env, "--tag", "final")
    for tag in ("base", "top"):
        sh("umoci", "rm", "--image", f"{layout}:{tag}")
    shutil.rmtree(work)
    return layout


def oci_archive(layout: Path, out: Path) -> Path:
    sh("tar", "-C", layout, "-cf", out, ".")
    return out


def docker_archive(layout: Path, out: Path) -> Path:
    """What ``docker save`` writes, made by skopeo from the layout."""
    sh("skopeo", "copy", f"oci:{layout}", f"docker-archive:{out}:busy:latest")
    return out


def debian_template(name: str, packages: list[str]) -> Path:
    """A data dir holding one image NAME built with mmdebstrap from these packages; built once
    and cached under CACHE (outside the checkout), keyed by its inputs."""
    key = hashlib.sha256(" ".join([name, PROBES_KEY, *sorted(packages)]).encode())
    for rel in BUILD_INPUTS:
        key.update((REPO / rel).read_bytes())
    template = CACHE / f"{name}-{key.hexdigest()[:16]}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{template.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once build it once
        if not (template / "ready").exists():
            shutil.rmtree(template, ignore_errors=True)
            image_cmd(template / "data", "build", name, "--packages", ",".join(packages))
            (template / "ready").write_text("")
    return template / "data"


class InImage(OrqServer):
    """A server whose test jobs all run in one image unless they say otherwise."""

    image = DEBIAN[0]

    def submit(self, code: str, uid: int = 1, auth: tuple | None = None, **fields) -> int:
        return super().submit(code, uid, auth, **{"image": self.image, **fields})

    def run(self, code: str, uid: int = 1, auth: tuple | None = None, **fields) -> dict:
        return super().run(code, uid, auth, **{"image": self.image, **fields})


def copy_data_dir(template: Path, dest: Path) -> Path:
    """A fresh data dir with the template's images: the database copied, the image store
    hard-linked (stored images never change)."""
    (dest / "images").mkdir(parents=True)
    shutil.copy2(template / "orq.db", dest / "orq.db")
    sh("cp", "-al", template / "images" / "store", dest / "images" / "store")
    return dest
