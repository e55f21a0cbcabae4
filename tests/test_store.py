"""The SQLite layer: list queries use indexes, group commit keeps every write, one by one."""
from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from server.store import Database, JobStore, StoreError, UserExists, UserStore
from server.store.jobs import PAGE_TEXT_CHARS

LIMITS = {"timeout_s": 10.0, "memory_mb": 256, "cpus": 1.0, "io_weight": 500}
NOW = "2024-01-01T00:00:00.000000Z"


def run(coro):
    return asyncio.run(coro)


async def _opened(path: Path) -> tuple[Database, JobStore]:
    db = Database(path)
    await db.open()
    return db, JobStore(db)


async def _plan(db: Database, sql: str, params: list) -> str:
    rows = await db.fetchall("EXPLAIN QUERY PLAN " + sql, params)
    return " | ".join(row["detail"] for row in rows)


FILTERS = list(itertools.product((None, 3), (None, "DONE"), (None, 500)))


@pytest.mark.parametrize("uid,status,before", FILTERS)
def test_every_list_query_is_served_by_an_index_in_job_id_order(tmp_path, uid, status, before):
    async def check() -> str:
        db, store = await _opened(tmp_path / "orq.db")
        try:
            sql, params = store._list_query(uid, status, 100, before)
            return await _plan(db, sql, params)
        finally:
            await db.close()
    plan = run(check())
    assert "TEMP B-TREE" not in plan, plan  # ORDER BY job_id DESC comes from the index
    if uid is not None or status is not None:
        wanted = {(True, False): "jobs_by_uid", (False, True): "jobs_by_status",
                  (True, True): "jobs_by_uid_status"}[(uid is not None, status is not None)]
        assert plan.startswith(f"SEARCH jobs USING INDEX {wanted} "), plan
    elif before is not None:
        assert plan.startswith("SEARCH jobs USING INTEGER PRIMARY KEY (rowid<?)"), plan
    else:  # the table itself is in job_id order: walked backwards, stopped at LIMIT
        assert plan == "SCAN jobs", plan


def test_unfinished_and_counts_use_the_status_index(tmp_path):
    async def check() -> list[str]:
        db, _ = await _opened(tmp_path / "orq.db")
        try:
            return [await _plan(db, "SELECT job_id, uid, status, attempts FROM jobs WHERE status"
                                " IN ('WAITING', 'RUNNING') ORDER BY job_id", [])]
        finally:
            await db.close()
    for plan in run(check()):
        assert "jobs_by_status" in plan, plan


def test_concurrent_inserts_are_all_kept_with_distinct_increasing_ids(tmp_path):
    async def scenario() -> tuple[list[int], list[dict]]:
        db, store = await _opened(tmp_path / "orq.db")
        try:
            jobs = await asyncio.gather(*(store.insert(i % 7, "python", f"print({i})", "",
                                                       LIMITS, NOW) for i in range(300)))
            assert all(j["status"] == "WAITING" and j["result"] == "" for j in jobs)
            return [j["job_id"] for j in jobs], (await store.list(limit=1000))[0]
        finally:
            await db.close()
    ids, listed = run(scenario())
    assert len(set(ids)) == 300
    assert sorted(j["job_id"] for j in listed) == sorted(ids)
    assert [j["job_id"] for j in listed] == sorted(ids, reverse=True)


def test_a_failing_write_in_a_batch_fails_alone(tmp_path):
    async def scenario():
        db, store = await _opened(tmp_path / "orq.db")
        users = UserStore(db)
        try:
            await users.create(5, "hash", False, NOW)
            results = await asyncio.gather(
                store.insert(1, "python", "a", "", LIMITS, NOW),
                users.create(5, "other", False, NOW),
                store.insert(2, "python", "b", "", LIMITS, NOW), return_exceptions=True)
            return results, (await store.list())[0], await users.get(5)
        finally:
            await db.close()
    results, listed, user = run(scenario())
    assert isinstance(results[1], UserExists)
    assert results[0]["uid"] == 1 and results[2]["uid"] == 2
    assert {j["uid"] for j in listed} == {1, 2}
    assert user["password_hash"] == "hash"


def test_writes_after_close_raise_a_store_error(tmp_path):
    async def scenario():
        db, store = await _opened(tmp_path / "orq.db")
        await db.close()
        db.conn = _ClosedConn()
        await store.insert(1, "python", "a", "", LIMITS, NOW)
    with pytest.raises(StoreError):
        run(scenario())


class _ClosedConn:
    """What the connection looks like to _flush once the database thread is gone."""

    _conn = None

    async def _execute(self, *args):
        raise ValueError("Connection closed")


def test_state_changes_are_durable_and_final_states_never_change(tmp_path):
    async def scenario():
        db, store = await _opened(tmp_path / "orq.db")
        job_id = (await store.insert(1, "python", "print(1)", "", LIMITS, NOW))["job_id"]
        running = await store.mark_running(job_id, NOW)
        assert running["status"] == "RUNNING" and running["attempts"] == 1
        assert not await store.mark_running(job_id, NOW)
        done = await store.finish(job_id, "DONE", {"result": "1\n", "exit_code": 0})
        assert (done["status"], done["result"], done["exit_code"]) == ("DONE", "1\n", 0)
        assert not await store.finish(job_id, "ERROR", {"exit_code": 1})
        await db.close()
        db, store = await _opened(tmp_path / "orq.db")
        try:
            return (await store.get(job_id, with_source=True),
                    {st: len((await store.list(status=st))[0]) for st in ("DONE", "WAITING")})
        finally:
            await db.close()
    job, counts = run(scenario())
    assert (job["status"], job["result"], job["exit_code"], job["attempts"]) == \
        ("DONE", "1\n", 0, 1)
    assert job["code"] == "print(1)"
    assert counts["DONE"] == 1 and counts["WAITING"] == 0


def test_final_job_cache_is_bounded_and_skips_unfinished_jobs():
    from server.store.jobs import FinalJobCache
    cache = FinalJobCache(entries=3, text_bytes=1000)
    cache.put({"job_id": 1, "status": "RUNNING", "result": ""})
    assert cache.get(1) is None
    for i in range(2, 7):
        cache.put({"job_id": i, "status": "DONE", "result": "x" * 10})
    assert [cache.get(i) is not None for i in range(2, 7)] == [False, False, True, True, True]
    cache.put({"job_id": 9, "status": "DONE", "result": "y" * 200})
    cache.put({"job_id": 10, "status": "ERROR", "result": "z" * 240})
    assert cache.size <= 1000 and cache.get(10) is not None
    cache.drop(10)
    assert cache.get(10) is None
    cache.put({"job_id": 11, "status": "DONE", "result": "w" * 900})  # over a quarter
    assert cache.get(11) is None


def test_purged_job_is_not_served_from_the_cache(tmp_path):
    async def scenario():
        db, store = await _opened(tmp_path / "orq.db")
        try:
            job_id = (await store.insert(1, "python", "print(1)", "", LIMITS, NOW))["job_id"]
            await store.finish(job_id, "DONE", {"result": "1\n", "exit_code": 0})
            first = await store.get(job_id, with_source=True)
            cached = await store.get(job_id, with_source=True)
            assert await store.purge(job_id)
            return first, cached, await store.get(job_id, with_source=True)
        finally:
            await db.close()
    first, cached, gone = run(scenario())
    assert first is cached and first["result"] == "1\n" and gone is None


def test_a_page_stops_before_its_outputs_pass_the_budget(tmp_path):
    """Jobs with large outputs: a list reads only as many as fit PAGE_TEXT_CHARS (always
    one), says that more were left out, and the next page (before=) goes on from there."""
    per_job = 3 * 1024 * 1024

    async def scenario():
        db, store = await _opened(tmp_path / "orq.db")
        try:
            ids = []
            for i in range(13):
                job_id = (await store.insert(1, "python", "x", "", LIMITS, NOW))["job_id"]
                text = "x" * (per_job // 2) if i % 2 else ""
                await store.finish(job_id, "DONE", {"result": text, "stderr": text})
                ids.append(job_id)
            pages, before = [], None
            while True:
                jobs, cut = await store.list(uid=1, limit=100, before=before)
                pages.append(([j["job_id"] for j in jobs], cut))
                if not cut:
                    return ids, pages
                before = jobs[-1]["job_id"]
        finally:
            await db.close()
    ids, pages = run(scenario())
    fits = PAGE_TEXT_CHARS // per_job  # big jobs per page; the small ones cost nothing
    assert [cut for _, cut in pages] == [True] * (len(pages) - 1) + [False]
    assert [i for page, _ in pages for i in page] == sorted(ids, reverse=True)
    assert all(sum(1 for i in page if (i - ids[0]) % 2) == fits for page, _ in pages[:-1])


def test_migration_2_keeps_jobs_and_never_reuses_an_id(tmp_path):
    """A database of the first schema: its jobs survive the rebuild of the jobs table with
    the new columns, and a purged newest job's id is not handed out again."""
    import sqlite3

    from server.store.db import MIGRATIONS
    path = tmp_path / "orq.db"
    conn = sqlite3.connect(path)
    conn.executescript(f"BEGIN; {MIGRATIONS[0]}; PRAGMA user_version=1; COMMIT;")
    for n in range(3):
        conn.execute("INSERT INTO jobs (uid, status, language, created_at, limits, code, input,"
                     " result) VALUES (7, 'DONE', 'python', ?, '{}', 'print(1)', '', ?)",
                     (NOW, f"out{n}"))
    conn.execute("DELETE FROM jobs WHERE job_id = 3")
    conn.commit()
    conn.close()

    async def scenario():
        db, store = await _opened(path)
        old = await store.get(2, with_source=True)
        new = await store.insert(7, "c", "int main(){}", "", LIMITS, NOW, version="12.2.0",
                                 image="gcc", image_digest="sha256:ab",
                                 files=[{"name": "main.c", "content": "int main(){}"}])
        await db.close()
        return old, new
    old, new = run(scenario())
    assert (old["result"], old["image"], old["backend"], old["usage"]) == ("out1", "host",
                                                                          "local", None)
    assert new["job_id"] == 4
    assert (new["version"], new["image"], new["image_digest"]) == ("12.2.0", "gcc", "sha256:ab")
