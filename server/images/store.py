"""The image store on disk: content-addressed, immutable root file systems under the data dir.

    <data dir>/images/store/<hex>/rootfs      the root file system jobs see (read-only)
    <data dir>/images/store/<hex>/image.json  {"env": {...}} from the image's config
    <data dir>/images/tmp/<random>/           a build or import in progress (locked)
    <data dir>/images/lock                    held while the store or catalogue changes
    <data dir>/images/generation              rewritten after every change: a running
                                              server notices it and reloads its catalogue

The digest hashes everything a job can observe: every path, its type, mode, owner, size,
content and link target, and the image's environment. Two images with the same content share
one directory; a rebuild with different content gets a new one, and old digests stay as long
as a name or an unfinished job needs them.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("orq.images")
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
RESERVED = ("host",)
# what a job needs in /etc/passwd and /etc/group; written into an image lacking them (the
# sandbox replaces both files with these anyway, and needs them to exist to do so)
PASSWD = "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/tmp:/usr/sbin/nologin\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


class ImageError(Exception):
    """An image command cannot be done; the message is one line that says why."""


def check_name(name: str) -> str:
    if name in RESERVED:
        raise ImageError(f"'{name}' is the built-in image; pick another name")
    if not NAME.fullmatch(name) or ".." in name:
        raise ImageError(f"bad image name '{name}': use 1-63 lowercase letters, digits, '.', "
                         "'_' or '-', starting with a letter or digit (no '/' or '..')")
    return name


class ImageFiles:
    """The image store of one data dir (the file side; the catalogue is in the database)."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "images"
        self.store, self.tmp = self.root / "store", self.root / "tmp"

    def ensure(self) -> None:
        for path in (self.root, self.store, self.tmp):
            path.mkdir(mode=0o755, parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.store / digest.removeprefix("sha256:")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive use of the store and catalogue (commits and garbage collection)."""
        self.ensure()
        with open(self.root / "lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    @contextlib.contextmanager
    def workspace(self) -> Iterator[Path]:
        """A fresh directory for one build or import, removed afterwards whatever happens
        (what commit() took is gone from it by then). Locked while in use, so that a
        starting server's clean-up leaves it alone."""
        self.ensure()
        work = Path(tempfile.mkdtemp(prefix="work-", dir=self.tmp))
        os.chmod(work, 0o755)  # the runtime probes reach it as uid 65534
        with open(work / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield work
            finally:
                remove_tree(work)

    def commit(self, work: Path, rootfs: Path, env: dict[str, str], digest: str) -> None:
        """Move a finished root file system, hashed to ``digest`` by tree_digest (before the
        lock: that reads every byte), into the store. Call with the lock held."""
        target = self.path(digest)
        if target.exists():
            return  # the same content is already there
        staged = work / "staged"
        staged.mkdir(mode=0o755)
        rootfs.rename(staged / "rootfs")
        (staged / "image.json").write_text(json.dumps({"env": env}))
        staged.rename(target)

    def env(self, digest: str) -> dict[str, str]:
        try:
            return json.loads((self.path(digest) / "image.json").read_text())["env"]
        except (OSError, ValueError, KeyError):
            return {}

    def collect(self, keep: set[str]) -> list[str]:
        """Remove stored digests that are not in ``keep`` (lock held); returns them."""
        gone = []
        for entry in self.store.iterdir() if self.store.exists() else ():
            digest = "sha256:" + entry.name
            if digest not in keep:
                remove_tree(entry)
                gone.append(digest)
        return gone

    def clean_tmp(self) -> list[Path]:
        """Remove builds and imports left by processes that died (theirs are not locked)."""
        removed = []
        for entry in self.tmp.iterdir() if self.tmp.exists() else ():
            try:
                with open(entry / ".lock", "a") as fh:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    remove_tree(entry)
            except BlockingIOError:
                continue  # a build in progress
            except OSError:
                remove_tree(entry)
            removed.append(entry)
        return removed

    def changed(self) -> None:
        """Tell running servers that the catalogue changed."""
        gen = self.root / "generation"
        tmp = gen.with_suffix(".new")
        tmp.write_text(f"{time.time_ns()} {os.getpid()}\n")
        tmp.replace(gen)

    def generation(self) -> tuple:
        """Changes whenever changed() was called (cheap: one stat)."""
        try:
            st = os.stat(self.root / "generation")
            return st.st_ino, st.st_mtime_ns
        except FileNotFoundError:
            return ()


def normalize(rootfs: Path) -> None:
    """What every image needs for the sandbox: /etc/passwd and /etc/group exist."""
    etc = rootfs / "etc"
    if etc.is_symlink() or (etc.exists() and not etc.is_dir()):
        raise ImageError("the image's /etc is not a directory")
    etc.mkdir(mode=0o755, exist_ok=True)
    for name, text in (("passwd", PASSWD), ("group", GROUP)):
        path = etc / name
        if not path.exists() and not path.is_symlink():
            path.write_text(text)


def tree_digest(rootfs: Path, env: dict[str, str]) -> tuple[str, int]:
    """sha256 over every entry of the tree (sorted) and the environment; and the tree's size."""
    outer, size = hashlib.sha256(), 0
    outer.update(json.dumps(env, sort_keys=True).encode())
    for rel, st in _walk(rootfs):
        kind = stat.S_IFMT(st.st_mode)
        fields = [rel, f"{st.st_mode:o}", str(st.st_uid), str(st.st_gid)]
        if kind == stat.S_IFREG:
            fields += [str(st.st_size), _file_hash(rootfs / rel)]
            size += st.st_size
        elif kind == stat.S_IFLNK:
            fields.append(os.readlink(rootfs / rel))
        elif kind in (stat.S_IFCHR, stat.S_IFBLK):
            fields.append(f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
        outer.update(("\0".join(fields) + "\n").encode("utf-8", "surrogateescape"))
    return "sha256:" + outer.hexdigest(), size


def _walk(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(root / rel if rel else root) as it:
            entries = sorted(it, key=lambda e: e.name, reverse=True)
        for entry in entries:
            path = f"{rel}/{entry.name}" if rel else entry.name
            st = entry.stat(follow_symlinks=False)
            yield path, st
            if stat.S_ISDIR(st.st_mode):
                stack.append(path)


def _file_hash(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def remove_tree(path: Path) -> None:
    """rm -rf, also of read-only directories an image may hold."""
    def unlock(func, target, _exc):
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            func(target)
    shutil.rmtree(path, onerror=unlock)
