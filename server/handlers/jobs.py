"""/jobs, /jobs/<id>, /users/<uid> and GET /."""
from __future__ import annotations

import asyncio
import urllib.parse

from ..jobs import resolve_limits
from ..runner.core import LANGUAGES
from ..store import FINAL, STATUSES
from .base import ApiError, BaseHandler, body_uid, parse_flag, parse_int

MAX_CODE = 256 * 1024
MAX_INPUT = 1024 * 1024
MAX_LIMIT = 10000
BACKENDS = ("local", "lambda")


def _typed(body: dict, name: str, kinds: tuple, required: bool = False, what: str = ""):
    """body[name] if it has one of ``kinds`` (a bool is never a number), else 400."""
    if name not in body or body[name] is None:
        if required:
            raise ApiError(400, "missing_field", f"'{name}' is required")
        return None
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ApiError(400, "invalid_field", f"'{name}' must be {what}")
    return value


def parse_job_request(body: dict, config) -> dict:
    uid = body_uid(_typed(body, "uid", (int,), True, "an integer >= 0"))
    code = _typed(body, "code", (str,), True, "a string")
    input_text = _typed(body, "input", (str,), False, "a string") or ""
    if len(code.encode("utf-8", "surrogatepass")) > MAX_CODE:
        raise ApiError(413, "code_too_large", f"code is larger than {MAX_CODE // 1024} KiB")
    if len(input_text.encode("utf-8", "surrogatepass")) > MAX_INPUT:
        raise ApiError(413, "input_too_large", f"input is larger than {MAX_INPUT // 1024} KiB")
    language = _typed(body, "language", (str,), False, "a string") or "python"
    if language not in LANGUAGES:
        raise ApiError(400, "unknown_language",
                       f"unknown language '{language}'; use one of: {', '.join(LANGUAGES)}")
    number = (int, float)
    limits = resolve_limits(
        config, timeout=_typed(body, "timeout", number, what="a number of seconds"),
        memory_mb=_typed(body, "memory_mb", (int,), what="an integer"),
        cpus=_typed(body, "cpus", number, what="a number"),
        io_weight=_typed(body, "io_weight", (int,), what="an integer between 10 and 1000"))
    password = _typed(body, "password", (str,), False, "a string")
    backend = _typed(body, "backend", (str,), False, '"local" or "lambda"')
    if backend not in (None, *BACKENDS):
        raise ApiError(400, "invalid_field", "'backend' must be \"local\" or \"lambda\"")
    return {"uid": uid, "code": code, "input": input_text, "language": language,
            "limits": limits, "password": password, "backend": backend}


class JobListMixin:
    """Query parsing and pagination shared by GET /jobs and GET /users/<uid>."""

    async def list_jobs(self: BaseHandler, uid: int | None) -> None:
        status = self.get_query_argument("status", None)
        if status is not None:
            status = status.upper()
            if status not in STATUSES:
                raise ApiError(400, "invalid_parameter",
                               f"status must be one of {', '.join(STATUSES)}")
        limit = parse_int(self.get_query_argument("limit", "1000"), "limit", 1, MAX_LIMIT)
        before = self.get_query_argument("before", None)
        before = parse_int(before, "before", 1) if before is not None else None
        jobs, cut = await self.app.store.list(uid=uid, status=status, limit=limit, before=before)
        if cut or len(jobs) == limit:
            self._link_next(jobs[-1]["job_id"])
        self.send_json(jobs)

    def _link_next(self: BaseHandler, last_id: int) -> None:
        args = {k: v[-1].decode() for k, v in self.request.query_arguments.items()}
        args["before"] = str(last_id)
        url = (f"{self.request.protocol}://{self.request.host}{self.request.path}?"
               + urllib.parse.urlencode(args))
        self.set_header("Link", f'<{url}>; rel="next"')


class JobsHandler(JobListMixin, BaseHandler):
    async def get(self) -> None:
        uid = self.get_query_argument("uid", None)
        uid = parse_int(uid, "uid") if uid is not None else None
        user = self.require_user()
        if user is not None and not user.is_admin and not self.open_mode:
            if uid is not None and uid != user.uid:
                raise ApiError(403, "forbidden", "you may only list your own jobs")
            uid = user.uid
        await self.list_jobs(uid)

    async def post(self) -> None:
        req = parse_job_request(self.json_body(), self.app.config)
        await self._act_as(req["uid"], req["password"])
        service = self.app.jobs
        job_id = await service.submit(req["uid"], req["code"], req["input"], req["language"],
                                      req["limits"], backend=req["backend"])
        if parse_flag(self.get_query_argument("wait", "false"), "wait"):
            self.send_json(await self._wait_final(job_id))
        else:
            self.set_header("Location", f"{self.request.path.rstrip('/')}/{job_id}")
            self.send_json({"job_id": job_id}, 201)

    async def _act_as(self, uid: int, password: str | None) -> None:
        if self.open_mode:
            return
        if self.user is None and password is not None:
            self.user = await self.app.auth.login(uid, password, self.client_addr)
        user = self.require_user()
        if user.uid != uid and not user.is_admin:
            raise ApiError(403, "forbidden", f"you are uid {user.uid}; you cannot submit as {uid}")

    async def _wait_final(self, job_id: int) -> dict:
        bus = self.app.bus
        done: asyncio.Future = asyncio.get_running_loop().create_future()

        def listener(event: dict) -> None:
            job = event.get("job")
            if job and job["job_id"] == job_id and job["status"] in FINAL and not done.done():
                done.set_result(job)
        bus.subscribe(listener)
        try:
            job = await self.app.store.get(job_id)
            if job is not None and job["status"] in FINAL:
                return job
            return await done
        finally:
            bus.unsubscribe(listener)


class JobHandler(BaseHandler):
    async def _job(self, job_id: str) -> dict:
        self.require_user()  # anonymous callers learn nothing, not even whether it exists
        job = await self.app.store.get(parse_int(job_id, "job_id"), with_source=True)
        if job is None:
            raise ApiError(404, "job_not_found", f"there is no job {job_id}")
        self.check_owner(job["uid"])
        return job

    async def get(self, job_id: str) -> None:
        self.send_json(await self._job(job_id))

    async def delete(self, job_id: str) -> None:
        job = await self._job(job_id)
        if parse_flag(self.get_query_argument("purge", "false"), "purge"):
            await self.app.jobs.purge(job)
            self.set_status(204)
            self.finish()
            return
        self.send_json(await self.app.jobs.cancel(job))


class UserJobsHandler(JobListMixin, BaseHandler):
    async def get(self, uid: str) -> None:
        uid_number = parse_int(uid, "uid")
        self.check_owner(uid_number)
        await self.list_jobs(uid_number)
