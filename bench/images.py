"""Jobs in an image: submit->DONE latency against plain bwrap on the same root file system.

orq: one job at a time, ``POST /jobs?wait=true`` of ``echo hi`` (language sh) in a Debian
image built by mmdebstrap (the tests' cached one), over a kept-alive connection, timed at
the client: HTTP, the database
writes, cgroup, rlimits, bwrap, supervision, the result.
Baseline: a bare loop that starts the same ``sh -c 'echo hi'`` under plain bwrap with the
same options and root file system orq uses (Sandbox.argv), as the same unprivileged user,
one at a time, and reads its output. Rounds alternate between the two to share the noise.
Also: the same job in ``host`` (cold path, like every sh job) and python ``print(1)`` in the
image (cold) and in ``host`` (warm runners), to show what an image costs at start.
"""
from __future__ import annotations

import asyncio
import json
import time
from statistics import median

from common import KeepAlive, image_data, orq_server
from images_support import DEBIAN, debian_template

from server.backends.sandbox import Sandbox, as_unprivileged, find_bwrap


async def bare_bwrap(root: str, env: dict[str, str]) -> float:
    """Seconds for one plain bwrap run of ``sh -c 'echo hi'`` in ``root``."""
    argv = Sandbox(find_bwrap(), (), 64).argv({}, env, root=root) + ["sh", "-c", "echo hi"]
    start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE,
                                                **as_unprivileged())
    out, _ = await proc.communicate()
    took = time.monotonic() - start
    assert out == b"hi\n" and proc.returncode == 0, out
    return took


async def orq_job(conn: KeepAlive, code: str, **fields) -> float:
    """Seconds for one job submitted with ?wait=true over a kept-alive connection."""
    body = json.dumps({"uid": 1, "code": code, "input": "", **fields}).encode()
    start = time.monotonic()
    status, data = await conn.request("POST", "/jobs?wait=true", body,
                                      {"Content-Type": "application/json"})
    took = time.monotonic() - start
    job = json.loads(data)
    assert status == 200 and job["status"] == "DONE" and job["result"] in ("hi\n", "1\n"), job
    return took


async def measure(url: str, root: str, env: dict[str, str], rounds: int) -> dict[str, list]:
    conn = KeepAlive(url)
    image = DEBIAN[0]
    times: dict[str, list[float]] = {k: [] for k in
                                     ("bwrap", "image", "host", "py-image", "py-host")}
    try:
        for _ in range(10):  # warm-up: page cache, cgroup pool, warm runners
            await orq_job(conn, "echo hi", language="sh", image=image)
            await bare_bwrap(root, env)
        for _ in range(rounds):
            times["bwrap"].append(await bare_bwrap(root, env))
            times["image"].append(await orq_job(conn, "echo hi", language="sh", image=image))
            times["host"].append(await orq_job(conn, "echo hi", language="sh"))
        for _ in range(rounds // 4):
            times["py-image"].append(await orq_job(conn, "print(1)", image=image))
            times["py-host"].append(await orq_job(conn, "print(1)"))
    finally:
        conn.close()
    return times


def run(rounds: int = 200) -> list[dict]:
    image = image_data(debian_template(*DEBIAN), "orq-bench-images-")
    with image as (data, root, env, _), orq_server(data, "open", ["--slots", "1"]).start() as orq:
        times = asyncio.run(measure(orq.url, root, env, rounds))
    p50 = {k: 1000 * median(v) for k, v in times.items()}
    ratio = p50["image"] / p50["bwrap"]
    return [
        {"figure": "submit->DONE p50, `echo hi` (sh) in a Debian image, one at a time",
         "baseline": "plain bwrap, same options and root fs, bare loop",
         "baseline_value": f"{p50['bwrap']:.1f} ms", "value": f"{p50['image']:.1f} ms",
         "ratio": ratio, "target": "<= 1.5x", "met": ratio <= 1.5,
         "detail": f"{rounds} rounds, alternating; orq adds {p50['image'] - p50['bwrap']:.1f} "
                   "ms (HTTP, four database round trips, cgroup, prlimit, supervision)"},
        {"figure": "cold start in an image vs in host: `echo hi` (sh, both cold)",
         "baseline": "the same job in host", "baseline_value": f"{p50['host']:.1f} ms",
         "value": f"{p50['image']:.1f} ms", "ratio": p50["image"] / p50["host"],
         "target": "report", "met": True,
         "detail": f"python print(1): {p50['py-image']:.1f} ms in the image (cold) vs "
                   f"{p50['py-host']:.1f} ms in host (warm runners)"},
    ]


if __name__ == "__main__":
    for row in run(rounds=50):
        print(json.dumps(row))
