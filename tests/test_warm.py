"""Warm runners (server/backends/warm.py): isolation per job, replacement, cold fallback.

A one-slot server has one runner and a spare, which take consecutive jobs in turn (the
one idle longest goes first). A check that follows a job runs once on every runner, so
whatever the job left behind in its runner would be seen.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from conftest import OrqServer

from server.backends.local import SPARE_RUNNERS

RUNNER_MARK = "/job/warm.py"


@pytest.fixture(scope="module")
def warm1(tmp_path_factory):
    srv = OrqServer(tmp_path_factory.mktemp("warm") / "data",
                    ["--auth", "open", "--slots", "1", "--warm", "true"]).start()
    yield srv
    srv.kill()


@pytest.fixture(scope="module", params=["true", "false"])
def either(request, tmp_path_factory):
    """One server per path, for behaviour both paths must share."""
    srv = OrqServer(tmp_path_factory.mktemp("w" + request.param) / "data",
                    ["--auth", "open", "--warm", request.param]).start()
    yield srv
    srv.kill()


def descendants(root: int) -> dict[int, str]:
    """Host processes below ``root``: pid -> command line."""
    children: dict[int, list[int]] = {}
    cmdlines: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdlines[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ")\
                .decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = {}, [root]
    while todo:
        for kid in children.get(todo.pop(), []):
            found[kid] = cmdlines.get(kid, "")
            todo.append(kid)
    return found


def runners(srv: OrqServer) -> list[int]:
    """Runner processes (not the per-job children they fork, which share their command line)."""
    procs = descendants(srv.proc.pid)
    return sorted(pid for pid, cmd in procs.items() if RUNNER_MARK in cmd and "bwrap" not in cmd
                  and procs.get(parent(pid), "").split(" ")[0].endswith("bwrap"))


def parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def on_every_runner(srv: OrqServer, code: str) -> list[dict]:
    """Run ``code`` as many times in a row as there are runners: once on each."""
    count = len(runners(srv))
    assert count == health(srv)["capacity"] + SPARE_RUNNERS
    return [srv.run(code) for _ in range(count)]


def health(srv: OrqServer) -> dict:
    return srv.request("GET", "/healthz").json


def wait_for(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached")


def test_warm_is_the_default(open_server):
    assert health(open_server)["warm"] is True
    assert len(runners(open_server)) == health(open_server)["capacity"] + SPARE_RUNNERS


def test_module_state_does_not_leak_between_jobs(warm1):
    first = warm1.run("import json, sys, builtins\njson.leak = 1\nbuiltins.leak = 2\n"
                      "sys.modules['leaky'] = json\nsys.path.append('/leak')\nprint('set')")
    assert first["status"] == "DONE", first
    for later in on_every_runner(warm1, "import json, sys, builtins\n"
                                 "print(hasattr(json, 'leak'), hasattr(builtins, 'leak'),"
                                 " 'leaky' in sys.modules, '/leak' in sys.path)"):
        assert later["result"] == "False False False False\n", later


def test_tmp_and_shm_are_fresh_per_job(warm1):
    job = warm1.run("open('/tmp/mark', 'w').write('x'); open('/dev/shm/mark', 'w').write('x')\n"
                    "import os; print(sorted(os.listdir('/tmp')))")
    assert job["result"] == "['mark']\n", job
    for job in on_every_runner(
            warm1, "import os; print(os.listdir('/tmp'), os.listdir('/dev/shm'), os.getcwd())"):
        assert job["result"] == "[] [] /tmp\n", job


def test_pid_namespace_per_job_and_nothing_outlives_it(warm1):
    job = warm1.run("import os, subprocess\n"
                    "subprocess.Popen(['sleep', '4242'], start_new_session=True)\n"
                    "print(os.getpid(), sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))")
    assert job["status"] == "DONE", job
    pid, visible = job["result"].split(" ", 1)
    assert pid == "2"
    assert set(eval(visible)) <= {1, 2, 3, 4}  # init, the job, its sleep (no runner, no server)
    wait_for(lambda: not [p for p, cmd in descendants(warm1.proc.pid).items() if "4242" in cmd])
    for later in on_every_runner(
            warm1, "import os; print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))"):
        assert later["result"] == "[1, 2]\n", later


def test_nothing_network_passes_from_one_job_to_the_next(warm1):
    """A slot's jobs share its empty network namespace one after another: a listener or an
    abstract socket left by one job is gone before the next one runs."""
    first = warm1.run("import socket, time\n"
                      "s = socket.socket(); s.bind(('127.0.0.1', 7777)); s.listen()\n"
                      "u = socket.socket(socket.AF_UNIX); u.bind('\\0orq-leak'); u.listen()\n"
                      "import os\nif os.fork() == 0:\n    time.sleep(60)\nprint('listening')")
    assert first["result"] == "listening\n", first
    for second in on_every_runner(
            warm1, "import socket\nfor fam, addr in ((socket.AF_INET, ('127.0.0.1', 7777)),"
            " (socket.AF_UNIX, '\\0orq-leak')):\n"
            "    try:\n        socket.socket(fam).connect(addr); print('reached')\n"
            "    except OSError as exc:\n        print(type(exc).__name__)"):
        assert second["result"] == "ConnectionRefusedError\nConnectionRefusedError\n", second


def test_job_has_no_capabilities_and_no_new_user_namespaces(warm1):
    job = warm1.run(
        "import subprocess\n"
        "status = dict(l.split(':\\t') for l in open('/proc/self/status').read().splitlines())\n"
        "print(status['CapEff'], status['CapBnd'], status['NoNewPrivs'])\n"
        "print(subprocess.run(['unshare', '-U', 'true']).returncode != 0)\n"
        "print(open('/proc/self/cgroup').read().count('job-'))\n"
        "try:\n    open('/proc/sys/kernel/hostname', 'w').write('x')\nexcept OSError:\n"
        "    print('ro')")
    assert job["result"] == "0000000000000000 0000000000000000 1\nTrue\n0\nro\n", job


def test_timeout_kills_the_job_and_the_runner_survives(warm1):
    before = health(warm1)["warm_replaced"]
    job = warm1.run("import subprocess\nsubprocess.Popen(['sleep', '4343'])\nwhile True: pass",
                    timeout=1)
    assert (job["status"], job["error"], job["exit_code"]) == ("ERROR", "timeout", None), job
    wait_for(lambda: not [p for p, cmd in descendants(warm1.proc.pid).items() if "4343" in cmd])
    assert warm1.run("print('next')")["result"] == "next\n"
    assert health(warm1)["warm_replaced"] == before


def test_cancel_on_the_warm_path(warm1):
    job_id = warm1.submit("import time\nprint('up', flush=True)\ntime.sleep(60)")
    warm1.wait_status(job_id, "RUNNING")
    resp = warm1.request("DELETE", f"/jobs/{job_id}")
    assert resp.status == 200 and resp.json["status"] == "CANCELLED"
    assert warm1.run("print('after')")["result"] == "after\n"


def test_memory_limit_on_the_warm_path(warm1):
    job = warm1.run("x = bytearray(300 * 1024 * 1024)\nx[::4096] = b'x' * len(x[::4096])",
                    memory_mb=64)
    assert job["status"] == "ERROR" and job["error"] == "memory", job


def test_back_to_back_jobs_keep_their_runner(warm1):
    """A job that arrives while the next job's namespaces are still being prepared waits."""
    before = (health(warm1)["warm_replaced"], runners(warm1))
    ids = [warm1.submit(f"print({i})") for i in range(30)]
    jobs = [warm1.wait_final(job_id) for job_id in ids]
    assert [j["result"] for j in jobs] == [f"{i}\n" for i in range(30)]
    assert (health(warm1)["warm_replaced"], runners(warm1)) == before
    assert "running the job cold" not in warm1.log()


def test_a_dead_runner_is_replaced(warm1):
    # a runner an earlier test had replaced may still be starting (slow on a loaded machine)
    wait_for(lambda: len(runners(warm1)) == 1 + SPARE_RUNNERS)
    before = runners(warm1)
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    for _ in before:  # a dead runner is found (and replaced) when a job takes it
        job = warm1.run("print('still here')")
        assert job["status"] == "DONE" and job["result"] == "still here\n", job
    wait_for(lambda: len(runners(warm1)) == len(before) and not set(runners(warm1)) & set(before))
    assert health(warm1)["warm_replaced"] >= 1 and health(warm1)["warm"] is True


def test_a_job_cannot_kill_its_runner(warm1):
    before = runners(warm1)
    job = warm1.run("import os, signal\nfor pid in range(1, 50):\n    try:\n"
                    "        os.kill(pid, signal.SIGKILL) if pid != os.getpid() else None\n"
                    "    except OSError:\n        pass\nprint('done')")
    assert job["result"] == "done\n", job
    assert runners(warm1) == before


@pytest.mark.parametrize("code, exit_code, stderr_has", [
    ("import sys; sys.exit(3)", 3, ""),
    ("import sys; sys.exit('bye')", 1, "bye"),
    ("import os; os._exit(4)", 4, ""),
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", 137, ""),
    ("raise ValueError('boom')", 1, "ValueError: boom"),
    ("def f(:\n  pass", 1, "SyntaxError"),
    ("import atexit; atexit.register(print, 'bye')", 0, ""),
    ("import threading, time\nthreading.Thread(target=lambda: (time.sleep(0.2), print('t'))).start()",
     0, ""),
])
def test_same_outcome_warm_and_cold(either, code, exit_code, stderr_has):
    job = either.run(code)
    assert job["exit_code"] == exit_code, job
    assert stderr_has in job["stderr"]
    assert "warm.py" not in job["stderr"]
    if "atexit" in code or "threading" in code:
        assert job["result"] in ("bye\n", "t\n"), job


def test_stdio_and_argv_match_cold(either):
    job = either.run("import sys\nprint(sys.argv, __name__, __file__, sys.path[0])\n"
                     "print(sys.stdin.read()[::-1], 'é')\nsys.stderr.write('err')", input="abc")
    assert job["result"] == "['/job/main.py'] __main__ /job/main.py /job\ncba é\n", job
    assert job["stderr"] == "err"


def test_fallback_to_cold_with_one_log_line(server_factory):
    srv = server_factory("--auth", "open", env={"_ORQ_WARM_WITHOUT_CAPS": "1"})
    assert health(srv)["warm"] is False
    assert srv.log().count("warm runners unavailable") == 1
    assert runners(srv) == []
    assert srv.run("print('cold')")["result"] == "cold\n"


def test_warm_false_runs_cold(server_factory):
    srv = server_factory("--auth", "open", "--warm", "false")
    assert health(srv)["warm"] is False and runners(srv) == []
    assert srv.run("print('cold')")["result"] == "cold\n"
    assert "warm runners unavailable" not in srv.log()
