"""Usage (cpu_ms, max_rss_kb) of every job that ran, on both backends and on each local
path: warm and cold sandboxes with their cgroup, the same without cgroups (the rusage of
the job's processes), and the Lambda handler (SPEC section 10)."""
from __future__ import annotations

import pytest
from lambda_support import FakeLambda, poll

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5:\n    pass"
# bash, and a child it starts: what the job started counts too
BASH_BURN = f"python3 -c '{BURN}'\necho burnt"
TOUCH = "x = b'x' * (100 * 1024 * 1024)\nprint(len(x))"  # written: resident, not just mapped
MiB = 1024


def burns(job: dict) -> None:
    assert job["status"] == "DONE", job
    usage = job["usage"]
    assert 450 <= usage["cpu_ms"] <= job["duration_ms"] + 200, job  # one CPU at most


def touches(job: dict) -> None:
    assert job["status"] == "DONE", job
    assert 100 * MiB <= job["usage"]["max_rss_kb"] <= 250 * MiB, job


def idles(job: dict) -> None:
    assert job["status"] == "DONE", job
    assert job["usage"]["cpu_ms"] < 200 and job["usage"]["max_rss_kb"] < 60 * MiB, job


@pytest.fixture(scope="module")
def fake(lambda_zip, tmp_path_factory):
    fake = FakeLambda.start(lambda_zip, tmp_path_factory.mktemp("fake"))
    yield fake
    fake.stop()


@pytest.mark.parametrize("setting", ["cgroups", "rusage"])
def test_local_usage(server_factory, setting):
    env = {"_ORQ_WITHOUT_CGROUPS": "1"} if setting == "rusage" else {}
    srv = server_factory("--auth", "open", env=env)
    assert srv.request("GET", "/healthz").json["cgroup"] == (1 if setting == "cgroups" else None)
    burns(srv.run(BURN))  # a warm runner's child
    burns(srv.run(BASH_BURN, language="bash"))  # a cold sandbox
    touches(srv.run(TOUCH))
    idles(srv.run("import time; time.sleep(0.3)"))
    idles(srv.run("sleep 0.3", language="bash"))


def test_lambda_usage(server_factory, fake):
    srv = server_factory("--auth", "open", "--burst", "lambda", env=fake.env())
    for job in (srv.run(BURN, backend="lambda"), srv.run(BASH_BURN, language="bash",
                                                         backend="lambda")):
        assert job["backend"] == "lambda"
        burns(job)
    touches(srv.run(TOUCH, backend="lambda"))
    idles(srv.run("import time; time.sleep(0.3)", backend="lambda"))


def test_usage_is_null_for_a_job_that_never_ran(server_factory):
    srv = server_factory("--auth", "open", "--slots", "1")
    blocker = srv.submit("import time; time.sleep(30)", timeout=40)
    srv.wait_status(blocker, "RUNNING")
    waiting = srv.submit("print('never')")
    assert srv.request("DELETE", f"/jobs/{waiting}").json["usage"] is None
    assert srv.request("GET", f"/jobs/{waiting}").json["usage"] is None
    assert srv.request("DELETE", f"/jobs/{blocker}").status == 200
    # the cancelled blocker did run: its usage arrives once its processes are gone
    job = poll(lambda: (j := srv.request("GET", f"/jobs/{blocker}").json)["usage"] and j,
               timeout=10)
    assert job["status"] == "CANCELLED" and job["usage"]["max_rss_kb"] > 0
