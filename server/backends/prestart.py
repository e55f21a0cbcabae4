"""Sandboxes started ahead for jobs in images: bwrap has built the job's whole file system,
joined its cgroup and waits on its block fd; a job like the last one only writes its program
into the sandbox's /job and lets it go.

bwrap reads its ``--block-fd`` after every mount and the switch to the new root, right before
it loads the seccomp filter and starts the command, so a parked sandbox has done all of the
setup a cold start pays for. What must be fixed at that point is in the key (the image, the
environment, the command, the cgroup limits and the timeout, which sets RLIMIT_CPU); the
program is not: /job is a read-only bind of a scratch directory the server fills at release.
One sandbox is kept per key recently used, a few in all, each for at most IDLE_S.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path

from .base import BackendError

log = logging.getLogger("orq.prestart")
IDLE_S = 120.0  # an unused parked sandbox is stopped after this


@dataclass
class Parked:
    """One sandbox waiting for its job: ``run`` (a ColdRun) holds the bwrap process and the
    cgroup its init joined; writing to ``block_w`` lets it run the command."""
    run: object
    block_w: int
    stage: Path  # the host directory the sandbox sees, read-only, as /job
    since: float = field(default_factory=time.monotonic)

    def alive(self) -> bool:
        return self.run.proc.returncode is None

    def write(self, files: list[tuple[str, str]]) -> None:
        """The job's program, as the cold path's /job would hold it."""
        for name, content in files:
            path = self.stage / name
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            with open(path, "wb") as fh:  # under the 0755 stage: only the server writes
                fh.write(content.encode("utf-8", "surrogatepass"))
            os.chmod(path, 0o644)

    def go(self) -> None:
        fd, self.block_w = self.block_w, -1
        try:
            os.write(fd, b"go")
        finally:
            os.close(fd)

    def close(self) -> None:
        """Forget the block fd (bwrap then exits on its own) and the scratch directory."""
        if self.block_w >= 0:
            os.close(self.block_w)
            self.block_w = -1
        shutil.rmtree(self.stage, ignore_errors=True)


class PrestartPool:
    """Parked sandboxes by key. ``start(*args)`` parks one (raising if it cannot); ``retire``
    disposes of one that will not run a job (kills it, releases its cgroup, closes it)."""

    def __init__(self, start: Callable[..., Awaitable[Parked]],
                 retire: Callable[[Parked], None], cap: int) -> None:
        self._start, self._retire, self.cap = start, retire, cap
        self._idle: dict[Hashable, Parked] = {}
        self._starting: dict[Hashable, asyncio.Task] = {}
        self._claimed: set[Hashable] = set()  # keys a job waits for (one job each)
        self._stopped = False
        self.used = 0  # jobs that ran on a parked sandbox (for /healthz)

    async def take(self, key: Hashable) -> Parked | None:
        """The sandbox parked for ``key``: an idle one, or the one on its way (most of its
        set-up is done by then: never slower than a cold start), else None."""
        starting = self._starting.get(key)
        if key not in self._idle and starting is not None and key not in self._claimed:
            self._claimed.add(key)
            try:
                await asyncio.wait({starting})
            finally:
                self._claimed.discard(key)
        parked = self._idle.pop(key, None)
        if parked is not None and not parked.alive():
            self._retire(parked)
            return None
        if parked is not None:
            self.used += 1
        return parked

    def want(self, key: Hashable, *args) -> None:
        """Park a sandbox for ``key`` in the background, unless one is there or on its way;
        the longest idle of other keys makes room when the pool is full."""
        if self._stopped or key in self._idle or key in self._starting:
            return
        while len(self._idle) + len(self._starting) >= self.cap:
            spare = [k for k in self._idle if k not in self._claimed]  # not one a job awaits
            if not spare:
                return
            oldest = min(spare, key=lambda k: self._idle[k].since)
            self._retire(self._idle.pop(oldest))
        task = asyncio.ensure_future(self._park(key, args))
        self._starting[key] = task

    async def _park(self, key: Hashable, args: tuple) -> None:
        try:
            parked = await self._start(*args)
        except (OSError, BackendError) as exc:  # the next job of this key starts cold
            log.warning("could not start a sandbox ahead: %s", exc)
            return
        finally:
            self._starting.pop(key, None)
        if self._stopped:
            self._retire(parked)
            return
        self._idle[key] = parked
        asyncio.get_running_loop().call_later(IDLE_S, self._expire, key, parked)

    def _expire(self, key: Hashable, parked: Parked) -> None:
        if self._idle.get(key) is parked:
            self._retire(self._idle.pop(key))

    async def stop(self) -> None:
        self._stopped = True
        starting = list(self._starting.values())
        for task in starting:
            task.cancel()
        if starting:
            await asyncio.wait(starting)
        for parked in self._idle.values():
            self._retire(parked)
        self._idle.clear()
