"""orq's benchmark suite: one command, ratios to baselines measured in the same run.

    .venv/bin/python bench/run.py            # full run (~15-25 min on 2 cores)
    .venv/bin/python bench/run.py --quick    # smaller counts, one repetition (~3 min)
    .venv/bin/python bench/run.py --only http,ws

Writes the results table into docs/PERFORMANCE.md (between the RESULTS markers; the
rest of that file is kept) and the raw figures to bench/results/last.json. A partial run
(--only) replaces its own suites' rows and keeps the others from the last run, and the
table says when each was measured. The exit status is 0 when every figure measured in
this run meets its target.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bigdb
import burst
import e2e
import flood
import http_figures
import images
import runtimes
import ws_latency
from common import BENCH, REPO, RESULTS

DOC = REPO / "docs" / "PERFORMANCE.md"
BEGIN, END = "<!-- RESULTS:BEGIN -->", "<!-- RESULTS:END -->"
SUITES = ("http", "e2e", "ws", "bigdb", "flood", "burst", "images", "runtimes")  # run order


def suites(quick: bool) -> dict:
    """Each suite's run, keyed and ordered as SUITES."""
    if quick:
        return {"http": lambda: http_figures.run(reps=1, seconds=3),
                "e2e": lambda: e2e.run(reps=1, count=100),
                "ws": lambda: ws_latency.run(jobs=30),
                "bigdb": lambda: bigdb.run(jobs=100_000, users=1000, requests=200),
                "flood": lambda: flood.run(count=500),
                "burst": lambda: burst.run(count=1000),  # the figure: never fewer
                "images": lambda: images.run(rounds=50),
                "runtimes": lambda: runtimes.run(reps=3)}
    return {"http": lambda: http_figures.run(reps=3, seconds=5),
            "e2e": lambda: e2e.run(reps=3, count=500),
            "ws": lambda: ws_latency.run(jobs=100),
            "bigdb": lambda: bigdb.run(),
            "flood": lambda: flood.run(),
            "burst": lambda: burst.run(count=1000),
            "images": lambda: images.run(),
            "runtimes": lambda: runtimes.run()}


def table(rows: list[dict], header: str) -> str:
    lines = [header, "",
             ("| figure | baseline (same run) | baseline value | orq | ratio | target | met |"
             " reproduce |"), "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
        lines.append(f"| {r['figure']} | {r['baseline']} | {r['baseline_value']} | {r['value']}"
                     f" | {ratio} | {r['target']} | {'yes' if r['met'] else '**no**'} |"
                     f" `{r['command']}` |")
    lines += ["", "Details:", ""] + [f"- {r['figure']}: {r['detail']}" for r in rows]
    return "\n".join(lines)


def write_doc(text: str) -> None:
    doc = DOC.read_text() if DOC.exists() else f"# Performance\n\n{BEGIN}\n{END}\n"
    if BEGIN not in doc:
        doc += f"\n{BEGIN}\n{END}\n"
    head, rest = doc.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def run_bench_jobs(quick: bool) -> None:
    """The warm-runner figures of bench/bench_jobs.py (it reports itself)."""
    argv = [sys.executable, str(BENCH / "bench_jobs.py")] + (["--quick"] if quick else [])
    print("running", " ".join(argv), flush=True)
    subprocess.run(argv, cwd=REPO, check=False)


def merge(previous: dict, fresh: dict) -> dict:
    """The latest measurement of every suite: a partial run (--only) replaces its own
    suites' rows and keeps the others' from the last run, each with its own date."""
    return {name: fresh[name] if name in fresh else previous[name] for name in SUITES
            if name in fresh or name in previous}


def load_previous() -> dict:
    try:
        data = json.loads((RESULTS / "last.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}  # an older format: a plain list of rows


def header(results: dict) -> str:
    runs: dict[tuple[str, str], list[str]] = {}
    for name, result in results.items():
        runs.setdefault((result["mode"], result["measured"]), []).append(name)
    if len(runs) == 1:
        when = "{} run {}".format(*next(iter(runs)))
    else:
        when = "; ".join(f"{mode} run {date} ({', '.join(names)})"
                         for (mode, date), names in sorted(runs.items(), key=lambda r: r[0][1]))
    return (f"Measured on {platform.node()} ({platform.machine()}, {os.cpu_count() or 1} "
            f"cores, shared): {when}; medians of the repetitions.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, one repetition")
    parser.add_argument("--only", default="", help="comma list of: " + ", ".join(SUITES))
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite PERFORMANCE.md")
    args = parser.parse_args(argv)
    chosen = [s for s in args.only.split(",") if s] or list(SUITES)
    unknown = sorted(set(chosen) - set(SUITES))
    if unknown:
        parser.error(f"unknown suite(s): {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    fresh, mode = {}, "--quick" if args.quick else "full"
    measured = time.strftime("%Y-%m-%d %H:%M", time.localtime())  # when this run started
    for name, fn in suites(args.quick).items():
        if name not in chosen:
            continue
        print(f"== {name}", flush=True)
        rows = []
        for row in fn():
            row["command"] = f".venv/bin/python bench/run.py --only {name}" + \
                (" --quick" if args.quick else "")
            print(json.dumps(row), flush=True)
            rows.append(row)
        fresh[name] = {"measured": measured, "mode": mode, "rows": rows}
    if not args.only:
        run_bench_jobs(args.quick)
    results = merge(load_previous(), fresh)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "last.json").write_text(json.dumps(results, indent=1))
    if not args.no_doc:
        write_doc(table([r for s in results.values() for r in s["rows"]], header(results)))
    return 0 if all(r["met"] for s in fresh.values() for r in s["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
