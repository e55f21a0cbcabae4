"""HTTP throughput figures: GET /jobs/<id>, POST /jobs open, POST /jobs with Basic auth.

Each repetition measures the baseline and orq back to back (same run, same load on
the machine), so the ratio is meaningful even when absolute numbers are noisy.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from statistics import median

from common import (
    PASSWORD,
    basic_header,
    blocker_job,
    hello_server,
    orq_server,
    request,
    request_json,
    wrk,
)


def _job_payload(url: str) -> tuple[int, bytes]:
    job_id = request_json(url + "/jobs", "POST", {"uid": 7, "code": "print(1)", "input": ""})
    job_id = job_id["job_id"]
    status, body = request(f"{url}/jobs/{job_id}")
    assert status == 200, body
    return job_id, body


def _pair(base_url: str, orq_url: str, seconds: float, script: str | None,
          path_base: str, path_orq: str, env_base: dict, env_orq: dict) -> tuple[float, float]:
    base = wrk(base_url + path_base, seconds, script, env=env_base)
    mine = wrk(orq_url + path_orq, seconds, script, env=env_orq)
    if mine["non2xx"] or mine["socket_errors"]:
        raise RuntimeError(f"orq answered errors under load: {mine}")
    return base["rps"], mine["rps"]


def run(reps: int = 3, seconds: float = 5.0) -> list[dict]:
    tmp = Path(tempfile.mkdtemp(prefix="orq-bench-http-"))
    try:
        return _run(tmp, reps, seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(tmp: Path, reps: int, seconds: float) -> list[dict]:
    get_rows, post_rows, auth_rows = [], [], []
    with orq_server(tmp / "open", "open", ["--slots", "1"]).start() as orq:
        job_id, payload = _job_payload(orq.url)
        blocker_job(orq.url)  # the one slot sleeps: POSTed jobs stay WAITING, nothing runs
        with hello_server(payload).start() as hello:
            for _ in range(reps):
                get_rows.append(_pair(hello.url, orq.url, seconds, None, "/jobs/1",
                                      f"/jobs/{job_id}", {}, {}))
                post_rows.append(_pair(hello.url, orq.url, seconds, "post_job.lua", "", "",
                                       {}, {}))
    with orq_server(tmp / "auth", "required", ["--slots", "1"]).start() as orq_auth:
        status, body = request(orq_auth.url + "/users", "POST", {"uid": 1, "password": PASSWORD})
        assert status == 201, body
        auth = {"Authorization": basic_header(1)}
        blocker_job(orq_auth.url, uid=1, headers=auth)
        with orq_server(tmp / "open2", "open", ["--slots", "1"]).start() as orq_open:
            blocker_job(orq_open.url)
            for _ in range(reps):
                auth_rows.append(_pair(
                    orq_open.url, orq_auth.url, seconds, "post_job.lua", "", "",
                    {"ORQ_UID": "1"}, {"ORQ_UID": "1", "ORQ_AUTH": auth["Authorization"]}))
    return [_figure("GET /jobs/<id> req/s (wrk, 32 conns)", "hello-world GET", get_rows, 0.5,
                    f"wrk -t1 -c32 -d{seconds:g}s"),
            _figure("POST /jobs accepted/s (open)", "hello-world POST", post_rows, 0.35,
                    f"wrk -t1 -c32 -d{seconds:g}s -s bench/wrk/post_job.lua"),
            _figure("POST /jobs accepted/s (HTTP Basic)", "POST /jobs open mode", auth_rows, 0.8,
                    "ORQ_AUTH='Basic ...' wrk -t1 -c32 -s bench/wrk/post_job.lua")]


def _figure(name: str, baseline: str, rows: list[tuple[float, float]], target: float,
            tool: str) -> dict:
    ratios = [mine / base for base, mine in rows]
    return {"figure": name, "baseline": baseline,
            "baseline_value": f"{median([b for b, _ in rows]):,.0f}/s",
            "value": f"{median([m for _, m in rows]):,.0f}/s",
            "ratio": median(ratios), "target": f">= {target}x", "met": median(ratios) >= target,
            "detail": f"{tool}; ratios per rep: " + ", ".join(f"{r:.2f}" for r in ratios)}


if __name__ == "__main__":
    print(json.dumps(run(reps=1, seconds=3), indent=1))
