"""/jobs, /jobs/<id>, /users/<uid> and GET /."""
from __future__ import annotations

import asyncio
import re
import urllib.parse

from ..jobs import resolve_limits
from ..runtimes import ResolveError, Runtime
from ..store import FINAL, STATUSES
from .base import ApiError, BaseHandler, body_uid, parse_flag, parse_int

MAX_CODE = 256 * 1024
MAX_INPUT = 1024 * 1024
MAX_LIMIT = 10000
MAX_FILES = 64
# a relative path of plain components: no leading '/', no '.' or '..' component
FILE_NAME = re.compile(r"[\w+-][\w.+-]*(?:/[\w+-][\w.+-]*)*", re.ASCII)
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


def parse_program(body: dict) -> tuple[str, list[dict] | None]:
    """The program: ``code`` (one file), or ``files`` (entry point first; relative names
    without '..', at most 64, all counted against the code size limit); (code, files)."""
    code = _typed(body, "code", (str,), False, "a string")
    files = body.get("files")
    if files is None:
        if code is None:
            raise ApiError(400, "missing_field", "'code' (or 'files') is required")
        files_out, size = None, len(code.encode("utf-8", "surrogatepass"))
    else:
        if code is not None:
            raise ApiError(400, "invalid_field", "send 'code' or 'files', not both")
        files_out, size = _files(files)
        code = files_out[0]["content"]
    if size > MAX_CODE:
        raise ApiError(413, "code_too_large", f"code is larger than {MAX_CODE // 1024} KiB")
    return code, files_out


def _files(files) -> tuple[list[dict], int]:
    if not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES:
        raise ApiError(400, "invalid_field", f"'files' must be a list of 1 to {MAX_FILES} files")
    program: dict[str, str] = {}  # a name given twice keeps its place and its last content
    for entry in files:
        if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)
                and isinstance(entry.get("content"), str)):
            raise ApiError(400, "invalid_field",
                           "each file must be {\"name\": string, \"content\": string}")
        name = entry["name"]
        if not 0 < len(name) <= 255 or not FILE_NAME.fullmatch(name):
            raise ApiError(400, "invalid_file_name", f"bad file name {name[:80]!r}: use "
                           "relative names of letters, digits, '.', '_', '+', '-' and '/' "
                           "(no component starting with '.')")
        program[name] = entry["content"]
    size = sum(len(c.encode("utf-8", "surrogatepass")) for c in program.values())
    return [{"name": n, "content": c} for n, c in program.items()], size


def parse_job_request(body: dict, config) -> dict:
    uid = body_uid(_typed(body, "uid", (int,), True, "an integer >= 0"))
    code, files = parse_program(body)
    input_text = _typed(body, "input", (str,), False, "a string") or ""
    if len(input_text.encode("utf-8", "surrogatepass")) > MAX_INPUT:
        raise ApiError(413, "input_too_large", f"input is larger than {MAX_INPUT // 1024} KiB")
    language = _typed(body, "language", (str,), False, "a string") or "python"
    version = _typed(body, "version", (str,), False, "a string")
    image = _typed(body, "image", (str,), False, "a string")
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
    return {"uid": uid, "code": code, "files": files, "input": input_text,
            "language": language, "version": version, "image": image, "limits": limits,
            "password": password, "backend": backend}


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
        runtime = await self._runtime(req["language"], req["version"], req["image"])
        job_id = await self.app.jobs.submit(req["uid"], req["code"], req["input"],
                                            req["limits"], runtime, req["files"],
                                            req["backend"], req["version"])
        if parse_flag(self.get_query_argument("wait", "false"), "wait"):
            self.send_json(await self._wait_final(job_id))
        else:
            self.set_header("Location", f"{self.request.path.rstrip('/')}/{job_id}")
            self.send_json({"job_id": job_id}, 201)

    async def _runtime(self, language: str, version: str | None, image: str | None) -> Runtime:
        """The runtime (and image) the job runs in (SPEC section 9), or the 400 that says why
        there is none."""
        catalog = self.app.catalog
        await catalog.refresh()
        try:
            return catalog.index.resolve(language, version, image)
        except ResolveError as exc:
            raise ApiError(400, exc.code, str(exc)) from None

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
