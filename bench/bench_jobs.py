"""Warm runners vs. their baselines, measured in the same run (issue 9).

    .venv/bin/python bench/bench_jobs.py [--jobs 500 | --quick] [--append docs/PERFORMANCE.md]

1. throughput: N x ``print(1)`` end to end through a warm server, against a bare
   ``python3 -c 'print(1)'`` spawn loop at the same parallelism (target >= 3x);
2. latency: submit -> DONE of one trivial job on an idle server (POST ?wait=true),
   p50 warm against p50 cold (target <= 0.25x);
3. memory: RSS (and PSS) of the server and everything below it, at the default slot
   count (target <= 300 MB);
4. bash: a bare ``bash -c`` spawn against python's, and bash job latency on the cold path,
   to decide whether warming bash would pay.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from conftest import OrqServer
from e2e import PYTHON, spawn_loop

from server.backends.local import SPARE_RUNNERS

SLOTS = os.cpu_count() or 1
CLIENTS = 16  # concurrent ?wait=true submitters in throughput()


def spawns_per_s(argv: tuple[str, ...], n: int) -> float:
    """Jobs per second of a bare spawn loop, SLOTS at a time."""
    return n / asyncio.run(spawn_loop(n, SLOTS, argv))


def server(warm: bool, tmp: Path) -> OrqServer:
    return OrqServer(tmp / f"data-{warm}", ["--auth", "open", "--warm", str(warm).lower()]).start()


def throughput(srv: OrqServer, n: int) -> float:
    """Jobs per second from the first submit to the last DONE (POST ?wait=true per job)."""
    def one(_):
        job = srv.run("print(1)")
        assert job["status"] == "DONE", job
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(one, range(n)))
    return n / (time.perf_counter() - start)


def latency_p50(srv: OrqServer, language: str = "python") -> float:
    """Median ms of 40 submit -> DONE round trips (POST ?wait=true), one at a time."""
    code = "print(1)" if language == "python" else "echo 1"
    times = []
    for _ in range(40):
        start = time.perf_counter()
        job = srv.run(code, language=language)
        times.append(time.perf_counter() - start)
        assert job["status"] == "DONE", job
    return statistics.median(times) * 1000


def memory_mb(root: int) -> tuple[float, float]:
    """RSS and PSS (MB) summed over ``root`` and its descendants."""
    pids, todo = [root], [root]
    while todo:
        pid = todo.pop()
        try:
            kids = [int(k) for t in Path(f"/proc/{pid}/task").iterdir()
                    for k in (t / "children").read_text().split()]
        except OSError:
            kids = []
        pids += kids
        todo += kids
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass
    return rss / 1024, pss / 1024


def measure(n: int) -> list[tuple[str, str, str, str, str]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        warm, cold = server(True, Path(tmp)), server(False, Path(tmp))
        try:
            assert warm.request("GET", "/healthz").json["warm"] is True, warm.log()
            warm.run("print(0)"), cold.run("print(0)")
            bare = spawns_per_s((PYTHON, "-c", "print(1)"), n)
            warm_tp = throughput(warm, n)
            cold_tp = throughput(cold, max(n // 5, 50))
            rows.append((f"trivial python jobs/s ({n} x print(1))", f"{warm_tp:.0f}",
                         (f"bare python3 -c spawn loop x{SLOTS}: {bare:.0f}/s (cold orq: "
                         f"{cold_tp:.0f}/s)"), f"{warm_tp / bare:.2f}x", ">= 3x"))
            w50, c50 = latency_p50(warm), latency_p50(cold)
            rows.append(("submit -> DONE p50, idle server", f"{w50:.1f} ms",
                         f"cold path: {c50:.1f} ms", f"{w50 / c50:.2f}x", "<= 0.25x"))
            rss, pss = memory_mb(warm.proc.pid)
            rows.append((f"server + {SLOTS + SPARE_RUNNERS} runners ({SLOTS} slots + a spare) memory", f"RSS {rss:.0f} MB", f"PSS {pss:.0f} MB",
                         "-", "<= 300 MB"))
            bare_bash = spawns_per_s(("/bin/bash", "-c", "echo 1"), n)
            b50 = latency_p50(warm, language="bash")
            rows.append(("bash job p50 (cold path)", f"{b50:.1f} ms",
                         f"bare bash -c spawn loop: {bare_bash:.0f}/s vs python {bare:.0f}/s",
                         f"{b50 / w50:.2f}x warm python", "info"))
        finally:
            warm.kill()
            cold.kill()
    return rows


def table(rows) -> str:
    out = ["| measure | warm | baseline (same run) | ratio | target |", "|---|---|---|---|---|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="200 jobs instead of 500")
    parser.add_argument("--append", type=Path, help="append the table to this markdown file")
    args = parser.parse_args()
    if args.quick:
        args.jobs = 200
    text = table(measure(args.jobs))
    print(text)
    if args.append:
        stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
        head = "" if "## Warm runners" in args.append.read_text() else \
            "\n## Warm runners\n\nDesign, analysis and what limits these: docs/WARM.md.\n"
        with args.append.open("a") as f:
            f.write(f"{head}\n### {stamp} UTC, {os.cpu_count()} CPUs, "
                    f"`bench/bench_jobs.py --jobs {args.jobs}`\n\n{text}\n")


if __name__ == "__main__":
    main()
