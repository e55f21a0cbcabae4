"""JobStore: the only code that reads and writes the jobs table."""
from __future__ import annotations

import collections
import json
import sqlite3
from typing import Any

from .db import Database

FINAL = ("DONE", "ERROR", "CANCELLED")
UNFINISHED = ("WAITING", "RUNNING")
STATUSES = UNFINISHED + FINAL

# a list page stops before its jobs' result + stderr pass this many characters (a page
# always holds at least one job): 10,000 jobs with 1 MiB outputs would otherwise be built
# into one 10-20 GB response. The page's Link header leads on to the rest.
PAGE_TEXT_CHARS = 16 * 1024 * 1024

# what every job object carries; code and input only where one job is read
_SUMMARY = ("job_id, uid, status, language, version, image, image_digest, backend, exit_code,"
            " error, created_at, started_at, finished_at, duration_ms, limits, truncated,"
            " attempts, usage, compile, result, stderr")
_JSON_COLUMNS = ("limits", "usage", "compile", "files")


def row_to_job(row: sqlite3.Row) -> dict[str, Any]:
    job = dict(row)
    for name in _JSON_COLUMNS:
        if job.get(name) is not None:
            job[name] = json.loads(job[name])
    job["truncated"] = bool(job["truncated"])
    if "files" in job and job["files"] is None:
        del job["files"]  # one-file jobs: "code" is the program
    return job


def _json(value) -> str | None:
    return None if value is None else json.dumps(value)


def text_chars(job: dict | sqlite3.Row, fields: tuple[str, ...] = ("result", "stderr")) -> int:
    """Characters in a job's big text fields: what makes it heavy to hold or to send."""
    get = job.get if isinstance(job, dict) else job.__getitem__  # a row has every column
    return sum(len(get(f) or "") for f in fields)


class FinalJobCache:
    """Final jobs never change again (only purge removes them): the most recently read ones
    are kept, bounded by count and by the size of their texts. Callers must not mutate."""

    def __init__(self, entries: int = 4096, text_bytes: int = 16 * 1024 * 1024) -> None:
        self.entries, self.text_bytes, self.size = entries, text_bytes, 0
        self._jobs: collections.OrderedDict[int, tuple[dict, int]] = collections.OrderedDict()

    def get(self, job_id: int) -> dict | None:
        hit = self._jobs.get(job_id)
        if hit is None:
            return None
        self._jobs.move_to_end(job_id)
        return hit[0]

    def put(self, job: dict) -> None:
        if job["status"] not in FINAL:
            return
        size = text_chars(job, ("result", "stderr", "code", "input"))
        if size > self.text_bytes // 4:
            return  # a huge job would push out everything else
        self.drop(job["job_id"])
        self._jobs[job["job_id"]] = (job, size)
        self.size += size
        while len(self._jobs) > self.entries or self.size > self.text_bytes:
            self.size -= self._jobs.popitem(last=False)[1][1]

    def drop(self, job_id: int) -> None:
        old = self._jobs.pop(job_id, None)
        if old is not None:
            self.size -= old[1]


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.final = FinalJobCache()  # for GET /jobs/<id>, the most frequent read

    async def insert(self, uid: int, language: str, code: str, input_text: str,
                     limits: dict, created_at: str, *, version: str | None = None,
                     image: str = "host", image_digest: str = "host", backend: str = "local",
                     pinned: bool = False, files: list[dict] | None = None) -> dict:
        """Store a new WAITING job; returns it as clients see it. ``pinned``: the job asked
        for ``backend`` and runs nowhere else."""
        rows = await self.db.write_returning(
            "INSERT INTO jobs (uid, status, language, version, image, image_digest, backend,"
            " pinned, created_at, limits, code, input, files)"
            f" VALUES (?, 'WAITING', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_SUMMARY}",
            (uid, language, version, image, image_digest, backend, int(pinned), created_at,
             json.dumps(limits), code, input_text, _json(files)))
        return row_to_job(rows[0])

    async def _update(self, sql: str, params: tuple) -> dict | None:
        """An UPDATE ... RETURNING one job: the job after the change, or None if none matched."""
        rows = await self.db.write_returning(f"{sql} RETURNING {_SUMMARY}", params)
        return row_to_job(rows[0]) if rows else None

    async def get(self, job_id: int, with_source: bool = False) -> dict | None:
        if with_source and (job := self.final.get(job_id)) is not None:
            return job
        cols = _SUMMARY + (", code, input, files" if with_source else "")
        row = await self.db.fetchone(f"SELECT {cols} FROM jobs WHERE job_id = ?", (job_id,))
        if row is None:
            return None
        job = row_to_job(row)
        if with_source:
            self.final.put(job)
        return job

    async def list(self, uid: int | None = None, status: str | None = None,
                   limit: int = 1000, before: int | None = None) -> tuple[list[dict], bool]:
        """Newest first, and whether jobs were left out for PAGE_TEXT_CHARS; each filter
        maps onto an index (see tests/test_store.py)."""
        sql, params = self._list_query(uid, status, limit, before)
        rows, cut = await self.db.fetch_within(sql, params, PAGE_TEXT_CHARS, text_chars)
        return [row_to_job(r) for r in rows], cut

    @staticmethod
    def _list_query(uid, status, limit, before) -> tuple[str, list]:
        where, params = [], []
        if uid is not None:
            where.append("uid = ?")
            params.append(uid)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if before is not None:
            where.append("job_id < ?")
            params.append(before)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        params.append(limit)
        return f"SELECT {_SUMMARY} FROM jobs{clause} ORDER BY job_id DESC LIMIT ?", params

    async def mark_running(self, job_id: int, started_at: str,
                           backend: str = "local") -> dict | None:
        """WAITING -> RUNNING on ``backend``; the job, or None when it was no longer WAITING
        (cancelled)."""
        return await self._update(
            "UPDATE jobs SET status = 'RUNNING', started_at = ?, backend = ?,"
            " attempts = attempts + 1 WHERE job_id = ? AND status = 'WAITING'",
            (started_at, backend, job_id))

    async def finish(self, job_id: int, status: str, fields: dict) -> dict | None:
        """Make an unfinished job final and return it; a final job is never touched again
        (then None)."""
        names = ("result", "stderr", "exit_code", "error", "duration_ms", "truncated",
                 "finished_at", "usage", "compile")
        values = {n: fields.get(n) for n in names}
        values["usage"], values["compile"] = _json(values["usage"]), _json(values["compile"])
        values["result"] = values["result"] or ""
        values["stderr"] = values["stderr"] or ""
        values["truncated"] = int(bool(values["truncated"]))
        sets = ", ".join(f"{n} = ?" for n in names)
        return await self._update(
            f"UPDATE jobs SET status = ?, {sets} WHERE job_id = ?"
            " AND status IN ('WAITING', 'RUNNING')", (status, *values.values(), job_id))

    async def requeue(self, job_id: int, backend: str) -> None:
        """Back to WAITING after a server crash interrupted its run; ``backend`` is where it
        will run now (its pin, else the server's first backend)."""
        await self.db.write(
            "UPDATE jobs SET status = 'WAITING', started_at = NULL, backend = ?"
            " WHERE job_id = ? AND status = 'RUNNING'", (backend, job_id))

    async def record_usage(self, job_id: int, usage: dict) -> dict | None:
        """The usage of a job cancelled while it ran, known once its processes are gone
        (after the cancel made it final); the job, or None when there was nothing to set."""
        job = await self._update("UPDATE jobs SET usage = ? WHERE job_id = ?"
                                 " AND status = 'CANCELLED' AND usage IS NULL",
                                 (json.dumps(usage), job_id))
        self.final.drop(job_id)
        return job

    async def purge(self, job_id: int) -> bool:
        changed = await self.db.write(
            "DELETE FROM jobs WHERE job_id = ? AND status IN ('DONE', 'ERROR', 'CANCELLED')",
            (job_id,))
        # only now: a read that raced the delete may have cached the job meanwhile
        self.final.drop(job_id)
        return changed == 1

    async def unfinished(self) -> list[dict]:
        """Every WAITING or RUNNING job, oldest first: job_id, uid, status, attempts, and
        what the scheduler needs (language, image, limits, backend, pinned, multi_file)."""
        rows = await self.db.fetchall(
            "SELECT job_id, uid, status, attempts, language, version, image, limits, backend,"
            " pinned,"
            " files IS NOT NULL AS multi_file FROM jobs"
            " WHERE status IN ('WAITING', 'RUNNING') ORDER BY job_id")
        return [{**dict(r), "limits": json.loads(r["limits"]), "pinned": bool(r["pinned"]),
                 "multi_file": bool(r["multi_file"])} for r in rows]
