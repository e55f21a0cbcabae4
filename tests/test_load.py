"""Load: 2,000 jobs from 50 users at once; all final, fair, none lost or doubled, memory flat.

(bench/soak.py runs the full 10,000 x 50 with the same checks.)
"""
from __future__ import annotations

from reliability_support import (
    BLOCKER_UID,
    Client,
    all_jobs,
    block_slots,
    max_spread,
    rss_kb,
    start_order,
    submit_all,
    wait_all_final,
)

USERS, PER_USER = 50, 40


def test_2000_jobs_from_50_users_all_final_fair_unique(server_factory):
    srv = server_factory("--auth", "open", "--slots", "2")
    blockers = block_slots(srv, 2)
    # user-major order: first-come-first-served would run user 0's 40 jobs first
    work = [(uid, "pass") for uid in range(USERS) for _ in range(PER_USER)]
    ledger = submit_all(srv.port, work, threads=8)
    assert not ledger.refused and not ledger.duplicates, (ledger.refused, ledger.duplicates)
    assert len(ledger.acked) == USERS * PER_USER
    rss_queued = rss_kb(srv.proc.pid)
    for job_id in blockers:
        assert srv.request("DELETE", f"/jobs/{job_id}").json["status"] == "CANCELLED"

    jobs = [j for j in wait_all_final(srv.port, timeout=900) if j["uid"] != BLOCKER_UID]
    ids = [j["job_id"] for j in jobs]
    assert len(ids) == len(set(ids)), "a job id is listed twice"
    assert {j["job_id"]: j["uid"] for j in jobs} == ledger.acked, "lost or foreign jobs"
    bad = [j for j in jobs if (j["status"], j["result"], j["attempts"]) != ("DONE", "", 1)]
    assert not bad, bad[:3]
    spread = max_spread(start_order(jobs), range(USERS))
    assert spread <= 4, f"one user got {spread} jobs ahead of another"
    growth_mb = (rss_kb(srv.proc.pid) - rss_queued) / 1024
    assert growth_mb < 64, f"server RSS grew {growth_mb:.0f} MiB while running 2,000 jobs"


def test_quota_refusals_are_not_acknowledged(server_factory):
    srv = server_factory("--auth", "open", "--slots", "1", "--max-unfinished-per-user", "30")
    block_slots(srv, 1)
    ledger = submit_all(srv.port, [(7, "pass")] * 80, threads=8)
    assert len(ledger.acked) == 30 and ledger.refused == {429: 50}, ledger
    listed = {j["job_id"] for j in all_jobs(srv.port) if j["uid"] == 7}
    assert listed == set(ledger.acked)
    client = Client(srv.port)
    status, body = client.call("POST", "/jobs", {"uid": 8, "code": "pass", "input": ""})
    assert status == 201, body
    client.close()
