"""Waiting on jobs over the WebSocket: follow one job to its end, or stream every event."""
from __future__ import annotations

import asyncio
import itertools
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Self, TypeVar

from .client import FINAL, ApiClient, EventStream

T = TypeVar("T")
OutputFn = Callable[[str, str], None]
StatusFn = Callable[[dict], None]


def run_async(coro: Awaitable[T], cancel: threading.Event | None = None) -> T:
    """Run ``coro`` on a fresh loop (this thread); a set ``cancel`` event interrupts it."""
    async def main() -> T:
        task = asyncio.ensure_future(coro)
        if cancel is None:
            return await task
        while not task.done():
            if cancel.is_set():
                task.cancel()
                raise KeyboardInterrupt
            await asyncio.wait({task}, timeout=0.2)
        return task.result()
    return asyncio.run(main())


async def follow_job(client: ApiClient, job_id: int, on_status: StatusFn | None = None,
                     on_output: OutputFn | None = None) -> dict:
    """Return the job once it is final, reporting status changes and (optionally) output."""
    stream = EventStream(client.server, client.token, subscribe={"job_id": job_id},
                         replay_all=on_output is not None)
    await stream.connect()  # first failure is the user's error (unreachable, 401)
    try:
        job = await asyncio.to_thread(client.job, job_id)
        if job["status"] in FINAL:
            return job
        if on_status:
            on_status(job)
        async for event in stream.events():
            kind = event.get("type")
            if kind == "output" and event.get("job_id") == job_id and on_output:
                on_output(event.get("stream", "stdout"), event.get("data", ""))
            elif kind == "job" and event["job"].get("job_id") == job_id:
                job = event["job"]
                if on_status:
                    on_status(job)
            elif (kind == "connection" and event.get("state") == "up") or kind == "resync":
                job = await asyncio.to_thread(client.job, job_id)  # missed while away?
            if job["status"] in FINAL:
                return job
    finally:
        stream.close()


class Spinner:
    """A one-line progress indicator on a terminal's stderr; silent otherwise."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, job_id: int, enabled: bool | None = None) -> None:
        self.job_id, self.status = job_id, "WAITING"
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.started = time.monotonic()
        self._task: asyncio.Task | None = None

    def update(self, job: dict) -> None:
        self.status = job.get("status", self.status)

    async def _spin(self) -> None:
        for frame in itertools.cycle(self.FRAMES):
            elapsed = time.monotonic() - self.started
            sys.stderr.write(f"\r\x1b[K{frame} job {self.job_id} {self.status} {elapsed:.1f}s")
            sys.stderr.flush()
            await asyncio.sleep(0.1)

    def __enter__(self) -> Self:
        if self.enabled:
            self._task = asyncio.ensure_future(self._spin())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


async def wait_with_spinner(client: ApiClient, job_id: int, spinner: bool) -> dict:
    with Spinner(job_id, enabled=spinner) as spin:
        return await follow_job(client, job_id, on_status=spin.update)


async def watch_events(client: ApiClient, subscribe: dict | None,
                       emit: Callable[[dict], None]) -> None:
    """Stream every event the caller may see until interrupted; reconnects by itself."""
    stream = EventStream(client.server, client.token, subscribe=subscribe)
    await stream.connect()
    try:
        async for event in stream.events():
            emit(event)
    finally:
        stream.close()
