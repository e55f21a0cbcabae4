"""The one aiosqlite connection: PRAGMAs, ordered migrations, group-committed writes."""
from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import aiosqlite

log = logging.getLogger("orq.store")


class StoreError(RuntimeError):
    """The database cannot take a write (disk full, read-only, corrupt)."""


MIGRATIONS: list[str] = [
    # 1: jobs, users, tokens. Big text columns come last so that list queries which
    # do not read them never touch their overflow pages.
    """
    CREATE TABLE jobs (
        job_id INTEGER PRIMARY KEY AUTOINCREMENT,
        uid INTEGER NOT NULL,
        status TEXT NOT NULL,
        language TEXT NOT NULL,
        exit_code INTEGER,
        error TEXT,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        duration_ms INTEGER,
        limits TEXT NOT NULL,
        truncated INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        result TEXT NOT NULL DEFAULT '',
        stderr TEXT NOT NULL DEFAULT '',
        code TEXT NOT NULL,
        input TEXT NOT NULL
    );
    CREATE INDEX jobs_by_uid ON jobs(uid, job_id);
    CREATE INDEX jobs_by_status ON jobs(status, job_id);
    CREATE INDEX jobs_by_uid_status ON jobs(uid, status, job_id);
    CREATE TABLE users (
        uid INTEGER PRIMARY KEY,
        password_hash TEXT NOT NULL,
        is_admin INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        password_changed_at TEXT NOT NULL
    );
    CREATE TABLE tokens (
        token_hash TEXT PRIMARY KEY,
        uid INTEGER NOT NULL REFERENCES users(uid) ON DELETE CASCADE,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    CREATE INDEX tokens_by_uid ON tokens(uid);
    """,
    # 2: images, runtimes, bursting (SPEC sections 9 and 10). The jobs table is rebuilt so
    # that its new small columns (runtime version, image name and digest, backend, whether
    # the job asked for that backend (then it runs nowhere else, also after a restart),
    # usage, compile outcome) come before the big texts, as in 1; a multi-file program ("files",
    # JSON) comes last. The AUTOINCREMENT sequence is carried over: ids are never reused.
    """
    CREATE TABLE jobs_v2 (
        job_id INTEGER PRIMARY KEY AUTOINCREMENT,
        uid INTEGER NOT NULL,
        status TEXT NOT NULL,
        language TEXT NOT NULL,
        version TEXT,
        image TEXT NOT NULL DEFAULT 'host',
        image_digest TEXT NOT NULL DEFAULT 'host',
        backend TEXT NOT NULL DEFAULT 'local',
        pinned INTEGER NOT NULL DEFAULT 0,
        exit_code INTEGER,
        error TEXT,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        duration_ms INTEGER,
        limits TEXT NOT NULL,
        truncated INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        usage TEXT,
        compile TEXT,
        result TEXT NOT NULL DEFAULT '',
        stderr TEXT NOT NULL DEFAULT '',
        code TEXT NOT NULL,
        input TEXT NOT NULL,
        files TEXT
    );
    INSERT INTO jobs_v2 (job_id, uid, status, language, exit_code, error, created_at,
                         started_at, finished_at, duration_ms, limits, truncated, attempts,
                         result, stderr, code, input)
        SELECT job_id, uid, status, language, exit_code, error, created_at, started_at,
               finished_at, duration_ms, limits, truncated, attempts, result, stderr, code,
               input FROM jobs;
    CREATE TEMP TABLE seq_v1 AS SELECT seq FROM sqlite_sequence WHERE name = 'jobs';
    DROP TABLE jobs;
    ALTER TABLE jobs_v2 RENAME TO jobs;
    DELETE FROM sqlite_sequence WHERE name = 'jobs';
    INSERT INTO sqlite_sequence (name, seq)
        SELECT 'jobs', max(seq) FROM (SELECT seq FROM seq_v1
                                      UNION ALL SELECT max(job_id) FROM jobs)
        HAVING max(seq) IS NOT NULL;
    DROP TABLE seq_v1;
    CREATE INDEX jobs_by_uid ON jobs(uid, job_id);
    CREATE INDEX jobs_by_status ON jobs(status, job_id);
    CREATE INDEX jobs_by_uid_status ON jobs(uid, status, job_id);
    CREATE TABLE images (
        name TEXT PRIMARY KEY,
        digest TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        source TEXT NOT NULL,
        runtimes TEXT NOT NULL DEFAULT '[]',
        probed TEXT NOT NULL DEFAULT ''
    );
    """,
]


class Database:
    """One connection for the whole process; every statement passes through here."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: aiosqlite.Connection | None = None
        self._pending: list[tuple[str, tuple, asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(self.path.parent, os.W_OK):  # one clear line, not sqlite's error
            raise StoreError(f"the data directory {self.path.parent} is not writable (read-only"
                             " file system or permissions); orq keeps its database there")
        try:
            self.conn = await aiosqlite.connect(str(self.path), isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                           "busy_timeout=5000", "temp_store=MEMORY", "cache_size=-32000"):
                await self.conn.execute(f"PRAGMA {pragma}")
            await self._check_integrity()
            await self._migrate()
        except BaseException as exc:
            await self.close()  # also on StoreError: a live connection thread keeps the process up
            if isinstance(exc, sqlite3.DatabaseError):
                raise StoreError(f"cannot open the database {self.path}: {exc}") from exc
            raise

    async def _check_integrity(self) -> None:
        row = await self.fetchone("PRAGMA quick_check")
        if row is None or row[0] != "ok":
            # one line: quick_check may list hundreds of damaged pages
            problems = [p for p in (row[0] if row else "?").splitlines() if "***" not in p]
            raise StoreError(f"the database {self.path} is corrupt ({problems[0] if problems else '?'}"
                             f"; {len(problems)} problems); restore it from a backup or move it away")

    async def _migrate(self) -> None:
        version = (await self.fetchone("PRAGMA user_version"))[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            log.info("applying database migration %d", number)
            await self.conn.executescript(f"BEGIN; {script}; PRAGMA user_version={number}; COMMIT;")

    async def close(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            await self._flusher  # acknowledged writes land before the connection goes
        if self.conn is not None:
            await self.conn.close()
            self.conn = None

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        """One hop to the database thread (a cursor's execute/fetch/close would take three)."""
        rows = await self.conn.execute_fetchall(sql, tuple(params))
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        return list(await self.conn.execute_fetchall(sql, tuple(params)))

    async def fetch_within(self, sql: str, params: Iterable[Any], budget: int,
                           weigh: Callable[[sqlite3.Row], int]) -> tuple[list[sqlite3.Row], bool]:
        """The query's rows until their summed ``weigh`` would pass ``budget`` (the first
        row always comes), in one hop; rows are read one at a time, so what is left out is
        never loaded. Returns (rows, whether any were left out)."""
        return await self.conn._execute(_fetch_within, self.conn._conn, sql, tuple(params),
                                        budget, weigh)

    async def write(self, sql: str, params: Iterable[Any] = ()) -> int:
        """One durable write; returns how many rows it changed. See ``write_returning``."""
        return (await self._queue(sql, params))[0]

    async def write_returning(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        """One durable write; returns the rows of its RETURNING clause (a write that returns
        the row it changed saves the read that would otherwise follow it)."""
        return (await self._queue(sql, params))[1]

    async def _queue(self, sql: str, params: Iterable[Any]) -> tuple[int, list[sqlite3.Row]]:
        """Group commit: writes queued while a commit is in flight share the next
        transaction and its single hop to the database thread; each runs inside its own
        SAVEPOINT, so one failing statement (a taken uid) fails only its own caller."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((sql, tuple(params), future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        return await future

    async def _flush(self) -> None:
        """The only writer: ``write`` starts it when none runs, so batches never overlap."""
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                # aiosqlite has no public "run this function on your thread"; _execute
                # is that, and is what its own public methods use
                results = await self.conn._execute(_apply_batch, self.conn._conn, batch)
            except Exception as exc:  # noqa: BLE001 - every waiting caller must hear of it
                results = [_wrap(exc)] * len(batch)
            for (_sql, _params, future), result in zip(batch, results):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)


def _wrap(exc: BaseException) -> StoreError:
    err = StoreError(str(exc))
    err.__cause__ = exc
    return err


def _fetch_within(conn: sqlite3.Connection, sql: str, params: tuple, budget: int,
                  weigh: Callable[[sqlite3.Row], int]) -> tuple[list[sqlite3.Row], bool]:
    rows, total = [], 0
    cur = conn.execute(sql, params)
    try:
        for row in cur:
            total += weigh(row)
            if rows and total > budget:
                return rows, True
            rows.append(row)
        return rows, False
    finally:
        cur.close()


def _apply_batch(conn: sqlite3.Connection, batch: list) -> list:
    """Runs on the database thread: one transaction, one SAVEPOINT per statement."""
    results: list = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, params, _future in batch:
            conn.execute("SAVEPOINT w")
            try:
                cur = conn.execute(sql, params)
                rows = cur.fetchall()  # a RETURNING statement completes only once read
                results.append((cur.rowcount, rows))
                conn.execute("RELEASE w")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK TO w")
                conn.execute("RELEASE w")
                results.append(_wrap(exc))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return results
