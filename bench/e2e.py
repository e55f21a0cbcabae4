"""Trivial python jobs completed/s end to end, against a bare spawn loop.

orq: submit N ``print(1)`` jobs over HTTP (16 kept-alive connections), wait until every one is DONE.
Baseline: spawn ``python3 -c 'print(1)'`` N times with the same parallelism (orq's slots)
and read its output, with nothing else around it.

    .venv/bin/python bench/e2e.py                      # one quick repetition (100 jobs)
    .venv/bin/python bench/e2e.py --seccomp-ab         # orq with / without the seccomp filter
    .venv/bin/python bench/e2e.py --seccomp-ab --warm false --reps 5 --count 300
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from statistics import median

from common import KeepAlive, machine_cpu_s, orq_server, request_json
from reliability_support import all_jobs  # tests/ is on sys.path: common put it there

PYTHON = "/usr/bin/python3"  # what orq's config runs python jobs with


async def spawn_loop(count: int, parallel: int,
                     argv: tuple[str, ...] = (PYTHON, "-c", "print(1)")) -> float:
    """Seconds for ``count`` bare spawns of ``argv`` (which must print 1), ``parallel``
    at a time."""
    sem = asyncio.Semaphore(parallel)

    async def one() -> None:
        async with sem:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE)
            out, _ = await proc.communicate()
            assert out == b"1\n" and proc.returncode == 0
    start = time.monotonic()
    await asyncio.gather(*(one() for _ in range(count)))
    return time.monotonic() - start


async def submit_all(url: str, count: int, code: str = "print(1)", in_flight: int = 16,
                     uids: int = 50, headers: dict | None = None) -> list[int]:
    """POST ``count`` jobs over ``in_flight`` kept-alive connections; returns their ids."""
    ids: list[int] = [0] * count
    todo = iter(range(count))

    async def worker() -> None:
        conn = KeepAlive(url)
        try:
            for i in todo:
                body = json.dumps({"uid": i % uids, "code": code, "input": ""}).encode()
                status, data = await conn.request(
                    "POST", "/jobs", body, {"Content-Type": "application/json", **(headers or {})})
                if status != 201:
                    raise RuntimeError(f"POST /jobs: {status} {data[:200]!r}")
                ids[i] = json.loads(data)["job_id"]
        finally:
            conn.close()
    await asyncio.gather(*(worker() for _ in range(min(in_flight, count))))
    return ids


async def wait_idle(url: str, timeout: float = 1200) -> None:
    conn = KeepAlive(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            health = json.loads((await conn.request("GET", "/healthz"))[1])
            if health["waiting"] == 0 and health["running"] == 0:
                return
            await asyncio.sleep(0.02)
    finally:
        conn.close()
    raise RuntimeError("jobs did not finish in time")


def count_status(url: str, job_ids: list[int]) -> dict[str, int]:
    wanted = set(job_ids)
    jobs = all_jobs(urllib.parse.urlparse(url).port)
    return dict(Counter(job["status"] for job in jobs if job["job_id"] in wanted))


async def all_done(url: str, job_ids: list[int]) -> None:
    """Raise unless every job ended DONE; /healthz said idle, and the store must agree
    within a few seconds."""
    counts = count_status(url, job_ids)
    for _ in range(100):
        if counts.get("DONE") == len(job_ids):
            return
        await asyncio.sleep(0.1)
        counts = count_status(url, job_ids)
    raise RuntimeError(f"not every job ended DONE: {counts}")


async def orq_run(url: str, count: int) -> float:
    start = time.monotonic()
    job_ids = await submit_all(url, count)
    await wait_idle(url)
    elapsed = time.monotonic() - start
    await all_done(url, job_ids)
    return elapsed


def run(reps: int = 3, count: int = 500) -> list[dict]:
    slots = os.cpu_count() or 1
    rows, cpu = [], []  # per rep: CPU ms per job of (the machine for the baseline,
    tmp = Path(tempfile.mkdtemp(prefix="orq-bench-e2e-"))  # the machine for orq, orq-server)
    try:
        with orq_server(tmp / "data", "open", ["--slots", str(slots)]).start() as orq:
            asyncio.run(orq_run(orq.url, 20))  # warm-up: first runs pay cold caches
            for _ in range(reps):
                t0 = machine_cpu_s()
                base = count / asyncio.run(spawn_loop(count, slots))
                t1, s1 = machine_cpu_s(), orq.cpu_s()
                mine = count / asyncio.run(orq_run(orq.url, count))
                t2, s2 = machine_cpu_s(), orq.cpu_s()
                rows.append((base, mine))
                cpu.append([1000 * d / count for d in (t1 - t0, t2 - t1, s2 - s1)])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratios = [m / b for b, m in rows]
    base_cpu, orq_cpu, server_cpu = (median([c[i] for c in cpu]) for i in range(3))
    return [{"figure": f"trivial python jobs completed/s ({count} x print(1), all DONE)",
             "baseline": f"bare spawn loop, {slots} parallel",
             "baseline_value": f"{median([b for b, _ in rows]):.1f}/s",
             "value": f"{median([m for _, m in rows]):.1f}/s",
             "ratio": median(ratios), "target": ">= 0.85x", "met": median(ratios) >= 0.85,
             "detail": (f"slots={slots}; ratios per rep: " + ", ".join(f"{r:.2f}" for r in ratios)
                        + f"; busy CPU of the whole machine per job: bare loop {base_cpu:.1f} ms,"
                        f" orq {orq_cpu:.1f} ms (of which the orq-server process "
                        f"{server_cpu:.1f} ms; the rest is the sandboxed jobs, their runners "
                        "and this client)")}]


SYSCALLS = ("import os, time\nn = 200000\nt = time.process_time()\nfor _ in range(n):\n"
            "    os.getppid()\nprint((time.process_time() - t) / n * 1e9)")


def run_seccomp_ab(reps: int = 3, count: int = 300, warm: bool = True) -> list[dict]:
    """The same load on two servers started alike but for ``--seccomp``, in alternating
    repetitions (so both see the same machine): jobs/s, and the CPU time per job of each
    server's whole process tree (less blurred by a busy machine than wall time), with the
    filter over without; and the CPU cost of one system call inside a job (200,000
    getppid), where a filter's cost is paid."""
    slots = os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix="orq-bench-seccomp-"))
    flags = ("true", "false")
    rates, cpu_ms, call_ns = ({f: [] for f in flags} for _ in range(3))
    try:
        servers = {flag: orq_server(tmp / flag, "open", ["--slots", str(slots), "--seccomp",
                                                         flag, "--warm", str(warm).lower()])
                   for flag in flags}
        with servers["true"].start() as on, servers["false"].start() as off:
            for srv in (on, off):
                asyncio.run(orq_run(srv.url, 20))  # warm-up
            for rep in range(reps):
                for flag, srv in (("true", on), ("false", off))[::1 if rep % 2 else -1]:
                    cpu = srv.tree_cpu_s()
                    rates[flag].append(count / asyncio.run(orq_run(srv.url, count)))
                    cpu_ms[flag].append(1000 * (srv.tree_cpu_s() - cpu) / count)
                    call_ns[flag].append(float(request_json(
                        srv.url + "/jobs?wait=true", "POST",
                        {"uid": 1, "code": SYSCALLS, "input": ""})["result"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    path = "warm" if warm else "cold"

    def row(figure: str, values: dict, unit: str, higher_is_better: bool, detail: str) -> dict:
        ratios = [a / b for a, b in zip(values["true"], values["false"], strict=True)]
        ratio = median(ratios)
        return {"figure": figure, "baseline": "the same server with --seccomp false",
                "baseline_value": f"{median(values['false']):.1f}{unit}",
                "value": f"{median(values['true']):.1f}{unit}", "ratio": ratio,
                "target": ">= 0.95x" if higher_is_better else "<= 1.05x",
                "met": ratio >= 0.95 if higher_is_better else ratio <= 1.05,
                "detail": f"slots={slots}; {reps} alternating reps; {detail}; ratios per rep: "
                          + ", ".join(f"{r:.2f}" for r in ratios)}
    return [row(f"trivial python jobs/s ({count} x print(1), {path} path) with the seccomp "
                "filter", rates, "/s", True, "wall time, blurred by whatever else runs"),
            row(f"CPU per trivial job ({path} path) with the seccomp filter", cpu_ms, " ms",
                False, "user+system time of the server and every process below it"),
            row(f"one system call in a job (getppid, {path} path) with the seccomp filter",
                call_ns, " ns", False, "CPU time per call in a 200,000-call loop")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seccomp-ab", action="store_true",
                        help="measure orq with and without its seccomp filter, in one run")
    parser.add_argument("--warm", default="true", choices=("true", "false"),
                        help="with --seccomp-ab: the warm (default) or the cold path")
    args = parser.parse_args(argv)
    if args.seccomp_ab:
        rows = run_seccomp_ab(args.reps, args.count, args.warm == "true")
    else:
        rows = run(reps=args.reps, count=args.count)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
