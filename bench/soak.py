"""The long reliability soak (GitHub issue 8): load, fairness, memory, then kill -9 loops.

    .venv/bin/python bench/soak.py                     # 10,000 jobs x 50 users, 8 kill -9
    .venv/bin/python bench/soak.py --jobs 2000 --kills 3   # a quicker pass

Starts its own orq-server (--auth open) on a free 127.0.0.1 port in a temporary data dir,
stops by itself (--max-minutes), prints a summary and exits 1 when a check failed.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import OrqServer
from reliability_support import (
    BLOCKER_UID,
    block_slots,
    check_after_crashes,
    max_spread,
    rss_kb,
    start_order,
    submit_all,
    submit_during_kills,
    wait_all_final,
)


class RssSampler(threading.Thread):
    """The server's resident memory every ``every`` seconds (KiB)."""

    def __init__(self, srv: OrqServer, every: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.srv, self.every, self.samples = srv, every, []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                self.samples.append(rss_kb(self.srv.proc.pid))
            except (OSError, AssertionError):
                pass  # between a kill and a restart


def load_phase(srv: OrqServer, args: argparse.Namespace, report: dict) -> None:
    """All jobs queued behind blockers, then run: fair, unique, complete, flat memory."""
    blockers = block_slots(srv, args.slots)
    per_user = args.jobs // args.users
    work = [(uid, "pass") for uid in range(args.users) for _ in range(per_user)]
    start = time.monotonic()
    ledger = submit_all(srv.port, work, threads=16)
    report["submit_s"] = time.monotonic() - start
    report["submitted_per_s"] = len(ledger.acked) / report["submit_s"]
    sampler = RssSampler(srv)
    sampler.start()
    for job_id in blockers:
        srv.request("DELETE", f"/jobs/{job_id}")
    jobs = [j for j in wait_all_final(srv.port, args.max_minutes * 60)
            if j["uid"] != BLOCKER_UID]
    report["run_s"] = time.monotonic() - start - report["submit_s"]
    sampler.stopped.set()
    check(report, "acknowledged every job", len(ledger.acked) == len(work) and not ledger.refused)
    check(report, "no id answered twice", not ledger.duplicates)
    check(report, "server has exactly the acknowledged jobs",
          {j["job_id"]: j["uid"] for j in jobs} == ledger.acked)
    check(report, "every job DONE once", all(j["status"] == "DONE" and j["attempts"] == 1
                                            for j in jobs))
    report["fair_spread"] = max_spread(start_order(jobs), range(args.users))
    check(report, "fair order (spread <= 2 x slots)", report["fair_spread"] <= 2 * args.slots)
    samples = sampler.samples or [rss_kb(srv.proc.pid)]
    report["rss_mib"] = (samples[0] / 1024, max(samples) / 1024, samples[-1] / 1024)
    half = samples[len(samples) // 2:]
    check(report, "memory flat in the second half (< 32 MiB growth)",
          (max(half) - min(half)) / 1024 < 32)


def crash_phase(srv: OrqServer, args: argparse.Namespace, report: dict) -> None:
    work = [(uid, "pass") for _ in range(200) for uid in range(args.users)]
    ledger, seen = submit_during_kills(srv, work, args.kills, random.Random(args.seed),
                                       threads=8)
    report["crash_acked"], report["crash_refused"] = len(ledger.acked), dict(ledger.refused)
    check(report, "max id seen after each restart only grows", seen == sorted(seen))
    try:
        jobs = check_after_crashes(srv, ledger, timeout=args.max_minutes * 60)
    except AssertionError as exc:
        check(report, f"kill -9 contract ({exc})", False)
        return
    check(report, "kill -9 contract (acked present, final, unique, integrity ok)", True)
    check(report, "ids only grow across restarts", ledger.ids_increase())
    report["interrupted_twice"] = sum(j["error"] == "interrupted" for j in jobs)
    report["rerun"] = sum(j["attempts"] == 2 for j in jobs)


def check(report: dict, name: str, ok: bool) -> None:
    report.setdefault("checks", []).append((name, ok))


def summary(report: dict) -> int:
    print("\n== orq soak ==")
    for key, value in report.items():
        if key != "checks":
            print(f"{key:>20}: {value:.1f}" if isinstance(value, float) else
                  f"{key:>20}: {value}")
    failed = [name for name, ok in report.get("checks", []) if not ok]
    for name, ok in report.get("checks", []):
        print(f"  [{'ok' if ok else 'FAIL'}] {name}")
    print("PASS" if not failed else f"FAIL: {len(failed)} checks")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--max-minutes", type=float, default=45)
    args = parser.parse_args(argv)
    report: dict = {"jobs": args.jobs, "users": args.users, "kills": args.kills}
    with tempfile.TemporaryDirectory(prefix="orq-soak-") as tmp:
        srv = OrqServer(Path(tmp) / "data", ["--auth", "open", "--slots", str(args.slots),
                                             "--max-unfinished-per-user", str(args.jobs)])
        srv.start(timeout=60)
        try:
            load_phase(srv, args, report)
            if srv.proc.poll() is None:
                crash_phase(srv, args, report)
        finally:
            srv.kill()
    return summary(report)


if __name__ == "__main__":
    sys.exit(main())
