"""kill -9 at random moments under load: every acknowledged job survives and ends final."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import BIN, free_port
from reliability_support import (
    cgroup_children,
    check_after_crashes,
    instance_cgroups,
    process_tree,
    submit_all,
    submit_during_kills,
    wait_gone,
)


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


# -- nothing the server started outlives it (issue 16) -----------------------------------

CODES = ["print('x')", "import time; time.sleep(0.3)",
         "import subprocess; subprocess.run(['sleep', '0.2'])"]


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def sandbox_files() -> set[str]:
    """Entries of the host's /tmp and /dev/shm owned by the sandboxes' user (65534)."""
    found = set()
    for place in (Path("/tmp"), Path("/dev/shm")):
        for entry in place.iterdir():
            try:
                if entry.lstat().st_uid == 65534:
                    found.add(str(entry))
            except OSError:
                pass
    return found


def needs_cgroups(srv) -> None:
    """Without cgroups the server promises less (one log line says what): skip."""
    if srv.request("GET", "/healthz").json.get("cgroup") is None:
        pytest.skip("this host gives the server no cgroups")


def reaper_of(tree: dict) -> list[int]:
    return [pid for (pid, _), cmd in tree.items() if "reaper.py" in cmd]


def test_kill9_at_random_moments_leaves_no_process(server_factory):
    """kill -9 while runners start (start-up), while jobs run, with the reaper or without:
    every process the server had started is gone within 5 s (its reaper kills them), or,
    when the reaper was killed too, once the next server has started."""
    srv = server_factory("--auth", "open", "--slots", "2")
    needs_cgroups(srv)
    rng = random.Random(16)
    stop, survivors, cycles = threading.Event(), [], 12
    files_before = sandbox_files()
    load = threading.Thread(target=lambda: submit_all(
        srv.port, [(uid, CODES[uid % 3]) for uid in range(100000)], threads=3, stop=stop))
    load.start()
    try:
        for cycle in range(cycles):
            if cycle % 2:  # during start-up: the warm runners' sandboxes are starting
                srv.start(wait=False)
                time.sleep(rng.uniform(0.05, 1.2))
            else:
                if cycle:  # the first server is the one server_factory started
                    srv.start(timeout=60)
                time.sleep(rng.uniform(0.0, 1.0))
            tree = process_tree(srv.proc.pid)
            with_reaper = cycle % 4 != 3
            if not with_reaper:
                for pid in reaper_of(tree):
                    os.kill(pid, signal.SIGKILL)
            srv.kill()
            if with_reaper:
                survivors += wait_gone(tree, 5).values()
                assert wait_until(lambda: cgroup_children(srv.data_dir) == [], 5), \
                    cgroup_children(srv.data_dir)
            else:  # the next start cleans up what is left
                srv.start(timeout=60)
                survivors += wait_gone(tree, 5).values()
                ours = f"run-{srv.proc.pid}"  # nothing else: no cgroup accumulates
                assert set(cgroup_children(srv.data_dir)) == {ours}, cgroup_children(srv.data_dir)
                srv.kill()
    finally:
        stop.set()
        load.join()
    assert not survivors, survivors
    srv.start(timeout=60)
    tree = process_tree(srv.proc.pid)
    assert srv.stop() == 0
    assert not wait_gone(tree, 5), "a clean stop left processes"
    assert not any(d.exists() for d in instance_cgroups(srv.data_dir)), \
        cgroup_children(srv.data_dir)
    assert sorted(p.name for p in srv.data_dir.iterdir()) == ["cache", "images", "orq.db",
                                                              "server.lock"]
    # no image build or compile left half done (nothing was built here: all are empty)
    assert [p for d in ("images/tmp", "cache/tmp") for p in (srv.data_dir / d).iterdir()] == []
    assert sandbox_files() <= files_before  # no temporary file of a sandbox on the host


def leftover_in(srv, tree: dict) -> subprocess.Popen:
    """A process put into the server's own cgroup, as a sandbox caught starting by a
    crash would be (its --die-with-parent not armed yet)."""
    needs_cgroups(srv)
    sleeper = subprocess.Popen(["sleep", "300"], start_new_session=True)
    server_leaf = [d / f"run-{srv.proc.pid}" / "server" for d in instance_cgroups(srv.data_dir)
                   if (d / f"run-{srv.proc.pid}" / "server").is_dir()]
    assert server_leaf, cgroup_children(srv.data_dir)
    (server_leaf[0] / "cgroup.procs").write_text(str(sleeper.pid))
    assert reaper_of(tree), tree
    return sleeper


def test_the_reaper_kills_what_the_server_left(server_factory):
    srv = server_factory("--auth", "open")
    tree = process_tree(srv.proc.pid)
    sleeper = leftover_in(srv, tree)
    srv.kill()
    assert sleeper.wait(5) == -signal.SIGKILL
    assert not wait_gone(tree, 5)
    assert f"run-{srv.proc.pid}" not in cgroup_children(srv.data_dir)
    assert "orq reaper: the server is gone; killed" in srv.log()


def test_the_next_start_cleans_up_after_a_dead_server_and_its_reaper(server_factory):
    srv = server_factory("--auth", "open")
    tree = process_tree(srv.proc.pid)
    sleeper = leftover_in(srv, tree)
    for pid in reaper_of(tree):
        os.kill(pid, signal.SIGKILL)
    dead = srv.proc.pid
    srv.kill()
    time.sleep(0.5)
    assert sleeper.poll() is None  # nothing cleaned up yet
    srv.start(timeout=60)
    assert sleeper.wait(5) == -signal.SIGKILL
    assert f"cleaned up after an earlier server on this data dir: killed 1 processes " \
           f"({sleeper.pid})" in srv.log(), srv.log()
    assert f"run-{dead}" not in cgroup_children(srv.data_dir)
    assert srv.run("print('after')")["result"] == "after\n"


def test_a_second_server_on_the_same_data_dir_is_refused(server_factory):
    first = server_factory("--auth", "open")
    job = first.submit("import time; time.sleep(3); print('kept')")
    first.wait_status(job, "RUNNING")
    second = subprocess.run([str(BIN / "orq-server"), "--port", str(free_port()),
                             "--data-dir", str(first.data_dir)], check=False, capture_output=True,
                            text=True, timeout=60)
    assert second.returncode == 1, second
    assert second.stderr.strip() == (
        f"orq-server: another orq-server (pid {first.proc.pid}) is using the data dir "
        f"{first.data_dir}; stop it first, or give this one its own --data-dir"), second.stderr
    assert first.wait_final(job)["result"] == "kept\n"  # its sandboxes were left alone
    first.kill()
    first.start()  # a server killed with kill -9 does not hold the lock
