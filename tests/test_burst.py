"""orq-server --backend local --burst lambda, end to end: local sandboxes while there is
room, the real Lambda handler behind tests/lambda_fake.py for the rest (SPEC section 10)."""
from __future__ import annotations

import collections
import threading
import time
from datetime import datetime

import pytest
from conftest import FINAL
from lambda_support import FakeLambda, poll
from reliability_support import start_order
from test_openapi import OMIT, conforms, document_allows_exactly_what_is_accepted

SLEEP = "import time\ntime.sleep({s})\nprint({n})"


@pytest.fixture
def burst_server(server_factory, fake):
    def make(*flags: str):
        return server_factory("--auth", "open", "--slots", "2", "--burst", "lambda", *flags,
                              env=fake.env())
    return make


def fill_local(srv, seconds: float = 30) -> list[int]:
    """Both local slots busy with sleeping jobs (pinned, so they never burst)."""
    ids = [srv.submit(f"import time; time.sleep({seconds})", uid=99, timeout=seconds + 5,
                      backend="local") for _ in range(2)]
    for job_id in ids:
        srv.wait_status(job_id, "RUNNING")
    return ids


def get(srv, job_id: int) -> dict:
    return srv.request("GET", f"/jobs/{job_id}").json


def most_at_once(jobs: list[dict]) -> int:
    """The most of these jobs whose runs (started_at .. finished_at) overlapped."""
    edges = sorted((datetime.fromisoformat(j[k]), +1 if k == "started_at" else -1)
                   for j in jobs for k in ("started_at", "finished_at"))
    most = now = 0
    for _, step in edges:  # at a tie the end sorts first (-1 < +1): a slot handed on
        now += step
        most = max(most, now)
    return most


class LocalPeak(threading.Thread):
    """Polls /healthz: the most jobs the local backend held at once."""

    def __init__(self, srv) -> None:
        super().__init__(daemon=True)
        self.srv, self.peak, self.polls, self.stopped = srv, 0, 0, threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            local = self.srv.request("GET", "/healthz").json["backends"]["local"]
            self.peak, self.polls = max(self.peak, local["running"]), self.polls + 1
            time.sleep(0.02)


def test_forty_one_second_jobs_use_both_backends(burst_server, fake):
    srv = burst_server()
    health = srv.request("GET", "/healthz").json
    assert health["burst"] == "lambda"
    assert {n: b["capacity"] for n, b in health["backends"].items()} == {"local": 2,
                                                                        "lambda": 100}
    peak = LocalPeak(srv)
    peak.start()
    began = time.monotonic()
    ids = [srv.submit(SLEEP.format(s=1, n=n)) for n in range(40)]
    jobs = [srv.wait_final(job_id) for job_id in ids]
    elapsed = time.monotonic() - began
    peak.stopped.set()
    peak.join()
    assert [(j["status"], j["result"]) for j in jobs] == [("DONE", f"{n}\n") for n in range(40)]
    where = collections.Counter(j["backend"] for j in jobs)
    assert where["local"] >= 2 and where["lambda"] >= 20, where
    assert fake.stats()["completed"] == where["lambda"]
    # 2 local slots alone need 20 s: far less proves the rest ran on Lambda alongside
    assert elapsed < 12, f"{elapsed:.1f}s"
    assert most_at_once([j for j in jobs if j["backend"] == "local"]) <= 2
    assert peak.polls > 10 and peak.peak == 2


def test_jobs_the_function_cannot_run_wait_for_a_local_slot(burst_server, fake):
    fake.control("config", Timeout=20)  # jobs of up to 17 s fit (the handler's margin)
    srv = burst_server()
    blockers = fill_local(srv)
    big = srv.submit("print('big')", memory_mb=1024)  # the function has 512 MB
    slow = srv.submit("print('slow')", timeout=18)
    small = srv.submit("print('small')")
    assert srv.wait_final(small)["backend"] == "lambda"
    time.sleep(1)
    for job_id in (big, slow):
        job = get(srv, job_id)
        assert (job["status"], job["backend"]) == ("WAITING", "local"), job
    for job_id in blockers:
        srv.request("DELETE", f"/jobs/{job_id}")
    for job_id, out in ((big, "big\n"), (slow, "slow\n")):
        job = srv.wait_final(job_id)
        assert (job["status"], job["result"], job["backend"]) == ("DONE", out, "local")
    assert fake.stats()["completed"] == 1


def test_a_changed_function_configuration_is_read_again(burst_server, fake):
    srv = burst_server("--lambda-refresh-s", "0.5")
    fill_local(srv)
    big = srv.submit("print('big')", memory_mb=1024)
    time.sleep(1)
    assert get(srv, big)["status"] == "WAITING"
    fake.control("config", MemorySize=2048)
    job = srv.wait_final(big, timeout=30)
    assert (job["status"], job["backend"]) == ("DONE", "lambda")
    lam = srv.request("GET", "/healthz").json["backends"]["lambda"]
    assert lam["memory_mb"] == 2048


def test_pinned_jobs_run_where_they_asked(burst_server, fake):
    srv = burst_server()
    resp = srv.request("POST", "/jobs?wait=true", {"uid": 1, "code": "print('there')",
                                                  "backend": "lambda"})
    conforms("POST", "/jobs", resp)
    job = resp.json  # local slots are free, still Lambda
    assert (job["status"], job["result"], job["backend"]) == ("DONE", "there\n", "lambda")
    conforms("GET", "/healthz", srv.request("GET", "/healthz"))
    blockers = fill_local(srv, 3)
    here = srv.submit("print('here')", backend="local")
    assert get(srv, here)["backend"] == "local"
    assert srv.wait_final(srv.submit("print(1)"))["backend"] == "lambda"
    assert get(srv, here)["status"] == "WAITING"
    job = srv.wait_final(here)
    assert (job["status"], job["backend"]) == ("DONE", "local")
    assert job["started_at"] >= min(srv.wait_final(b)["finished_at"] for b in blockers)
    resp = srv.request("POST", "/jobs", {"uid": 1, "code": "1", "backend": "lambda",
                                         "memory_mb": 1024})
    assert resp.status == 400 and resp.json["error"]["code"] == "backend_cannot_run"
    assert "at most 448 MB" in resp.json["error"]["message"]
    conforms("POST", "/jobs", resp)
    for bad in ("gpu", 5, True):
        resp = srv.request("POST", "/jobs", {"uid": 1, "code": "1", "backend": bad})
        assert resp.status == 400 and resp.json["error"]["code"] == "invalid_field", bad
    assert fake.stats()["completed"] == 2


def test_pinning_a_backend_the_server_does_not_run(open_server):
    resp = open_server.request("POST", "/jobs", {"uid": 1, "code": "1", "backend": "lambda"})
    assert resp.status == 400 and resp.json["error"]["code"] == "backend_not_configured"
    job = open_server.run("print('local')", backend="local")
    assert (job["status"], job["backend"]) == ("DONE", "local")


def test_cancel_of_a_lambda_job(burst_server, fake):
    srv = burst_server()
    job_id = srv.submit("import time\ntime.sleep(2)\nprint('late')", backend="lambda")
    srv.wait_status(job_id, "RUNNING")
    job = srv.request("DELETE", f"/jobs/{job_id}").json
    assert (job["status"], job["error"], job["backend"]) == ("CANCELLED", "cancelled", "lambda")
    poll(lambda: fake.stats()["completed"] == 1)  # Lambda ran it to its end anyway
    # what it used is still reported once the invocation answers; nothing else changes
    job = poll(lambda: (j := get(srv, job_id))["usage"] and j, timeout=10)
    assert (job["status"], job["result"], job["exit_code"]) == ("CANCELLED", "", None)
    assert job["usage"]["max_rss_kb"] > 0
    assert srv.run("print('next')", backend="lambda")["status"] == "DONE"


def test_throttled_burst_job_takes_a_local_slot_that_frees_first(burst_server, fake):
    srv = burst_server()
    fill_local(srv, 3)
    fake.control("bounce", count=1000)  # Lambda throttles every invocation
    job_id = srv.submit("print('somewhere')")
    poll(lambda: fake.stats()["bounced"] >= 1)
    health = srv.request("GET", "/healthz").json
    assert health["backends"]["lambda"]["paused_s"] > 0
    assert get(srv, job_id)["status"] == "WAITING"
    job = srv.wait_final(job_id)
    assert (job["status"], job["backend"], job["attempts"]) == ("DONE", "local", 1)
    assert fake.stats()["completed"] == 0


def test_throttled_burst_job_is_retried_on_lambda(burst_server, fake):
    srv = burst_server()
    fill_local(srv)
    fake.control("bounce", count=3)
    job_id = srv.submit("print('retried')")
    job = srv.wait_final(job_id, timeout=30)
    assert (job["status"], job["result"], job["backend"]) == ("DONE", "retried\n", "lambda")
    assert fake.stats()["bounced"] == 3


def test_many_jobs_against_a_lower_lambda_limit(server_factory, lambda_zip, tmp_path):
    """Lambda's own limit (5) below orq's (20): throttled jobs wait and all finish."""
    fake = FakeLambda.start(lambda_zip, tmp_path / "fake", "--concurrency-limit", "5")
    try:
        srv = server_factory("--auth", "open", "--slots", "2", "--burst", "lambda",
                             "--lambda-concurrency", "20", env=fake.env())
        ids = [srv.submit(SLEEP.format(s=0.5, n=n)) for n in range(30)]
        jobs = [srv.wait_final(job_id, timeout=120) for job_id in ids]
        assert [j["result"] for j in jobs] == [f"{n}\n" for n in range(30)]
        stats = fake.stats()
        assert stats["throttled"] > 0 and stats["max_running"] <= 5
        assert {j["attempts"] for j in jobs} == {1}
    finally:
        fake.stop()


def test_users_take_turns_across_both_backends(burst_server, fake):
    srv = burst_server("--lambda-concurrency", "1")
    fill_local(srv)
    hog = [srv.submit(SLEEP.format(s=0.3, n=n), uid=1) for n in range(8)]
    single = srv.submit("print('mine')", uid=2)
    srv.wait_final(single)
    jobs = [srv.request("GET", f"/jobs/{i}").json for i in [*hog, single]]
    order = start_order(jobs)
    assert order.index(2) <= 2, order  # user 1's backlog did not go first
    for job_id in hog:
        srv.request("DELETE", f"/jobs/{job_id}")


def test_kill9_with_jobs_on_both_backends(burst_server, fake):
    srv = burst_server()
    code = "import time\nprint('attempt', flush=True)\ntime.sleep(2)\nprint('end')"
    ids = [srv.submit(code) for _ in range(4)]
    for job_id in ids:
        srv.wait_status(job_id, "RUNNING")
    assert sorted(get(srv, i)["backend"] for i in ids) == ["lambda", "lambda", "local", "local"]
    pinned = srv.submit("print('pinned')", backend="local")
    srv.kill()
    srv.start()
    for job_id in ids:
        job = srv.wait_final(job_id)
        assert (job["status"], job["attempts"], job["result"]) == ("DONE", 2, "attempt\nend\n")
    job = srv.wait_final(pinned)
    assert (job["status"], job["backend"], job["attempts"]) == ("DONE", "local", 1)
    assert all(get(srv, i)["status"] in FINAL for i in ids)


def test_document_declares_exactly_the_jobs_lambda_takes_when_pinned(burst_server, fake):
    """Pinned to the function, a job beyond its memory or timeout, with several files or in
    a language it lacks is a 400: the served document declares exactly that."""
    fake.control("config", MemorySize=320, Timeout=8)  # jobs of up to 256 MB and 5 s fit
    srv = burst_server()
    document_allows_exactly_what_is_accepted(
        srv, backend=["lambda", "local", None], language=["python", "bash", "sh", OMIT],
        version=[OMIT], image=[OMIT, "host"], timeout=[OMIT, 5, 5.5],
        memory_mb=[OMIT, 256, 257])
    request = srv.request("GET", "/openapi.json").json["components"]["schemas"]["JobRequest"]
    assert request["properties"]["backend"]["enum"] == ["local", "lambda", None]
