"""Let the sandbox user reach the data dir's shared trees (images, compile cache) wherever the
data dir lives.

bubblewrap runs as uid 65534 and resolves every bind source as that user, so an image under
a data dir inside ``/root`` (mode 0700) or pytest's private temp dir could not be bound. A
root server therefore moves itself, once at start and while it is still single-threaded,
into a private mount namespace (mount events still come in from the host, none go out),
mounts a small tmpfs at ``/run/orq`` there and bind-mounts each shared tree under it. Only
the server and the processes it starts see these mounts; they vanish with them, so a crash
leaves nothing mounted on the host. A server that is not root runs bwrap as itself and
reaches its own data dir directly.
"""
from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

log = logging.getLogger("orq.view")
CLONE_NEWNS = 0x20000
MS_BIND, MS_REC, MS_SLAVE, MS_NOSUID, MS_NODEV = 4096, 16384, 1 << 19, 2, 4
VIEW_ROOT = Path("/run/orq")
SHARED = ("images", "cache")  # subdirectories of the data dir that jobs' sandboxes bind

_views: dict[Path, Path] = {}  # data dir -> where its shared trees are reachable


def _libc_call(name: str, *args) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    _libc_call("mount", enc(src), target.encode(), enc(fstype), ctypes.c_ulong(flags),
               enc(data or None))


def expose(data_dir: Path, name: str) -> Path:
    """Make ``data_dir``'s shared trees reachable by uid 65534; returns the directory to use
    in place of ``data_dir`` for them. Call once per process, before any thread starts."""
    data_dir = data_dir.resolve()
    try:
        for sub in SHARED:
            (data_dir / sub).mkdir(mode=0o755, parents=True, exist_ok=True)
            os.chmod(data_dir / sub, 0o755)
    except OSError:  # an unusable data dir: opening the database says so in one line
        return data_dir
    if os.geteuid() != 0:
        return _views.setdefault(data_dir, data_dir)
    base = VIEW_ROOT / name
    try:
        VIEW_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
        _libc_call("unshare", CLONE_NEWNS)
        _mount(None, "/", None, MS_REC | MS_SLAVE)
        _mount("tmpfs", str(VIEW_ROOT), "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=755")
        for sub in SHARED:
            (base / sub).mkdir(mode=0o755, parents=True)
            _mount(str(data_dir / sub), str(base / sub), None, MS_BIND | MS_REC)
    except OSError as exc:
        log.warning("cannot give the sandbox its own view of %s (%s); binding it directly, "
                    "so every parent directory must be reachable by uid 65534", data_dir, exc)
        base = data_dir
    _views[data_dir] = base
    return base


def shared_dir(data_dir: Path) -> Path:
    """Where ``data_dir``'s shared trees are reachable (``data_dir`` itself before expose)."""
    return _views.get(data_dir.resolve(), data_dir.resolve())
