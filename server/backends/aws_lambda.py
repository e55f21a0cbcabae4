"""The Lambda backend: each job is one synchronous invocation of the deployed runner
(``server/runner/lambda_handler.py``), made through boto3 in worker threads (daemon
threads, reused: ``in_thread``) behind a semaphore (``lambda_concurrency`` at once).

When a job becomes RUNNING: the invocation is sent while the job is still WAITING. If
Lambda bounces it within ``GRACE_S`` (throttling, a function still Pending or being
updated: answers that come back at once), ``Retry`` is raised and the job stays WAITING
(the job service backs off). Once the invocation has been in flight for ``GRACE_S``, or
came back with a result, ``hooks.started()`` is called. A bounce that arrives after the
grace period (a slow link) is retried inside ``run()`` with a backoff while the job shows
RUNNING. Lambda cannot stop an invocation: cancel only makes the backend discard the late
result (its usage is still reported).

What the function can run (``refuses``): python and bash from the host image, one
``code`` file, a timeout and memory that fit the function's own Timeout and MemorySize,
read at start and again every ``lambda_refresh_s`` and after a "function not ready" answer.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import random
import threading
from dataclasses import dataclass

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ReadTimeoutError,
)

from ..runner import core
from ..runner.lambda_handler import DEADLINE_MARGIN_S
from ..runtimes import version_matches
from .base import (
    Backend,
    BackendError,
    BackendUnavailable,
    Envelope,
    JobSpec,
    Needs,
    Retry,
    RunHooks,
)

log = logging.getLogger("orq.lambda")
GRACE_S = 0.5
THROTTLED = {"TooManyRequestsException"}
NOT_READY = {"ResourceConflictException", "ResourceNotReadyException"}
BACKOFF = {"throttled": (0.5, 20.0), "not ready": (2.0, 30.0)}  # base, cap (seconds)
RESULT_KEYS = ("stdout", "stderr", "exit_code", "error", "duration_ms", "truncated", "usage")
# a job fits the function when its timeout leaves the handler its margin (it answers
# DEADLINE_MARGIN_S before the function's deadline) plus a second to set up and clean up,
# and its memory leaves RESERVED_MB of the function's for the runtime and the handler
SETUP_S = 1.0
RESERVED_MB = 64


class _Bounce(Exception):
    """Lambda did not run the job now (throttled / function not ready); try later."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"Lambda {kind}: {message}")
        self.kind = kind


@dataclass
class _Attempt:
    hooks: RunHooks
    started: bool = False  # hooks.started() was called: Retry is no longer allowed


def resolve_region(explicit: str | None = None) -> str | None:
    """--region / ORQ_LAMBDA_REGION, else AWS_REGION, else boto3's own (AWS_DEFAULT_REGION,
    ~/.aws/config)."""
    return explicit or os.environ.get("AWS_REGION") or boto3.Session().region_name


class LambdaBackend(Backend):
    name = "lambda"

    def __init__(self, config) -> None:
        self.config = config
        self.function = config.lambda_function
        self.region: str | None = config.lambda_region
        self._sem: asyncio.Semaphore | None = None
        self._in_flight: set[asyncio.Future] = set()  # invocations Lambda has not answered
        self._stopping = False
        self._client = None
        self._active: set[int] = set()
        self._cancelled: set[int] = set()
        self.function_conf: dict = {}  # the function's configuration (GetFunction)
        self._reach = Envelope(())  # what it can run (see _know)
        self._refresher: asyncio.Task | None = None
        self._refresh_now = asyncio.Event()

    @property
    def capacity(self) -> int:
        return self.config.lambda_concurrency

    def info(self) -> dict:
        conf = self.function_conf
        return {**super().info(), "function": self.function, "region": self.region,
                "in_flight": len(self._in_flight), "memory_mb": conf.get("MemorySize"),
                "timeout_s": conf.get("Timeout"), "state": conf.get("State")}

    def refuses(self, needs: Needs) -> str | None:
        reach, fn = self._reach, f"the Lambda function {self.function}"
        versions = dict(reach.languages).get(needs.language)
        if not versions:
            have = ", ".join(lang for lang, _ in reach.languages)
            return f"{fn} runs {have}, not {needs.language}"
        if needs.version is not None and not any(version_matches(v, needs.version)
                                                 for v in versions):
            return f"{fn} has {needs.language} {', '.join(versions)}, not {needs.version}"
        if needs.image != "host" or needs.multi_file:
            return f"{fn} runs one code file in the host image only"
        conf = self.function_conf
        if reach.max_timeout_s is not None and needs.timeout_s > reach.max_timeout_s:
            return (f"{fn} runs jobs of at most {reach.max_timeout_s:g} s (its timeout is "
                    f"{conf['Timeout']} s)")
        if reach.max_memory_mb is not None and needs.memory_mb > reach.max_memory_mb:
            return (f"{fn} runs jobs of at most {reach.max_memory_mb} MB "
                    f"(its memory is {conf['MemorySize']} MB)")
        return None

    def envelope(self) -> Envelope:
        return self._reach

    def _know(self, conf: dict, runtimes: list[dict] | None = None) -> None:
        """Take in the function's configuration (and the runtimes it reported): what it
        can run, for ``refuses`` and the OpenAPI document."""
        self.function_conf = conf
        if runtimes is not None:
            self.runtimes = runtimes
        languages: dict[str, list[str]] = {}
        for runtime in self.runtimes:
            languages.setdefault(runtime["language"], []).append(runtime["version"])
        self._reach = Envelope(
            tuple((lang, tuple(versions)) for lang, versions in languages.items()),
            conf["Timeout"] - DEADLINE_MARGIN_S - SETUP_S if "Timeout" in conf else None,
            conf["MemorySize"] - RESERVED_MB if "MemorySize" in conf else None)

    async def start(self) -> None:
        self._sem = asyncio.Semaphore(self.config.lambda_concurrency)
        try:
            self.region = resolve_region(self.config.lambda_region)
            if not self.region:
                raise BackendUnavailable("no AWS region for the Lambda backend: set AWS_REGION"
                                         " or --lambda-region / ORQ_LAMBDA_REGION")
            self._client = await in_thread(self._make_client)
        except BotoCoreError as exc:
            raise BackendUnavailable(f"AWS configuration: {exc}") from exc
        conf = await in_thread(self._check_function)
        state = conf.get("State", "Active")
        if state == "Failed":
            raise BackendUnavailable(
                f"Lambda function {self.function} is Failed ({conf.get('StateReason')}): "
                f"redeploy it with scripts/deploy.sh lambda --function-name {self.function}")
        self._know(conf, await in_thread(self._probe, conf))
        log.info("lambda backend ready: function %s in %s (%s, %s MB, %s s), %d at once",
                 self.function, self.region, state, conf.get("MemorySize"),
                 conf.get("Timeout"), self.capacity)
        self._refresher = asyncio.ensure_future(self._refresh_loop())

    async def _refresh_loop(self) -> None:
        """Keep ``function_conf`` current: every ``lambda_refresh_s``, and soon after the
        function said it is being updated."""
        while not self._stopping:
            try:
                await asyncio.wait_for(self._refresh_now.wait(), self.config.lambda_refresh_s)
            except TimeoutError:
                pass
            self._refresh_now.clear()
            try:
                conf = await in_thread(self._check_function)
            except Exception as exc:  # noqa: BLE001 - the last one read stays in force
                log.warning("cannot re-read the Lambda function's configuration: %s", exc)
                continue
            changed = _limits(conf) != _limits(self.function_conf)
            self._know(conf)
            if changed:
                log.info("Lambda function %s now has %s MB and %s s", self.function,
                         conf.get("MemorySize"), conf.get("Timeout"))
                if self.on_change is not None:
                    self.on_change()

    def _make_client(self):
        timeout = self.config.max_timeout_s + 30  # the answer comes after the job ends
        cfg = BotoConfig(region_name=self.region, connect_timeout=10, read_timeout=timeout,
                         retries={"total_max_attempts": 1},  # we retry, never botocore
                         max_pool_connections=self.config.lambda_concurrency)
        try:
            return boto3.session.Session().client("lambda", config=cfg)
        except NoRegionError as exc:
            raise BackendUnavailable("no AWS region: set AWS_REGION") from exc

    def _check_function(self) -> dict:
        fix = (f"deploy it with `scripts/deploy.sh lambda --function-name {self.function} "
               f"--region {self.region}` or set ORQ_LAMBDA_FUNCTION to a deployed function")
        try:
            return self._client.get_function(FunctionName=self.function)["Configuration"]
        except NoCredentialsError as exc:
            raise BackendUnavailable("no AWS credentials for the Lambda backend: set "
                                     "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
                                     ) from exc
        except ClientError as exc:
            code, message = aws_error(exc)
            if code == "ResourceNotFoundException":
                raise BackendUnavailable(f"Lambda function {self.function} not found in "
                                         f"{self.region}: {fix}") from exc
            raise BackendUnavailable(f"cannot read Lambda function {self.function}: "
                                     f"{code}: {message}") from exc
        except BotoCoreError as exc:
            raise BackendUnavailable(f"cannot reach AWS Lambda: {exc}") from exc

    def _probe(self, conf: dict) -> list[dict]:
        """In a worker thread: the runtimes the function provides, as its handler reports
        them (a ``{"probe": true}`` event); else its configured python alone."""
        try:
            resp = self._client.invoke(FunctionName=self.function, Payload=b'{"probe": true}')
            answer = json.loads(resp["Payload"].read())
            if not resp.get("FunctionError") and isinstance(answer.get("runtimes"), list):
                return answer["runtimes"]
            reason = str(answer)[:200]
        except (ClientError, BotoCoreError, ValueError, AttributeError) as exc:
            reason = str(exc)
        log.warning("cannot ask Lambda function %s for its runtimes (%s); offering its python",
                    self.function, reason)
        runtime = str(conf.get("Runtime") or "")
        return [{"language": "python", "version": runtime.removeprefix("python") or "3"}]

    async def stop(self) -> None:
        """Lambda cannot stop in-flight invocations: stop waiting for them (their jobs stay
        RUNNING and run again after a restart)."""
        self._stopping = True
        if self._refresher is not None:
            self._refresher.cancel()
        for fut in list(self._in_flight):
            if not fut.done():
                fut.set_exception(BackendError("the server is stopping"))

    async def cancel(self, job_id: int) -> None:
        if job_id in self._active:
            self._cancelled.add(job_id)  # Lambda cannot stop it: its answer is dropped

    async def run(self, spec: JobSpec, hooks: RunHooks) -> dict:
        self._active.add(spec.job_id)
        try:
            return await self._run(spec, hooks)
        finally:
            self._active.discard(spec.job_id)
            self._cancelled.discard(spec.job_id)

    async def _run(self, spec: JobSpec, hooks: RunHooks) -> dict:
        payload = json.dumps(event(spec)).encode()
        state = _Attempt(hooks)
        bounces = 0
        while True:
            try:
                answer = await self._invoke(payload, state)
            except _Bounce as exc:
                if exc.kind == "not ready":
                    self._refresh_now.set()  # an update may have changed its memory/timeout
                base, cap = BACKOFF[exc.kind]
                if not state.started:
                    raise Retry(str(exc), base) from None
                delay = min(cap, base * 2 ** min(bounces, 10)) * random.uniform(0.5, 1.0)
                bounces += 1
                log.info("job %d: %s after it started; retrying in %.1fs", spec.job_id, exc,
                         delay)
                await asyncio.sleep(delay)
                if spec.job_id in self._cancelled:
                    return {"error": core.CANCELLED}
                continue
            if answer is None:
                return {"error": core.CANCELLED}
            if spec.job_id in self._cancelled:  # ran to its end: only its usage is kept
                return {"error": core.CANCELLED, "usage": answer.get("usage")}
            return answer

    async def _invoke(self, payload: bytes, state: _Attempt) -> dict | None:
        """One invocation; the result, or None when the job was cancelled before it started."""
        await self._sem.acquire()
        if self._stopping:
            self._sem.release()
            raise BackendError("the server is stopping")
        fut = in_thread(self._call, payload)
        self._in_flight.add(fut)
        fut.add_done_callback(self._done)  # the slot is held until Lambda answers
        if not state.started:
            done, _ = await asyncio.wait({fut}, timeout=GRACE_S)
            if done and isinstance(fut.exception(), _Bounce):
                raise fut.exception()
            state.started = True
            if not await state.hooks.started():
                return None
        return await fut

    def _done(self, fut: asyncio.Future) -> None:
        self._in_flight.discard(fut)
        self._sem.release()
        if not fut.cancelled():
            fut.exception()  # retrieved: a dropped (cancelled) job's error is not logged

    def _call(self, payload: bytes) -> dict:
        """In a worker thread: invoke, read and check the answer."""
        try:
            resp = self._client.invoke(FunctionName=self.function,
                                       InvocationType="RequestResponse", Payload=payload)
            body = resp["Payload"].read()
        except ClientError as exc:
            code, message = aws_error(exc)
            if code in THROTTLED:
                raise _Bounce("throttled", message) from None
            if code in NOT_READY:
                raise _Bounce("not ready", message) from None
            raise BackendError(f"Lambda {code}: {message}") from None
        except ReadTimeoutError:
            raise BackendError(f"no answer from Lambda function {self.function} within "
                               f"{self.config.max_timeout_s + 30:.0f}s") from None
        except (EndpointConnectionError, NoCredentialsError) as exc:
            raise BackendError(str(exc)) from None
        except BotoCoreError as exc:
            raise BackendError(f"Lambda call failed: {exc}") from None
        return parse_answer(resp.get("FunctionError"), body)


def in_thread(fn, *args) -> asyncio.Future:
    """Run a blocking boto3 call on a daemon worker thread (the caller bounds how many run
    at once): a stopping server never waits for Lambda to answer, as a
    ThreadPoolExecutor's joined threads would. Idle workers are reused: starting a thread
    per invocation cost ~12% of the server's CPU at 200 invocations in flight."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def settle(result, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is None:
            fut.set_result(result)
        else:
            fut.set_exception(exc)

    def work() -> None:
        try:
            outcome = (fn(*args), None)
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            outcome = (None, exc)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:
            pass  # the loop is closed: the server has stopped
    _WORKERS.put(work)
    return fut


class _Workers:
    """Daemon threads that run queued calls; one more starts whenever none is idle."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()

    def put(self, call) -> None:
        with self._lock:
            spare = self._idle > 0
            if spare:
                self._idle -= 1  # taken by this call
        self._calls.put(call)
        if not spare:
            threading.Thread(target=self._serve, name="orq-lambda", daemon=True).start()

    def _serve(self) -> None:
        while True:
            self._calls.get()()
            with self._lock:
                self._idle += 1


_WORKERS = _Workers()


def event(spec: JobSpec) -> dict:
    """The runner's event (see lambda_handler.py)."""
    return {"job_id": spec.job_id, "language": spec.language, "code": spec.code,
            "input": spec.input, "timeout_s": spec.timeout_s, "memory_mb": spec.memory_mb,
            "output_cap": spec.output_cap}


def parse_answer(function_error: str | None, body: bytes) -> dict:
    """The runner's result, or BackendError for a function error / a malformed answer."""
    try:
        data = json.loads(body or b"null")
    except ValueError:
        data = None
    if function_error:
        if isinstance(data, dict):
            kind = data.get("errorType") or function_error
            message = str(data.get("errorMessage") or "no message")
        else:
            kind, message = function_error, body[:300].decode(errors="replace") or "no message"
        raise BackendError(f"the Lambda function failed ({kind}): {message[:500]}")
    if not isinstance(data, dict) or not isinstance(data.get("stdout"), str):
        raise BackendError(f"unexpected answer from the Lambda function: {body[:200]!r}")
    result = {key: data.get(key) for key in RESULT_KEYS}
    result["usage"] = usage_of(result["usage"])
    return result


def usage_of(value: object) -> dict | None:
    """The handler's usage figures, or None from a handler deployed before it sent them."""
    if not isinstance(value, dict):
        return None
    figures = {key: value.get(key) for key in ("cpu_ms", "max_rss_kb")}
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in figures.values())
    return figures if ok else None


def _limits(conf: dict) -> tuple:
    return conf.get("MemorySize"), conf.get("Timeout")


def aws_error(exc: ClientError) -> tuple[str, str]:
    """An AWS error's code (``"?"`` when missing) and message."""
    err = exc.response.get("Error", {})
    return err.get("Code", "?"), err.get("Message") or str(exc)
