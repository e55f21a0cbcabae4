"""The one aiosqlite connection: PRAGMAs, ordered migrations, group-committed writes."""
from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
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
]


class Database:
    """One connection for the whole process; every statement passes through here."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = await aiosqlite.connect(str(self.path), isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                           "busy_timeout=5000", "temp_store=MEMORY", "cache_size=-32000"):
                await self.conn.execute(f"PRAGMA {pragma}")
            await self._check_integrity()
            await self._migrate()
        except sqlite3.DatabaseError as exc:
            await self.close()
            raise StoreError(f"cannot open the database {self.path}: {exc}") from exc

    async def _check_integrity(self) -> None:
        row = await self.fetchone("PRAGMA quick_check")
        if row is None or row[0] != "ok":
            raise StoreError(f"the database {self.path} is corrupt ({row[0] if row else '?'});"
                             " restore it from a backup or move it away")

    async def _migrate(self) -> None:
        version = (await self.fetchone("PRAGMA user_version"))[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            log.info("applying database migration %d", number)
            await self.conn.executescript(f"BEGIN; {script}; PRAGMA user_version={number}; COMMIT;")

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        async with self.conn.execute(sql, tuple(params)) as cur:
            return await cur.fetchone()

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        async with self.conn.execute(sql, tuple(params)) as cur:
            return await cur.fetchall()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; a failed write raises StoreError, never half-applies."""
        async with self._write_lock:
            try:
                await self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(str(exc)) from exc
            try:
                yield self.conn
                await self.conn.execute("COMMIT")
            except BaseException as exc:
                try:
                    await self.conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(str(exc)) from exc
                raise

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """One write in its own transaction; returns lastrowid."""
        async with self.transaction() as conn:
            cur = await conn.execute(sql, tuple(params))
            return cur.lastrowid
