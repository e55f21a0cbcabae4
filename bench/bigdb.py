"""GET /users/<uid>?limit=100 with 1,000,000 jobs stored: p99, server RSS, start-up time.

A first server start creates the schema; the rows are then inserted directly with
sqlite3 (minutes faster than the API), and the server is started again on that file.
"""
from __future__ import annotations

import asyncio
import json
import random
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from common import KeepAlive, orq_server, percentile

LIMITS = json.dumps({"timeout_s": 10.0, "memory_mb": 256, "cpus": 1.0, "io_weight": 500})
STAMP = "2024-01-01T00:00:00.000000Z"


def fill(db_path: Path, jobs: int, users: int, big_every: int = 1009) -> None:
    """``jobs`` DONE jobs spread over ``users`` uids; every ``big_every``-th has 1 MiB output."""
    big = "x" * (1024 * 1024)
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    rows = ((i % users, "DONE", "python", 0, None, STAMP, STAMP, STAMP, 12, LIMITS, 0, 1,
             big if i % big_every == 0 else "1\n", "", "print(1)", "") for i in range(jobs))
    with conn:
        conn.executemany(
            "INSERT INTO jobs (uid, status, language, exit_code, error, created_at, started_at,"
            " finished_at, duration_ms, limits, truncated, attempts, result, stderr, code, input)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


async def _sequential(url: str, uids: list[int], big: list[float] | None = None
                      ) -> list[float]:
    """Request times (ms); those of pages holding a 1 MiB output also go to ``big``."""
    conn, times = KeepAlive(url), []
    try:
        for uid in uids:
            start = time.monotonic()
            status, body = await conn.request("GET", f"/users/{uid}?limit=100")
            times.append(1000 * (time.monotonic() - start))
            if big is not None and len(body) > 1024 * 1024:
                big.append(times[-1])
            assert status == 200 and len(json.loads(body)) == 100
    finally:
        conn.close()
    return times


async def _load(url: str, users: int, requests: int, concurrent: int,
                big: list[float] | None = None) -> list[float]:
    rng = random.Random(7)
    plans = [[rng.randrange(users) for _ in range(requests)] for _ in range(concurrent)]
    results = await asyncio.gather(*(_sequential(url, plan, big) for plan in plans))
    return [t for times in results for t in times]


def run(jobs: int = 1_000_000, users: int = 10_000, requests: int = 300) -> list[dict]:
    tmp = Path(tempfile.mkdtemp(prefix="orq-bench-bigdb-"))
    try:
        with orq_server(tmp / "data", "open").start():
            pass
        started = time.monotonic()
        fill(tmp / "data" / "orq.db", jobs, users)
        fill_s = time.monotonic() - started
        with orq_server(tmp / "data", "open").start() as orq:
            startup = orq.startup_s
            big: list[float] = []
            alone = asyncio.run(_load(orq.url, users, requests, 1, big))
            mixed = asyncio.run(_load(orq.url, users, requests // 4, 4))
            rss = orq.rss_mb()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    p99_alone, p99_mixed = percentile(alone, 99), percentile(mixed, 99)
    return [{"figure": f"GET /users/<uid>?limit=100, {jobs:,} jobs stored", "baseline": "-",
             "baseline_value": "-", "value": f"p99 {p99_alone:.1f} ms", "ratio": None,
             "target": "p99 <= 15 ms", "met": p99_alone <= 15,
             "detail": (f"{requests} sequential requests over random uids (p50 "
                        f"{percentile(alone, 50):.1f} ms; the {len(big)} pages holding a 1 MiB "
                        f"output: p50 {percentile(big, 50) if big else 0:.1f} ms); "
                        "with 4 concurrent clients p99 "
                        f"{p99_mixed:.1f} ms; 1 job in 1009 has 1 MiB of output; "
                        f"generated in {fill_s:.0f} s")},
            {"figure": f"server RSS after those requests, {jobs:,} jobs", "baseline": "-",
             "baseline_value": "-", "value": f"{rss:.0f} MB", "ratio": None,
             "target": "<= 200 MB", "met": rss <= 200, "detail": "VmRSS of orq-server"},
            {"figure": f"server start-up, {jobs:,} jobs", "baseline": "-",
             "baseline_value": "-", "value": f"{startup:.2f} s", "ratio": None,
             "target": "<= 3 s", "met": startup <= 3,
             "detail": "process start to the first 200 from /healthz"}]


if __name__ == "__main__":
    print(json.dumps(run(jobs=200_000, users=2000), indent=1))
