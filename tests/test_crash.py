"""kill -9 at random moments under load: every acknowledged job survives and ends final."""
from __future__ import annotations

import random
import time

from reliability_support import check_after_crashes, submit_all, submit_during_kills


def test_kill9_under_load_loses_no_acknowledged_job(server_factory):
    srv = server_factory("--auth", "open", "--slots", "2")
    rng = random.Random(8)
    work = [(uid, "pass") for _ in range(30) for uid in range(20)]
    ledger, seen = submit_during_kills(srv, work, 4, rng, threads=6)
    assert len(ledger.acked) > 100, "too few jobs were acknowledged to test anything"
    assert ledger.refused, "no request ever failed: the kills missed the load"
    check_after_crashes(srv, ledger)
    # ids never repeat: each submitter's ids only grow, across every restart
    assert ledger.ids_increase(), ledger.by_thread
    assert seen and seen == sorted(seen), seen


def test_kill9_during_recovery_keeps_every_job(server_factory):
    srv = server_factory("--auth", "open", "--slots", "2")
    ledger = submit_all(srv.port, [(uid, "pass") for uid in range(10) for _ in range(30)],
                        threads=6)
    assert len(ledger.acked) == 300
    for delay in (0.0, 0.2, 0.6):  # kill again while it requeues and restarts jobs
        srv.kill()
        srv.start(timeout=60)
        time.sleep(delay)
    check_after_crashes(srv, ledger)


def test_ids_after_kill9_never_repeat(server_factory):
    srv = server_factory("--auth", "open")
    before = submit_all(srv.port, [(1, "pass")] * 50, threads=4)
    srv.kill()
    srv.start(timeout=60)
    after = submit_all(srv.port, [(1, "pass")] * 50, threads=4)
    assert min(after.acked) > max(before.acked)
    assert before.ids_increase() and after.ids_increase()
    assert not set(after.acked) & set(before.acked)
