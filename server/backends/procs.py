"""Starting sandbox processes from the event loop in ways a server shutdown can always end."""
from __future__ import annotations

import asyncio
import os

from ..runner import core


async def spawn(*argv: str, **kwargs) -> asyncio.subprocess.Process:
    """``asyncio.create_subprocess_exec``, safe to cancel (``start_new_session=True`` is
    expected). Python 3.11 waits forever for a process whose start is cancelled before its
    pipes are connected (the transport waits for pipes that never connect): a shutdown
    that cancelled a job there never ended. The start is shielded instead, and a process
    that starts after its caller gave up is killed with its process group."""
    start = asyncio.ensure_future(asyncio.create_subprocess_exec(*argv, **kwargs))
    try:
        return await asyncio.shield(start)
    except asyncio.CancelledError:
        start.add_done_callback(_kill_orphan)
        raise


def _kill_orphan(start: asyncio.Future) -> None:
    if not start.cancelled() and start.exception() is None:
        core.kill_group(start.result())


async def read_info(fd: int, timeout: float) -> bytes:
    """The JSON object (with "child-pid") bwrap writes to its ``--info-fd``, read on the
    event loop. Raises TimeoutError after ``timeout`` seconds. (A read in an executor
    thread, as before, could block forever on a sandbox stuck before writing it, and
    asyncio's shutdown waits for every executor thread.)"""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    deadline = loop.time() + timeout
    data = b""
    while not data.rstrip().endswith(b"}"):
        readable = loop.create_future()
        loop.add_reader(fd, _wake, readable)
        try:
            await asyncio.wait_for(readable, max(0.0, deadline - loop.time()))
        finally:
            loop.remove_reader(fd)
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            continue
        if not chunk:
            break  # bwrap closed it (or died) before writing all of it
        data += chunk
    return data


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
