"""Per-job limits hold when cgroups are reused from job to job (one slot, so every job
gets the same cgroup back): limits go down and up, and an OOM kill is reported for the
job it hit only."""
from __future__ import annotations

import pytest

HOG = "b = bytearray({mb} * 1024 * 1024)\nb[::4096] = b'x' * len(b[::4096])\nprint('held')"


@pytest.fixture(scope="module", params=["true", "false"], ids=["warm", "cold"])
def one_slot(request, tmp_path_factory):
    from conftest import OrqServer
    srv = OrqServer(tmp_path_factory.mktemp("limits") / "data",
                    ["--auth", "open", "--slots", "1", "--warm", request.param]).start()
    yield srv
    srv.kill()


def test_limits_follow_each_job_on_a_reused_cgroup(one_slot):
    big = one_slot.run(HOG.format(mb=300), memory_mb=512)
    assert (big["status"], big["result"]) == ("DONE", "held\n"), big
    small = one_slot.run(HOG.format(mb=300), memory_mb=64)
    assert (small["status"], small["error"], small["exit_code"]) == ("ERROR", "memory", None)
    after = one_slot.run("print('fine')", memory_mb=64)
    assert (after["status"], after["error"]) == ("DONE", None), after
    again = one_slot.run(HOG.format(mb=300), memory_mb=512)
    assert again["status"] == "DONE", again


def test_process_limit_applies_to_every_job(one_slot):
    code = ("import os, time\nn = 0\ntry:\n    for _ in range(500):\n"
            "        if os.fork() == 0:\n            time.sleep(5); os._exit(0)\n"
            "        n += 1\nexcept OSError:\n    pass\nprint(n)")
    for _ in range(2):
        job = one_slot.run(code)
        assert int(job["result"]) < 64, job


def test_jobs_in_quick_succession_never_inherit_the_last_ones_processes(one_slot):
    """A killed task stays counted in the pids controller until it is reaped and an RCU
    grace period passes; a cgroup handed to the next job before that refused its forks
    (bwrap: "Can't fork for pid 1") once enough jobs had run back to back."""
    for n in range(150):
        job = one_slot.run(f"echo {n} $(echo $(echo nested))", language="sh")
        assert (job["status"], job["result"]) == ("DONE", f"{n} nested\n"), job
