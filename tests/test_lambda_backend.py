"""orq-server --backend lambda, end to end: the real server reaches a Lambda
Invoke-compatible endpoint on 127.0.0.1 (tests/lambda_fake.py) through boto3's normal
configuration (AWS_ENDPOINT_URL_LAMBDA); that endpoint runs the real handler from the
built zip."""
from __future__ import annotations

import time

import pytest
from conftest import OrqServer
from lambda_support import poll


@pytest.fixture
def lambda_server(server_factory, fake):
    def make(*flags: str) -> OrqServer:
        return server_factory("--auth", "open", "--backend", "lambda", *flags, env=fake.env())
    return make


def test_jobs_run_on_lambda(lambda_server, fake):
    srv = lambda_server()
    health = srv.request("GET", "/healthz").json
    assert (health["backend"], health["capacity"], health["function"]) == ("lambda", 100,
                                                                            "orq-runner")
    job = srv.run("import sys\nprint('hi', sys.stdin.read())", input="from stdin")
    assert (job["status"], job["result"], job["exit_code"], job["error"]) == (
        "DONE", "hi from stdin\n", 0, None)
    assert job["attempts"] == 1 and job["started_at"] and job["duration_ms"] >= 0
    assert job["backend"] == "lambda" and job["usage"]["max_rss_kb"] > 0
    job = srv.run("echo out; echo err >&2; exit 4", language="bash")
    assert (job["status"], job["result"], job["stderr"], job["exit_code"]) == (
        "ERROR", "out\n", "err\n", 4)
    job = srv.run("import time\nprint('partial', flush=True)\ntime.sleep(30)", timeout=1)
    assert (job["status"], job["error"], job["exit_code"], job["result"]) == (
        "ERROR", "timeout", None, "partial\n")
    assert fake.stats()["completed"] == 3


def test_jobs_the_function_cannot_run_are_refused(lambda_server, fake):
    srv = lambda_server()
    for fields in ({"memory_mb": 1024}, {"backend": "local"}):
        resp = srv.request("POST", "/jobs", {"uid": 1, "code": "print(1)", **fields})
        assert resp.status == 400, resp
    assert resp.json["error"]["code"] == "backend_not_configured"
    fake.control("config", MemorySize=2048)  # read again after a restart
    srv.restart()
    assert srv.run("print(2)", memory_mb=1024)["status"] == "DONE"


def test_throttling_keeps_jobs_waiting_then_runs_them(lambda_server, fake):
    srv = lambda_server()
    fake.control("bounce", count=4)
    job_id = srv.submit("print('finally')")
    seen: list[tuple[str, int]] = []

    def final():
        bounced = fake.stats()["bounced"]
        job = srv.request("GET", f"/jobs/{job_id}").json
        seen.append((job["status"], bounced))
        return job if job["status"] in ("DONE", "ERROR", "CANCELLED") else None
    job = poll(final, every=0.1)
    assert (job["status"], job["result"], job["attempts"]) == ("DONE", "finally\n", 1)
    # still WAITING after Lambda had bounced it twice: never RUNNING while throttled
    assert any(status == "WAITING" and bounced >= 2 for status, bounced in seen), seen
    assert not any(status == "RUNNING" and bounced < 4 for status, bounced in seen), seen
    stats = fake.stats()
    assert (stats["bounced"], stats["completed"]) == (4, 1)


def test_function_still_pending_or_updating_keeps_jobs_waiting(lambda_server, fake):
    fake.control("state", state="Pending")  # start() tolerates a function being created
    srv = lambda_server()
    fake.control("bounce", count=2, code="ResourceConflictException", status=409,
                 message="The operation cannot be performed at this time. "
                         "The function is currently in the following state: Pending")
    job_id = srv.submit("print('ready now')")
    poll(lambda: fake.stats()["bounced"] >= 1)
    assert srv.request("GET", f"/jobs/{job_id}").json["status"] == "WAITING"
    job = srv.wait_final(job_id, timeout=90)
    assert (job["status"], job["result"]) == ("DONE", "ready now\n")
    assert fake.stats()["bounced"] == 2


def test_unhandled_function_error_ends_error(lambda_server, fake):
    srv = lambda_server()
    fake.control("fail", count=1)
    job = srv.run("print('never')")
    assert job["status"] == "ERROR" and job["exit_code"] is None
    assert job["error"].startswith("backend: the Lambda function failed (Runtime.ExitError)")
    assert "signal: killed" in job["error"]
    assert srv.run("print('next one is fine')")["status"] == "DONE"


def test_other_aws_errors_end_error(lambda_server, fake):
    srv = lambda_server()
    fake.control("bounce", count=1, code="AccessDeniedException", status=403,
                 message="not allowed to invoke orq-runner")
    job = srv.run("print('never')")
    assert job["status"] == "ERROR"
    assert job["error"] == ("backend: Lambda AccessDeniedException: "
                            "not allowed to invoke orq-runner")


def test_cancel_discards_the_late_result(lambda_server, fake):
    srv = lambda_server()
    job_id = srv.submit("import time\ntime.sleep(3)\nprint('late')")
    srv.wait_status(job_id, "RUNNING", timeout=60)
    resp = srv.request("DELETE", f"/jobs/{job_id}")
    assert resp.status == 200 and resp.json["status"] == "CANCELLED"
    poll(lambda: fake.stats()["completed"] == 1)  # Lambda ran it to the end anyway
    time.sleep(0.5)
    job = srv.request("GET", f"/jobs/{job_id}").json
    assert (job["status"], job["result"], job["error"]) == ("CANCELLED", "", "cancelled")
    assert srv.run("print('slot is free again')")["status"] == "DONE"


def test_concurrency_is_bounded(lambda_server, fake):
    srv = lambda_server("--lambda-concurrency", "2")
    assert srv.request("GET", "/healthz").json["capacity"] == 2
    ids = [srv.submit(f"import time\ntime.sleep(1.5)\nprint({n})") for n in range(5)]
    jobs = [srv.wait_final(job_id, timeout=120) for job_id in ids]
    assert [j["result"] for j in jobs] == [f"{n}\n" for n in range(5)]
    assert fake.stats()["max_running"] == 2


def test_missing_function_refuses_to_start(fake, tmp_path):
    srv = OrqServer(tmp_path / "data", ["--auth", "open", "--backend", "lambda",
                                        "--lambda-function", "no-such-fn"], fake.env())
    with pytest.raises(RuntimeError) as info:
        srv.start()
    message = str(info.value)
    assert "no-such-fn not found" in message and "scripts/deploy.sh lambda" in message
    assert "Traceback" not in message


def test_sigterm_does_not_wait_for_lambda(lambda_server, fake):
    """Lambda cannot be stopped: a stopping server leaves the job RUNNING (it runs again
    after a restart) instead of waiting for the invocation to answer."""
    srv = lambda_server()
    job_id = srv.submit("import time\ntime.sleep(40)", timeout=60)
    srv.wait_status(job_id, "RUNNING", timeout=60)
    began = time.monotonic()
    assert srv.stop() == 0  # conftest kills it (-9) after 15 s
    assert time.monotonic() - began < 15
    assert fake.stats()["completed"] == 0


def test_only_what_the_function_provides_exists(lambda_server, fake):
    srv = lambda_server()
    runtimes = srv.request("GET", "/runtimes").json
    assert {r["language"] for r in runtimes} == {"python", "bash", "sh"}
    assert {r["image"] for r in runtimes} == {"host"}
    assert [i["name"] for i in srv.request("GET", "/images").json] == ["host"]
    for fields, code in (({"image": "deb"}, "unknown_image"), ({"language": "c"},
                                                               "unknown_language")):
        resp = srv.request("POST", "/jobs", {"uid": 1, "code": "x", **fields})
        assert (resp.status, resp.json["error"]["code"]) == (400, code), resp
    assert srv.run("echo $0", language="sh")["result"].endswith("/main.sh\n")
