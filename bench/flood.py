"""10,000 jobs queued at once: all finish, none lost, /healthz stays fast meanwhile."""
from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path

from common import orq_server, percentile
from e2e import count_status, submit_all, wait_idle
from tornado.httpclient import AsyncHTTPClient


async def _probe(url: str, stop: asyncio.Event, times: list[float]) -> None:
    client = AsyncHTTPClient(force_instance=True)
    while not stop.is_set():
        start = time.monotonic()
        await client.fetch(url + "/healthz")
        times.append(1000 * (time.monotonic() - start))
        await asyncio.sleep(0.02)
    client.close()


async def measure(url: str, count: int) -> dict:
    stop, times = asyncio.Event(), []
    probe = asyncio.ensure_future(_probe(url, stop, times))
    start = time.monotonic()
    job_ids = await submit_all(url, count, in_flight=32, uids=20)
    accepted_s = time.monotonic() - start
    await wait_idle(url, timeout=3600)
    elapsed = time.monotonic() - start
    stop.set()
    await probe
    return {"job_ids": job_ids, "accepted_s": accepted_s, "elapsed": elapsed, "times": times}


def run(count: int = 10_000) -> list[dict]:
    tmp = Path(tempfile.mkdtemp(prefix="orq-bench-flood-"))
    try:
        with orq_server(tmp / "data", "open").start() as orq:
            stats = asyncio.run(measure(orq.url, count))
            counts = count_status(orq.url, stats["job_ids"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    p99 = percentile(stats["times"], 99)
    unique = len(set(stats["job_ids"])) == count
    met = counts.get("DONE") == count and unique and p99 <= 50
    return [{"figure": f"{count:,} jobs queued at once", "baseline": "-", "baseline_value": "-",
             "value": f"{counts.get('DONE', 0):,} DONE; /healthz p99 {p99:.1f} ms",
             "ratio": None, "target": "all finish; /healthz p99 <= 50 ms", "met": met,
             "detail": (f"accepted in {stats['accepted_s']:.1f} s, all final after "
                        f"{stats['elapsed']:.0f} s; statuses {counts}; "
                        f"{len(stats['times'])} /healthz probes, p50 "
                        f"{percentile(stats['times'], 50):.1f} ms")}]


if __name__ == "__main__":
    print(json.dumps(run(count=300), indent=1))
