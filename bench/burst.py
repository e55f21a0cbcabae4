"""Bursting to Lambda: 1,000 ``time.sleep(0.5)`` jobs, 2 local slots + 200 Lambda slots.

Lambda is tests/lambda_fake.py with 50 ms of injected latency per invocation and 200
execution environments started in advance (provisioned concurrency). Figures, each run
once with the real handler and once with the fake's remote model (``--remote-model``:
the first invocation of a job runs for real, the identical rest are answered after the
same wall time without running anything on this machine, as Lambda's compute runs on
other machines; everything orq does stays real):

- wall time from the first submit to the last job final, against the ideal
  (1,000 x 0.5 s / 202 slots) and against the fake driven directly with the same events,
  200 at a time (the baseline measured in the same run: what this machine, the fake and
  the handler allow without orq);
- the orq-server process's CPU (cores) and RSS while 200 invocations are in flight.

    .venv/bin/python bench/burst.py [--count N]
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from common import REPO, KeepAlive, machine_cpu_s, orq_server
from e2e import all_done, submit_all

CODE = "import time\ntime.sleep(0.5)"
SLOTS, CONCURRENCY, LATENCY_S, JOB_S = 2, 200, 0.05, 0.5


class Fake:
    """tests/lambda_fake.py in a subprocess."""

    def __init__(self, workdir: Path, zip_path: Path, remote_model: bool) -> None:
        argv = [sys.executable, str(REPO / "tests/lambda_fake.py"), "--zip", str(zip_path),
                "--workdir", str(workdir), "--latency", str(LATENCY_S), "--prewarm",
                str(CONCURRENCY)] + (["--remote-model"] if remote_model else [])
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

    def env(self) -> dict:
        return {"AWS_ENDPOINT_URL_LAMBDA": self.url, "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
                "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def cpu_s(self) -> float:
        """CPU seconds of the fake, its environments and the jobs they ran, so far."""
        with urllib.request.urlopen(self.url + "/_fake/stats", timeout=30) as resp:
            return json.loads(resp.read())["cpu_s"]


def direct(fake: Fake, count: int) -> float:
    """Seconds for ``count`` invocations sent straight to the fake, CONCURRENCY at a time."""
    todo = iter(range(count))
    lock = threading.Lock()
    errors: list[str] = []

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=120)
        while True:
            with lock:
                n = next(todo, None)
            if n is None:
                break
            body = json.dumps({"job_id": n, "language": "python", "code": CODE, "input": "",
                               "timeout_s": 10.0, "memory_mb": 256, "output_cap": 1048576})
            conn.request("POST", "/2015-03-31/functions/orq-runner/invocations", body)
            resp = conn.getresponse()
            answer = json.loads(resp.read())
            if resp.status != 200 or answer.get("exit_code") != 0:
                errors.append(str(answer)[:200])
        conn.close()
    threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} direct invocations failed, e.g. {errors[0]}")
    return time.monotonic() - began


async def through_orq(server, count: int) -> dict:
    """Submit ``count`` jobs, sample the server while they run; the figures."""
    samples: list[tuple[float, int, float, float]] = []  # time, lambda in flight, cpu, rss
    done = asyncio.Event()

    async def sample() -> None:
        conn = KeepAlive(server.url)
        while not done.is_set():
            health = json.loads((await conn.request("GET", "/healthz"))[1])
            samples.append((time.monotonic(), health["backends"]["lambda"]["running"],
                            server.cpu_s(), server.rss_mb()))
            if health["waiting"] == 0 and health["running"] == 0 and len(samples) > 10:
                done.set()
            await asyncio.sleep(0.05)
        conn.close()
    began, cpu0, machine0 = time.monotonic(), server.cpu_s(), machine_cpu_s()
    sampler = asyncio.ensure_future(sample())
    ids = await submit_all(server.url, count, code=CODE, uids=1)
    await sampler
    wall = samples[-1][0] - began
    await all_done(server.url, ids)
    peak = max(s[1] for s in samples)
    full = [s for s in samples if s[1] >= peak * 0.95]  # while (nearly) the most were out
    window = full[-1][0] - full[0][0] if len(full) >= 2 else 0.0
    return {"wall": wall, "peak": peak, "window_s": window,
            "cores_in_flight": (full[-1][2] - full[0][2]) / window if window > 0 else None,
            "rss_mb": max(s[3] for s in samples),
            "cores_overall": (server.cpu_s() - cpu0) / wall,
            "machine_cores": (machine_cpu_s() - machine0) / wall}


def one(tmp: Path, zip_path: Path, count: int, remote_model: bool) -> dict:
    fake = Fake(tmp / f"fake-{remote_model}", zip_path, remote_model)
    try:
        direct(fake, CONCURRENCY)  # warm-up, and the remote model learns the job
        fake0 = fake.cpu_s()
        base = direct(fake, count)
        fake1 = fake.cpu_s()
        extra = ["--slots", str(SLOTS), "--burst", "lambda", "--lambda-concurrency",
                 str(CONCURRENCY)]
        with orq_server(tmp / f"data-{remote_model}", "open", extra, fake.env()).start() \
                as server:
            asyncio.run(through_orq(server, SLOTS + 10))  # warm-up: boto3, connections
            fake2 = fake.cpu_s()
            figures = asyncio.run(through_orq(server, count))
            fake3 = fake.cpu_s()
    finally:
        fake.stop()
    return {"baseline_s": base, "fake_ms_direct": 1000 * (fake1 - fake0) / count,
            "fake_ms_orq": 1000 * (fake3 - fake2) / count, **figures}


def rows_for(label: str, fig: dict, count: int) -> list[dict]:
    ideal = count * JOB_S / (SLOTS + CONCURRENCY)
    wall, cores, rss, peak = fig["wall"], fig["cores_in_flight"], fig["rss_mb"], fig["peak"]
    detail = (f"{label}; the fake alone (same events, {CONCURRENCY} at a time, no orq): "
              f"{fig['baseline_s']:.2f} s, orq / that {wall / fig['baseline_s']:.2f}x; "
              f"CPU of the fake, its environments and the jobs they ran: "
              f"{fig['fake_ms_direct']:.1f} ms per invocation alone, {fig['fake_ms_orq']:.1f} "
              f"ms with orq; orq-server {fig['cores_overall']:.2f} cores over the run, the "
              f"whole machine {fig['machine_cores']:.2f} of 2 (shared with other users); at "
              f"most {peak} Lambda jobs in flight ({fig['window_s']:.1f} s within 5% of that)")
    reached = peak >= CONCURRENCY
    return [
        {"figure": f"{count} x sleep(0.5), {SLOTS} local + {CONCURRENCY} Lambda slots, wall "
                   f"({label})",
         "baseline": f"ideal {count} x {JOB_S} s / {SLOTS + CONCURRENCY} slots",
         "baseline_value": f"{ideal:.2f} s", "value": f"{wall:.2f} s", "ratio": wall / ideal,
         "target": "<= 1.5x", "met": wall / ideal <= 1.5, "detail": detail},
        {"figure": f"orq-server CPU while {CONCURRENCY} are in flight ({label})",
         "baseline": "one core", "baseline_value": "1.00",
         "value": ("-" if cores is None else f"{cores:.2f} cores")
                  + ("" if reached else f" (at most {peak} were in flight)"),
         "ratio": cores, "target": "< 1 core",
         "met": reached and cores is not None and cores < 1, "detail": detail},
        {"figure": f"orq-server RSS while {CONCURRENCY} are in flight ({label})",
         "baseline": "300 MB", "baseline_value": "300 MB", "value": f"{rss:.0f} MB",
         "ratio": rss / 300, "target": "< 300 MB", "met": reached and rss < 300,
         "detail": detail}]


def run(count: int = 1000) -> list[dict]:
    tmp = Path(tempfile.mkdtemp(prefix="orq-bench-burst-"))
    try:
        zip_path = tmp / "runner.zip"
        subprocess.run([sys.executable, "-m", "server.deploy_lambda", "--package-only",
                        str(zip_path)], cwd=REPO, check=True, capture_output=True)
        real = one(tmp, zip_path, count, remote_model=False)
        model = one(tmp, zip_path, count, remote_model=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return (rows_for("real handler: every job's python runs on this machine", real, count)
            + rows_for("remote model: the jobs' processes do not run here", model, count))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    for row in run(parser.parse_args().count):
        print(json.dumps(row))
