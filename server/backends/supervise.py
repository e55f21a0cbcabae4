"""Supervising one running job (cold sandbox or warm runner): input, output, timeout, kill."""
from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..runner import core
from .base import JobSpec, RunHooks
from .cgroups import JobCgroup

log = logging.getLogger("orq.local")
KILL_GRACE_S = 2.0  # after this, a job that ignored its kill is reported anyway
STOP_WAIT_S = 1.5  # at shutdown: how long killed jobs and clean-ups get to end, in all


@dataclass
class Run:
    """One running job, as LocalBackend's cancel/stop and ``supervise`` see it. A subclass
    says how its processes are signalled; the cgroup, where there is one, gets the rest."""
    cgroup: JobCgroup | None
    error: str | None = field(default=None, init=False)
    done: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    rusage: dict | None = field(default=None, init=False)  # of its processes, once exited

    def kill(self, reason: str) -> None:
        if self.error is None:
            self.error = reason
        self.sigkill()
        if self.cgroup is not None:
            self.cgroup.kill_all()

    def sigkill(self) -> None:
        raise NotImplementedError


@contextlib.contextmanager
def tracked(runs: dict[int, Run], job_id: int, run: Run):
    """``run`` in LocalBackend's running jobs (for cancel and stop) while the block runs."""
    runs[job_id] = run
    try:
        yield
    except BaseException:
        run.kill(core.INTERRUPTED)  # e.g. cancelled: nothing runs on without supervision
        raise
    finally:
        runs.pop(job_id, None)
        run.done.set()


async def supervise(run: Run, spec: JobSpec, hooks: RunHooks, streams: tuple,
                    exit_code: Callable[[], Awaitable[int | None]]) -> dict:
    """Start a job that is ready to run: feed it its input, collect its output (``streams``:
    its stdin, stdout, stderr), kill it on timeout, and make its result.

    ``exit_code()`` waits for the job's exit code (None when there is none); if the job
    has not exited KILL_GRACE_S after its kill, it is cancelled and the job ends without one.
    """
    if not await hooks.started():
        run.kill(core.CANCELLED)  # cancelled between leaving the queue and starting
    start = time.monotonic()
    out, err = core.CappedBuffer(spec.output_cap), core.CappedBuffer(spec.output_cap)
    tasks = [asyncio.ensure_future(_feed(streams[0], spec.input.encode("utf-8",
                                                                      "surrogatepass"))),
             asyncio.ensure_future(_drain(run, streams[1], out, "stdout", hooks)),
             asyncio.ensure_future(_drain(run, streams[2], err, "stderr", hooks))]
    exited = asyncio.ensure_future(exit_code())
    done, _ = await asyncio.wait({exited}, timeout=spec.timeout_s)
    if not done:
        run.kill(core.TIMEOUT)
        done, _ = await asyncio.wait({exited}, timeout=KILL_GRACE_S)
    if not done:
        log.warning("job %s: sandbox did not exit after SIGKILL", spec.job_id)
        exited.cancel()
        await asyncio.wait({exited})  # its clean-up (see WarmRunner._exit_code) runs now
    _, pending = await asyncio.wait(tasks, timeout=KILL_GRACE_S)
    if pending:
        log.warning("job %s: output pipes still open after the job ended", spec.job_id)
    for task in tasks:
        task.cancel()
    error = run.error
    if run.cgroup is not None and run.cgroup.oom_killed() and error in (None, core.TIMEOUT):
        error = core.MEMORY
    returncode = None if exited.cancelled() else exited.result()
    return core.make_result(out, err, returncode, time.monotonic() - start, error,
                            job_usage(run))


def job_usage(run: Run) -> dict[str, int] | None:
    """What the job used: its cgroup's accounting where it has one, else (and for what the
    cgroup cannot tell) the rusage of its processes; None when neither is known."""
    counted = run.cgroup.usage() if run.cgroup is not None else {}
    usage = {key: counted.get(key) if counted.get(key) is not None
             else (run.rusage or {}).get(key) for key in ("cpu_ms", "max_rss_kb")}
    return None if None in usage.values() else usage


async def _feed(stream: asyncio.StreamWriter, data: bytes) -> None:
    try:
        if data:
            stream.write(data)
            await stream.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the job did not read all of its input
    finally:
        stream.close()


async def _drain(run: Run, stream: asyncio.StreamReader, buf: core.CappedBuffer, name: str,
                 hooks: RunHooks) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while chunk := await stream.read(65536):
        kept = buf.add(chunk)
        if kept:
            hooks.output(name, decoder.decode(kept))
        if buf.truncated:
            run.kill(core.OUTPUT_LIMIT)
            return
