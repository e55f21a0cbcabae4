"""Durability and scheduling: kill -9 and restart, retries, fair order across users."""
from __future__ import annotations

import time


def test_kill9_loses_nothing_and_reruns_interrupted_job(server_factory):
    srv = server_factory("--auth", "open", "--slots", "1")
    running = srv.submit("import time\nprint('attempt', flush=True)\ntime.sleep(4)\nprint('end')")
    srv.wait_status(running, "RUNNING")
    waiting = [srv.submit(f"print({i})") for i in range(5)]
    srv.kill()
    srv.start()
    job = srv.wait_final(running)
    assert (job["status"], job["attempts"], job["result"]) == ("DONE", 2, "attempt\nend\n")
    for i, job_id in enumerate(waiting):
        assert srv.wait_final(job_id)["result"] == f"{i}\n"
    assert srv.submit("print('new')") > waiting[-1]


def test_job_interrupted_twice_ends_error_interrupted(server_factory):
    srv = server_factory("--auth", "open", "--slots", "1")
    job_id = srv.submit("import time; time.sleep(30)")
    for attempt in (1, 2):
        assert srv.wait_status(job_id, "RUNNING")["attempts"] == attempt
        srv.kill()
        srv.start()
    job = srv.wait_final(job_id)
    assert (job["status"], job["error"], job["exit_code"]) == ("ERROR", "interrupted", None)


def test_sigterm_stops_cleanly_and_jobs_run_after_restart(server_factory):
    srv = server_factory("--auth", "open", "--slots", "1")
    running = srv.submit("import time; time.sleep(30)")
    srv.wait_status(running, "RUNNING")
    later = srv.submit("print('later')")
    assert srv.stop() == 0
    srv.start()
    assert srv.wait_status(running, "RUNNING")["attempts"] == 2
    assert srv.request("DELETE", f"/jobs/{running}").json["status"] == "CANCELLED"
    assert srv.wait_final(later)["result"] == "later\n"


def test_ids_never_reused_after_purge_and_restart(server_factory):
    srv = server_factory("--auth", "open")
    last = srv.submit("print(1)")
    srv.wait_final(last)
    assert srv.request("DELETE", f"/jobs/{last}?purge=true").status == 204
    srv.restart()
    assert srv.submit("print(2)") > last


def test_one_users_backlog_does_not_starve_another(server_factory):
    srv = server_factory("--auth", "open", "--slots", "1")
    hog = [srv.submit("import time; time.sleep(0.2)", uid=1) for _ in range(15)]
    single = srv.submit("print('mine')", uid=2)
    done = srv.wait_final(single, timeout=60)
    started_before = [j for j in (srv.request("GET", f"/jobs/{i}").json for i in hog)
                      if j["started_at"] is not None and j["started_at"] < done["started_at"]]
    assert len(started_before) <= 2, f"{len(started_before)} of user 1's jobs ran first"
    for job_id in hog:
        srv.request("DELETE", f"/jobs/{job_id}")


def test_slots_bound_concurrency(server_factory):
    srv = server_factory("--auth", "open", "--slots", "2")
    ids = [srv.submit("import time; time.sleep(1)") for _ in range(4)]
    time.sleep(0.5)
    health = srv.request("GET", "/healthz").json
    assert health["running"] <= 2 and health["running"] + health["waiting"] == 4
    statuses = [srv.wait_final(i)["status"] for i in ids]
    assert statuses == ["DONE"] * 4
