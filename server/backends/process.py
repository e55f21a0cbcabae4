"""Sandbox processes the local backend starts and reaps itself, so it knows their rusage.

asyncio's subprocesses are reaped with waitpid(2), which drops the rusage; a ``Child`` is
reaped with wait4(2) once its pidfd says it exited. Its rusage covers the sandbox and
every process in it (the sandbox's init waits for them all): the usage of a job that
has no cgroup to account for it.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import threading

from ..runner import core


class Child:
    """A started process with asyncio streams, like ``asyncio.subprocess.Process``
    (``pid``, ``stdin``, ``stdout``, ``stderr``, ``returncode``, ``wait()``), plus
    ``rusage``: ``{"cpu_ms", "max_rss_kb"}`` of its process tree once it exited."""

    def __init__(self, popen: subprocess.Popen, streams: tuple) -> None:
        self._popen, self.pid = popen, popen.pid
        self.stdin, self.stdout, self.stderr = streams
        self.returncode: int | None = None
        self.rusage: dict[str, int] | None = None
        self._exited = asyncio.get_running_loop().create_future()

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(self.pid)
        except OSError:  # before Linux 5.3: a thread waits instead
            threading.Thread(target=self._wait_in_thread, args=(loop,), name="orq-reap",
                             daemon=True).start()
            return

        def exited() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            self._reaped(_wait4(self.pid))
        loop.add_reader(pidfd, exited)

    def _wait_in_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        outcome = _wait4(self.pid)
        try:
            loop.call_soon_threadsafe(self._reaped, outcome)
        except RuntimeError:
            pass  # the loop is closed: the server has stopped

    def _reaped(self, outcome: tuple[int, dict[str, int]]) -> None:
        self.returncode, self.rusage = outcome
        self._popen.returncode = self.returncode  # subprocess must not reap it again
        self._exited.set_result(self.returncode)


def _wait4(pid: int) -> tuple[int, dict[str, int]]:
    _, status, rusage = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), core.rusage_usage(rusage)


async def spawn(argv: list[str], pass_fds: list[int], **popen_args) -> Child:
    """Start ``argv`` in a new session with pipes for stdin, stdout and stderr."""
    popen = _popen(argv, pass_fds, popen_args)
    try:
        child = Child(popen, await streams(popen.stdin, popen.stdout, popen.stderr))
    except BaseException:
        core.kill_group(popen)
        popen.wait()
        raise
    child._watch()
    return child


def _popen(argv: list[str], pass_fds: list[int], popen_args: dict) -> subprocess.Popen:
    """fork + exec on the loop's thread, as asyncio's own subprocesses do (it is quick)."""
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, bufsize=0, pass_fds=pass_fds,
                            start_new_session=True, **popen_args)


async def streams(stdin, stdout, stderr) -> tuple:
    """asyncio streams over a child's pipe ends (unbuffered file objects, closed with them)."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, stdin)
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    readers = []
    for pipe in (stdout, stderr):
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(lambda r=reader: asyncio.StreamReaderProtocol(r), pipe)
        readers.append(reader)
    return writer, readers[0], readers[1]
