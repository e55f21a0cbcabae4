"""Jobs in an image: submit->DONE latency against plain bwrap on the same root file system.

orq: one job at a time, ``POST /jobs?wait=true`` of ``echo hi`` (language sh) in a Debian
image built by mmdebstrap (the tests' cached one), over a kept-alive connection, timed at
the client: HTTP, the database writes, the sandbox started ahead for the job (bwrap has set
up the file system and cgroup and waits; see server/backends/prestart.py), supervision, the
result.
Baseline: a bare loop that starts the same ``sh -c 'echo hi'`` under plain bwrap with the
same options and root file system orq uses (Sandbox.argv), as the same unprivileged user,
one at a time, and reads its output. Rounds alternate between the two to share the noise,
with a pause of PAUSE_S before each measurement. (Back to back, the next job waits for the
sandbox being readied for it: between the two figures below.)
Also, on a second server with ``--warm false`` (every job cold): the same job in the image
and in ``host``, and python ``print(1)`` in the image (started ahead, and cold) and in
``host`` (warm runners), to show what an image costs at start.
"""
from __future__ import annotations

import asyncio
import json
import time
from statistics import median

from common import KeepAlive, image_data, orq_server
from images_support import DEBIAN, debian_template

from server.backends.sandbox import Sandbox, as_nobody, find_bwrap

PAUSE_S = 0.03  # between measurements: a client sending one job at a time, not back to back


async def bare_bwrap(root: str, env: dict[str, str]) -> float:
    """Seconds for one plain bwrap run of ``sh -c 'echo hi'`` in ``root``."""
    argv = Sandbox(find_bwrap(), (), 64).argv({}, env, root=root) + ["sh", "-c", "echo hi"]
    start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE,
                                                **as_nobody())
    out, _ = await proc.communicate()
    took = time.monotonic() - start
    assert out == b"hi\n" and proc.returncode == 0, out
    return took


async def orq_job(conn: KeepAlive, code: str, **fields) -> float:
    """Seconds for one job submitted with ?wait=true over a kept-alive connection."""
    took, status, job = await conn.wait_job({"uid": 1, "code": code, "input": "", **fields})
    assert status == 200 and job["status"] == "DONE" and job["result"] in ("hi\n", "1\n"), job
    return took


async def apart(measurement):
    """One measurement after a pause, so that no measurement bears the work another left
    running (orq readies the next job's sandbox after answering; that must not land in the
    baseline's time, nor the baseline's exit in orq's)."""
    await asyncio.sleep(PAUSE_S)
    return await measurement


async def measure(url: str, cold_url: str, root: str, env: dict[str, str],
                  rounds: int) -> dict[str, list]:
    conn, cold = KeepAlive(url), KeepAlive(cold_url)
    image = DEBIAN[0]
    times: dict[str, list[float]] = {k: [] for k in ("bwrap", "image", "cold", "host",
                                                     "py-image", "py-cold", "py-host")}
    try:
        for _ in range(10):  # warm-up: page cache, cgroup pool, warm runners
            await orq_job(conn, "echo hi", language="sh", image=image)
            await orq_job(cold, "echo hi", language="sh", image=image)
            await bare_bwrap(root, env)
        for _ in range(rounds):
            times["bwrap"].append(await apart(bare_bwrap(root, env)))
            times["image"].append(await apart(orq_job(conn, "echo hi", language="sh",
                                                      image=image)))
            times["cold"].append(await apart(orq_job(cold, "echo hi", language="sh",
                                                     image=image)))
            times["host"].append(await apart(orq_job(cold, "echo hi", language="sh")))
        for _ in range(rounds // 4):
            times["py-image"].append(await apart(orq_job(conn, "print(1)", image=image)))
            times["py-cold"].append(await apart(orq_job(cold, "print(1)", image=image)))
            times["py-host"].append(await apart(orq_job(conn, "print(1)")))
    finally:
        conn.close()
        cold.close()
    return times


def run(rounds: int = 200) -> list[dict]:
    template = debian_template(*DEBIAN)
    with image_data(template, "orq-bench-images-") as (data, root, env, _), \
            image_data(template, "orq-bench-images-cold-") as (cold_data, *_), \
            orq_server(data, "open", ["--slots", "1"]).start() as orq, \
            orq_server(cold_data, "open", ["--slots", "1", "--warm", "false"]).start() as cold:
        times = asyncio.run(measure(orq.url, cold.url, root, env, rounds))
    p50 = {k: 1000 * median(v) for k, v in times.items()}
    ratio = p50["image"] / p50["bwrap"]
    return [
        {"figure": "submit->DONE p50, `echo hi` (sh) in a Debian image, one at a time",
         "baseline": "plain bwrap, same options and root fs, bare loop",
         "baseline_value": f"{p50['bwrap']:.1f} ms", "value": f"{p50['image']:.1f} ms",
         "ratio": ratio, "target": "<= 1.5x", "met": ratio <= 1.5,
         "detail": f"{rounds} rounds, alternating; orq adds {p50['image'] - p50['bwrap']:.1f} "
                   "ms (HTTP, four database round trips, supervision) on a sandbox started "
                   f"ahead; cold (--warm false) {p50['cold']:.1f} ms = "
                   f"{p50['cold'] / p50['bwrap']:.2f}x"},
        {"figure": "cold start in an image vs in host: `echo hi` (sh, both cold, --warm false)",
         "baseline": "the same job in host", "baseline_value": f"{p50['host']:.1f} ms",
         "value": f"{p50['cold']:.1f} ms", "ratio": p50["cold"] / p50["host"],
         "target": "report", "met": True,
         "detail": f"python print(1) in the image: {p50['py-image']:.1f} ms started ahead, "
                   f"{p50['py-cold']:.1f} ms cold; {p50['py-host']:.1f} ms in host "
                   "(warm runners)"},
    ]


if __name__ == "__main__":
    for row in run(rounds=50):
        print(json.dumps(row))
