"""The job service: state machine, fair durable queue, scheduling (and bursting), events."""
from __future__ import annotations

import asyncio
import collections
import functools
import logging
import random
from dataclasses import dataclass

from . import metrics, timeutil
from .backends.base import Backend, BackendError, JobSpec, Needs, Retry, RunHooks
from .config import Config
from .events import EventBus
from .fairqueue import FairQueue
from .images.catalog import ImageCatalog
from .runner import core
from .runtimes import HOST, Runtime
from .store import FINAL, JobStore, StoreError

log = logging.getLogger("orq.jobs")
MAX_ATTEMPTS = 2  # a job interrupted this many times by a crash ends ERROR "interrupted"
STORE_RETRY_S = 1.0  # while the store refuses writes (disk full), try again this often
HOLD_CAP_S = 20.0  # the longest a refusing backend (Lambda throttling) is left alone
Kind = tuple[str | None, Needs]  # a queued job's pin (a backend name, or None) and needs
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


class JobService:
    """Jobs from submit to final. ``backend`` takes every job it can while it has room;
    ``burst`` (optional) takes those that would wait for it (see "Where jobs run");
    ``catalog`` says where a job's image is."""

    def __init__(self, config: Config, store: JobStore, bus: EventBus, backend: Backend,
                 burst: Backend | None = None, catalog: ImageCatalog | None = None) -> None:
        self.config, self.store, self.bus, self.backend = config, store, bus, backend
        self.catalog = catalog
        self.backends = {b.name: b for b in (backend, burst) if b is not None}  # in order
        self.burst = burst
        self.queue = FairQueue()
        self.running: dict[int, asyncio.Task] = {}
        self.placed: dict[int, str] = {}  # running job -> the backend it was given to
        self.busy: collections.Counter[str] = collections.Counter()  # per backend
        self.unfinished: collections.Counter[int] = collections.Counter()  # per uid
        self._held: dict[str, tuple[float, int]] = {}  # backend -> (until, refusals in a row)
        self._delayed: set[asyncio.TimerHandle] = set()  # jobs waiting to be queued again
        self._wakeups: set[asyncio.TimerHandle] = set()  # ends of holds
        self._closing = False
        for name, b in self.backends.items():
            metrics.BACKEND_CAPACITY.labels(name).set(b.capacity)
            b.on_change = self._schedule  # e.g. the function can run bigger jobs now

    # -- start / stop ---------------------------------------------------------------

    async def recover(self) -> None:
        """Requeue what a previous run left unfinished (SPEC section 1: never lost)."""
        for row in await self.store.unfinished():
            job_id, uid, status = row["job_id"], row["uid"], row["status"]
            self.unfinished[uid] += 1  # counted before a _finish below releases it
            pin = row["backend"] if row["pinned"] else None
            if pin is not None and pin not in self.backends:
                await self._finish(job_id, "ERROR", {"error": f"backend: it asked for {pin}, "
                                                     "which this server no longer runs"})
                continue
            if status == "RUNNING" and row["attempts"] >= MAX_ATTEMPTS:
                await self._finish(job_id, "ERROR", {"error": core.INTERRUPTED})
                continue
            if status == "RUNNING":
                await self.store.requeue(job_id, pin or self.backend.name)
                log.info("job %d was interrupted by a restart; running it again", job_id)
            limits = row["limits"]
            needs = Needs(row["language"], limits["timeout_s"], limits["memory_mb"],
                          row["image"], row["multi_file"], row["version"])
            self.queue.push(uid, job_id, (pin, needs))
        self._schedule()

    async def close(self) -> None:
        """Stop within a few seconds: no job starts from now on, the backend stops (its jobs
        stay WAITING or RUNNING on disk and run again after a restart), and every job's
        task ends, or is cancelled after CLOSE_WAIT_S."""
        self._closing = True
        for handle in self._delayed | self._wakeups:
            handle.cancel()
        for backend in self.backends.values():
            await backend.stop()
        tasks = list(self.running.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=CLOSE_WAIT_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=CLOSE_WAIT_S)

    # -- requests -------------------------------------------------------------------

    async def submit(self, uid: int, code: str, input_text: str, limits: Limits,
                     runtime: Runtime, files: list[dict] | None = None,
                     backend: str | None = None, version: str | None = None) -> int:
        """Queue a job: ``runtime`` is the one resolved from its language, version (the
        prefix it asked for is ``version``) and image; ``files`` a multi-file program;
        ``backend`` pins it to that backend (400 when it cannot run it)."""
        needs = Needs(runtime.language, limits.timeout_s, limits.memory_mb, runtime.image,
                      bool(files), version)
        where = self._check_pin(needs, backend)
        if self.unfinished[uid] >= self.config.max_unfinished_per_user:
            raise JobError(429, "quota_exceeded",
                           f"user {uid} already has {self.unfinished[uid]} unfinished jobs "
                           f"(the limit is {self.config.max_unfinished_per_user}); "
                           "wait for some to finish", retry_after=5)
        self.unfinished[uid] += 1  # reserved before the await: concurrent submits see it
        try:
            job = await self.store.insert(
                uid, runtime.language, code, input_text, limits.as_dict(), timeutil.now(),
                version=runtime.version, image=runtime.image, image_digest=runtime.digest,
                files=files, backend=where, pinned=backend is not None)
        except BaseException:
            self._release(uid)
            raise
        self.queue.push(uid, job["job_id"], (backend, needs))
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
        where = self.placed.get(job["job_id"])
        if where is not None:
            await self.backends[where].cancel(job["job_id"])
        return cancelled

    async def purge(self, job: dict) -> None:
        if job["status"] not in FINAL:
            raise JobError(409, "not_final", f"job {job['job_id']} is {job['status']}; "
                           "cancel it before purging")
        await self.store.purge(job["job_id"])

    def counts(self) -> dict[str, int]:
        # jobs waiting for a retry (store refusing writes) are waiting too
        return {"waiting": len(self.queue) + len(self._delayed), "running": len(self.running)}

    def health(self) -> dict:
        """For /healthz: the counts, the first backend's facts (as before bursting), and each
        backend's capacity and use."""
        now = asyncio.get_running_loop().time()
        each = {name: {**b.info(), "running": self.busy[name],
                       "paused_s": round(max(0.0, self._held.get(name, (0, 0))[0] - now), 1)}
                for name, b in self.backends.items()}
        return {**each[self.backend.name], **self.counts(),
                "burst": self.burst.name if self.burst else None, "backends": each}

    # -- where jobs run (SPEC section 10) --------------------------------------------
    # The first backend takes every job it can run while it has room. The burst backend
    # takes, in the same fair order, the jobs that would otherwise wait and that it can run
    # (Backend.refuses). A pinned job runs on its pin only. When a backend refuses a job for
    # now (Lambda throttling, a function being updated: Retry), the job goes back to the
    # head of its user's queue, WAITING, and that backend gets nothing for a backoff: a free
    # slot elsewhere takes the job, or the backend does once the backoff is over.

    def _check_pin(self, needs: Needs, pin: str | None) -> str:
        """The backend a new job names: its pin, else the first; 400 if it cannot run it."""
        name = pin or self.backend.name
        if name not in self.backends:
            raise JobError(400, "backend_not_configured",
                           f"this server runs no {name} jobs (start it with --burst {name})")
        reason = self.backends[name].refuses(needs)
        if reason is not None:
            raise JobError(400, "backend_cannot_run", reason)
        return name

    def _fits(self, kind: Kind, name: str) -> bool:
        pin, needs = kind
        if pin is not None:
            return pin == name
        return name == self.backend.name or self.backends[name].refuses(needs) is None

    def _schedule(self) -> None:
        for name, backend in self.backends.items():
            # once per kind and pass: each pop looks at every waiting user's kinds
            fits = functools.cache(lambda kind, n=name: self._fits(kind, n))
            while (not self._closing and self.busy[name] < backend.capacity
                   and not self._is_held(name)):
                nxt = self.queue.pop(fits)
                if nxt is None:
                    break
                self._start(*nxt, name)
            metrics.BACKEND_RUNNING.labels(name).set(self.busy[name])
        metrics.set_queue(len(self.queue), len(self.running))

    def _is_held(self, name: str) -> bool:
        return self._held.get(name, (0.0, 0))[0] > asyncio.get_running_loop().time()

    def _hold(self, name: str, first_s: float) -> None:
        """Send ``name`` nothing for a while: ``first_s``, doubling with every refusal in a
        row (up to HOLD_CAP_S), with jitter. Refusals of what was sent before the hold
        began do not count."""
        if self._is_held(name):
            return
        loop = asyncio.get_running_loop()
        streak = self._held.get(name, (0.0, 0))[1]
        delay = min(HOLD_CAP_S, first_s * 2 ** min(streak, 10)) * random.uniform(0.5, 1.0)
        self._held[name] = (loop.time() + delay, streak + 1)
        metrics.BACKEND_HOLDS.labels(name).inc()

        def wake() -> None:
            self._wakeups.discard(handle)
            self._schedule()
        handle = loop.call_later(delay, wake)
        self._wakeups.add(handle)

    def _start(self, uid: int, job_id: int, kind: Kind, name: str) -> None:
        self.placed[job_id] = name
        self.busy[name] += 1
        task = asyncio.ensure_future(self._run(uid, job_id, kind, name))
        self.running[job_id] = task
        task.add_done_callback(lambda _t, j=job_id: self._ran(j))

    def _ran(self, job_id: int) -> None:
        self.running.pop(job_id, None)
        self.busy[self.placed.pop(job_id)] -= 1
        self._schedule()

    def _requeue_later(self, uid: int, job_id: int, kind: Kind, delay_s: float) -> None:
        def again() -> None:
            self._delayed.discard(handle)
            self.queue.push(uid, job_id, kind, front=True)
            self._schedule()
        handle = asyncio.get_running_loop().call_later(delay_s, again)
        self._delayed.add(handle)

    # -- one run ----------------------------------------------------------------------

    async def _run(self, uid: int, job_id: int, kind: Kind, name: str) -> None:
        try:
            await self._run_once(uid, job_id, kind, name)
        except StoreError as exc:
            # it never became RUNNING (that write failed and was rolled back): it stays
            # WAITING on disk, so it stays queued here too and is tried again
            log.warning("job %d waits: the store cannot take writes (%s)", job_id, exc)
            self._requeue_later(uid, job_id, kind, STORE_RETRY_S)
        except Exception:
            log.exception("job %d: unexpected failure", job_id)
            await self._finish_durably(job_id, "ERROR", {"error": "backend: internal error"})

    async def _run_once(self, uid: int, job_id: int, kind: Kind, name: str) -> None:
        job = await self.store.get(job_id, with_source=True)
        if job is None or job["status"] != "WAITING" or self._closing:
            return  # cancelled or purged while it waited; or stopping: it stays WAITING
        backend = self.backends[name]
        reason = backend.refuses(kind[1])  # e.g. the function's memory changed since
        if reason is not None and kind[0] is None and name != self.backend.name:
            self.queue.push(uid, job_id, kind, front=True)  # no longer a burst job
            return
        try:
            root, env = self._image(job["image_digest"], job["language"])
        except FileNotFoundError as exc:
            reason = str(exc)
        if reason is not None:
            await self._finish_durably(job_id, "ERROR", {"error": f"backend: {reason}"})
            return
        spec = JobSpec(job_id=job_id, uid=uid, language=job["language"], code=job["code"],
                       input=job["input"], output_cap=self.config.output_cap,
                       version=job["version"], image=job["image"],
                       image_digest=job["image_digest"], root=root, env=env,
                       files=tuple((f["name"], f["content"]) for f in job.get("files") or ()),
                       **job["limits"])
        hooks = RunHooks(started=lambda: self._started(job_id, name),
                         output=lambda stream, data: self.bus.publish(
                             {"type": "output", "job_id": job_id, "uid": uid,
                              "stream": stream, "data": data}))
        try:
            result = await backend.run(spec, hooks)
        except Retry as exc:
            log.info("job %d waits: %s", job_id, exc)
            self._hold(name, exc.delay_s)
            self.queue.push(uid, job_id, kind, front=True)
            return
        except BackendError as exc:
            if self._closing:
                return  # the backend stopped: left WAITING or RUNNING, a restart runs it
            result = {"error": f"backend: {exc}"}
        if self._closing and result.get("error") not in OWN_OUTCOMES:
            return  # killed by the stop: left RUNNING, so a restart runs it again
        if result.get("error") == core.CANCELLED:
            await self._record_usage(job_id, result.get("usage"))  # cancel() made it final
            return
        status = "DONE" if result.get("exit_code") == 0 and not result.get("error") else "ERROR"
        fields = {**result, "result": result.get("stdout", ""), "finished_at": timeutil.now()}
        await self._finish_durably(job_id, status, fields)

    def _image(self, digest: str, language: str) -> tuple[str | None, tuple]:
        """Where the sandbox finds a job's image and what environment it has there."""
        if digest == HOST or self.catalog is None:
            return None, ()
        return self.catalog.rootfs(digest), tuple(self.catalog.env(digest, language).items())

    async def _started(self, job_id: int, name: str) -> bool:
        job = await self.store.mark_running(job_id, timeutil.now(), backend=name)
        if job is None:
            return False
        if name in self._held:  # it takes jobs again: the next refusal backs off from scratch
            self._held[name] = (self._held[name][0], 0)
        metrics.JOBS_STARTED.labels(name).inc()
        self._publish(job)
        return True

    async def _record_usage(self, job_id: int, usage: dict | None) -> None:
        """A job cancelled while it ran still used what it used (SPEC section 10)."""
        if not usage:
            return
        try:
            job = await self.store.record_usage(job_id, usage)
        except StoreError as exc:
            log.warning("job %d: its usage was not saved (%s)", job_id, exc)
            return
        if job is not None:
            self._publish(job)

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
