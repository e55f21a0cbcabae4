"""The job service: state machine, fair durable queue, scheduling, events."""
from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass

from . import metrics, timeutil
from .backends.base import Backend, BackendError, JobSpec, Retry, RunHooks
from .config import Config
from .events import EventBus
from .runner import core
from .store import FINAL, JobStore, StoreError

log = logging.getLogger("orq.jobs")
MAX_ATTEMPTS = 2  # a job interrupted this many times by a crash ends ERROR "interrupted"
STORE_RETRY_S = 1.0  # while the store refuses writes (disk full), try again this often
CLOSE_WAIT_S = 1.5  # at shutdown, after the backend stopped: jobs' tasks get this to end
# results that a job's own run produced: saved even while the server stops (anything else,
# e.g. "interrupted" by the stop, leaves the job as it is on disk, to run again)
OWN_OUTCOMES = (None, core.TIMEOUT, core.MEMORY, core.OUTPUT_LIMIT)


class JobError(Exception):
    """A request the job service refuses; ``code`` and ``status`` map onto the HTTP error."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.code, self.retry_after = status, code, retry_after


@dataclass(frozen=True)
class Limits:
    timeout_s: float
    memory_mb: int
    cpus: float
    io_weight: int

    def as_dict(self) -> dict:
        return {"timeout_s": self.timeout_s, "memory_mb": self.memory_mb, "cpus": self.cpus,
                "io_weight": self.io_weight}


def resolve_limits(config: Config, timeout=None, memory_mb=None, cpus=None,
                   io_weight=None) -> Limits:
    """The limits a job asked for, checked against the server's maxima; None means default."""
    def pick(value, default, low, high, name):
        if value is None:
            return default
        if not low <= value <= high:
            raise JobError(400, "invalid_limit", f"{name} must be between {low} and {high}")
        return value
    return Limits(
        timeout_s=float(pick(timeout, config.timeout_s, 0.1, config.max_timeout_s, "timeout")),
        memory_mb=int(pick(memory_mb, config.memory_mb, 16, config.max_memory_mb, "memory_mb")),
        cpus=float(pick(cpus, config.cpus, 0.05, config.max_cpus, "cpus")),
        io_weight=int(pick(io_weight, config.io_weight, 10, 1000, "io_weight")))


class FairQueue:
    """Waiting job ids, round-robin across users: one user's backlog never starves another."""

    def __init__(self) -> None:
        self._by_uid: collections.OrderedDict[int, collections.deque[int]] = \
            collections.OrderedDict()
        self._len = 0

    def push(self, uid: int, job_id: int, front: bool = False) -> None:
        queue = self._by_uid.setdefault(uid, collections.deque())
        queue.appendleft(job_id) if front else queue.append(job_id)
        self._len += 1

    def pop(self) -> tuple[int, int] | None:
        if not self._by_uid:
            return None
        uid, queue = next(iter(self._by_uid.items()))
        job_id = queue.popleft()
        self._len -= 1
        if queue:
            self._by_uid.move_to_end(uid)
        else:
            del self._by_uid[uid]
        return uid, job_id

    def remove(self, uid: int, job_id: int) -> bool:
        queue = self._by_uid.get(uid)
        if not queue or job_id not in queue:
            return False
        queue.remove(job_id)
        self._len -= 1
        if not queue:
            del self._by_uid[uid]
        return True

    def __len__(self) -> int:
        return self._len


class JobService:
    def __init__(self, config: Config, store: JobStore, bus: EventBus, backend: Backend) -> None:
        self.config, self.store, self.bus, self.backend = config, store, bus, backend
        self.queue = FairQueue()
        self.running: dict[int, asyncio.Task] = {}
        self.unfinished: collections.Counter[int] = collections.Counter()  # per uid
        self._delayed: set[asyncio.TimerHandle] = set()
        self._closing = False

    # -- start / stop ---------------------------------------------------------------

    async def recover(self) -> None:
        """Requeue what a previous run left unfinished (SPEC section 1: never lost)."""
        for job_id, uid, status, attempts in await self.store.unfinished():
            if status == "RUNNING" and attempts >= MAX_ATTEMPTS:
                await self._finish(job_id, "ERROR", {"error": core.INTERRUPTED})
                continue
            if status == "RUNNING":
                await self.store.requeue(job_id)
                log.info("job %d was interrupted by a restart; running it again", job_id)
            self.queue.push(uid, job_id)
            self.unfinished[uid] += 1
        metrics.set_queue(len(self.queue), 0)
        self._schedule()

    async def close(self) -> None:
        """Stop within a few seconds: no job starts from now on, the backend stops (its jobs
        stay WAITING or RUNNING on disk and run again after a restart), and every job's
        task ends, or is cancelled after CLOSE_WAIT_S."""
        self._closing = True
        for handle in self._delayed:
            handle.cancel()
        await self.backend.stop()
        tasks = list(self.running.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=CLOSE_WAIT_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=CLOSE_WAIT_S)

    # -- requests -------------------------------------------------------------------

    async def submit(self, uid: int, code: str, input_text: str, language: str,
                     limits: Limits) -> int:
        if self.unfinished[uid] >= self.config.max_unfinished_per_user:
            raise JobError(429, "quota_exceeded",
                           f"user {uid} already has {self.unfinished[uid]} unfinished jobs "
                           f"(the limit is {self.config.max_unfinished_per_user}); "
                           "wait for some to finish", retry_after=5)
        self.unfinished[uid] += 1  # reserved before the await: concurrent submits see it
        try:
            job = await self.store.insert(uid, language, code, input_text,
                                          limits.as_dict(), timeutil.now())
        except BaseException:
            self._release(uid)
            raise
        self.queue.push(uid, job["job_id"])
        metrics.JOBS_SUBMITTED.inc()
        self._publish(job)
        self._schedule()
        return job["job_id"]

    async def cancel(self, job: dict) -> dict:
        if job["status"] in FINAL:
            raise JobError(409, "already_final", f"job {job['job_id']} is already {job['status']}")
        fields = {"error": core.CANCELLED, "finished_at": timeutil.now()}
        # final first: a store that cannot take the write (503) leaves the job queued
        cancelled = await self._finish(job["job_id"], "CANCELLED", fields)
        if cancelled is None:  # it became final meanwhile
            return await self.store.get(job["job_id"])
        self.queue.remove(job["uid"], job["job_id"])
        await self.backend.cancel(job["job_id"])
        return cancelled

    async def purge(self, job: dict) -> None:
        if job["status"] not in FINAL:
            raise JobError(409, "not_final", f"job {job['job_id']} is {job['status']}; "
                           "cancel it before purging")
        await self.store.purge(job["job_id"])

    def counts(self) -> dict[str, int]:
        # jobs waiting for a retry (throttled, store refusing writes) are waiting too
        return {"waiting": len(self.queue) + len(self._delayed), "running": len(self.running)}

    # -- scheduling -----------------------------------------------------------------

    def _schedule(self) -> None:
        while not self._closing and len(self.running) < self.backend.capacity:
            nxt = self.queue.pop()
            if nxt is None:
                break
            uid, job_id = nxt
            task = asyncio.ensure_future(self._run(uid, job_id))
            self.running[job_id] = task
            task.add_done_callback(lambda _t, j=job_id: self._ran(j))
        metrics.set_queue(len(self.queue), len(self.running))

    def _ran(self, job_id: int) -> None:
        self.running.pop(job_id, None)
        self._schedule()

    def _requeue_later(self, uid: int, job_id: int, delay_s: float) -> None:
        def again() -> None:
            self._delayed.discard(handle)
            self.queue.push(uid, job_id, front=True)
            self._schedule()
        handle = asyncio.get_running_loop().call_later(delay_s, again)
        self._delayed.add(handle)

    async def _run(self, uid: int, job_id: int) -> None:
        try:
            await self._run_once(uid, job_id)
        except StoreError as exc:
            # it never became RUNNING (that write failed and was rolled back): it stays
            # WAITING on disk, so it stays queued here too and is tried again
            log.warning("job %d waits: the store cannot take writes (%s)", job_id, exc)
            self._requeue_later(uid, job_id, STORE_RETRY_S)
        except Exception:
            log.exception("job %d: unexpected failure", job_id)
            await self._finish_durably(job_id, "ERROR", {"error": "backend: internal error"})

    async def _run_once(self, uid: int, job_id: int) -> None:
        job = await self.store.get(job_id, with_source=True)
        if job is None or job["status"] != "WAITING" or self._closing:
            return  # cancelled or purged while it waited; or stopping: it stays WAITING
        spec = JobSpec(job_id=job_id, uid=uid, language=job["language"], code=job["code"],
                       input=job["input"], output_cap=self.config.output_cap,
                       version=job["version"], image=job["image"],
                       image_digest=job["image_digest"],
                       files=tuple((f["name"], f["content"]) for f in job.get("files") or ()),
                       **job["limits"])
        hooks = RunHooks(started=lambda: self._started(job_id),
                         output=lambda stream, data: self.bus.publish(
                             {"type": "output", "job_id": job_id, "uid": uid,
                              "stream": stream, "data": data}))
        try:
            result = await self.backend.run(spec, hooks)
        except Retry as exc:
            log.info("job %d waits: %s (retry in %.1fs)", job_id, exc, exc.delay_s)
            self._requeue_later(uid, job_id, exc.delay_s)
            return
        except BackendError as exc:
            if self._closing:
                return  # the backend stopped: left WAITING or RUNNING, a restart runs it
            result = {"error": f"backend: {exc}"}
        if self._closing and result.get("error") not in OWN_OUTCOMES:
            return  # killed by the stop: left RUNNING, so a restart runs it again
        status = "DONE" if result.get("exit_code") == 0 and not result.get("error") else "ERROR"
        if result.get("error") == core.CANCELLED:
            return  # cancel() already made it final
        fields = {**result, "result": result.get("stdout", ""), "finished_at": timeutil.now()}
        await self._finish_durably(job_id, status, fields)

    async def _started(self, job_id: int) -> bool:
        job = await self.store.mark_running(job_id, timeutil.now())
        if job is None:
            return False
        self._publish(job)
        return True

    async def _finish(self, job_id: int, status: str, fields: dict) -> dict | None:
        """Make the job final; the job, or None if it already was."""
        fields.setdefault("finished_at", timeutil.now())
        job = await self.store.finish(job_id, status, fields)
        if job is not None:
            self._publish(job)
            self._release(job["uid"])
            metrics.job_finished(job)
        return job

    async def _finish_durably(self, job_id: int, status: str, fields: dict) -> None:
        """Keep trying to save a result while the store refuses writes (disk full).

        Until then the job holds its slot; on shutdown it stays RUNNING and runs again.
        """
        while True:
            try:
                await self._finish(job_id, status, fields)
                return
            except StoreError as exc:
                if self._closing:
                    return
                log.warning("job %d: cannot save its result yet (%s); retrying", job_id, exc)
                await asyncio.sleep(STORE_RETRY_S)

    def _release(self, uid: int) -> None:
        self.unfinished[uid] -= 1
        if self.unfinished[uid] <= 0:
            del self.unfinished[uid]

    def _publish(self, job: dict) -> None:
        """Tell every listener; called right after the change was committed."""
        self.bus.publish({"type": "job", "job": job})
