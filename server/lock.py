"""One live server per data dir: an exclusive lock on ``<data dir>/server.lock``.

A second server on the same data dir would run the same jobs twice, and its start-up
clean-up (``backends/ownership.py``) would kill the first one's sandboxes; it is refused
instead. The lock is an flock(2) on an fd no child inherits: the kernel drops it when the
server exits, however it exits, so a server killed with ``kill -9`` never blocks the next.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

NAME = "server.lock"


class DataDirError(Exception):
    """The data dir cannot be locked (not writable); the message says why."""


class DataDirBusy(DataDirError):
    """Another live server holds the data dir; the message says which."""


class DataDirLock:
    def __init__(self, fd: int, path: Path) -> None:
        self.fd, self.path = fd, path

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        """Lock ``data_dir`` (made if missing), or raise DataDirBusy at once (DataDirError
        when it cannot be written)."""
        path = data_dir / NAME
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise DataDirError(f"cannot lock the data directory {data_dir}: it is not "
                               f"writable ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirBusy(f"another orq-server (pid {holder}) is using the data dir "
                              f"{data_dir}; stop it first, or give this one its own "
                              "--data-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # for the message above
        return cls(fd, path)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
