"""The installed `orq` command in subprocesses against a real server."""
from __future__ import annotations

import json
import signal
import stat
import subprocess
import time

from conftest import ORQ

SLOW = "import time\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('second')\n"


def no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("orq: ") and proc.stderr.count("\n") == 1, proc.stderr


def test_submit_wait_prints_output_and_exit_codes(orq, open_server, tmp_path):
    script = tmp_path / "hello.py"
    script.write_text("import sys\nprint(input()[::-1])\nprint('oops', file=sys.stderr)\n")
    proc = orq("submit", str(script), "--input", "olleh", "--wait", server=open_server)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello\n" and "oops" in proc.stderr
    proc = orq("submit", "-", "--wait", "--uid", "5", stdin="raise SystemExit(3)\n",
               server=open_server)
    assert proc.returncode == 1 and "ERROR" in proc.stderr and "exit 3" in proc.stderr


def test_json_output_get_and_logs(orq, open_server, tmp_path):
    (tmp_path / "in.txt").write_text("a b c")
    script = tmp_path / "s.sh"
    script.write_text("read x; echo \"got $x\"; echo warn >&2\n")
    proc = orq("-o", "json", "submit", str(script), "--input-file", str(tmp_path / "in.txt"),
               "--uid", "12", server=open_server)
    job_id = json.loads(proc.stdout)["job_id"]
    job = json.loads(orq("wait", str(job_id), "-o", "json", server=open_server).stdout)
    assert job["status"] == "DONE" and job["language"] == "bash"
    assert job["result"] == "got a b c\n"
    listed = json.loads(orq("get", "jobs", "--uid", "12", "-o", "json", server=open_server).stdout)
    assert [j["job_id"] for j in listed] == [job_id]
    detail = orq("get", "job", str(job_id), server=open_server)
    assert "got a b c" in detail.stdout and "read x" in detail.stdout
    logs = orq("logs", str(job_id), server=open_server)
    assert logs.stdout == "got a b c\n" and logs.stderr == "warn\n"
    table = orq("get", "jobs", "--uid", "12", "--status", "done", server=open_server)
    assert table.stdout.splitlines()[0].split()[:5] == ["ID", "UID", "STATUS", "LANG", "BACKEND"]
    assert table.stdout.splitlines()[1].split()[:5] == [str(job_id), "12", "DONE", "bash", "local"]
    assert "got a b c" in table.stdout
    assert "backend:      local" in detail.stdout and "usage:        cpu_ms=" in detail.stdout


def test_logs_follow_streams_until_final(orq, open_server):
    job_id = open_server.submit(SLOW, uid=21)
    proc = orq("logs", "-f", str(job_id), server=open_server)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "first\nsecond\n"
    assert open_server.request("GET", f"/jobs/{job_id}").json["status"] == "DONE"


def test_cancel_and_wait(orq, open_server):
    job_id = open_server.submit("import time\ntime.sleep(30)\n", uid=22)
    proc = orq("cancel", str(job_id), server=open_server)
    assert proc.returncode == 0 and "CANCELLED" in proc.stdout, proc.stderr
    again = orq("cancel", str(job_id), server=open_server)
    assert again.returncode == 2
    no_traceback(again)
    waited = orq("wait", str(job_id), server=open_server)
    assert waited.returncode == 1 and "CANCELLED" in waited.stdout
    missing = orq("get", "job", "999999", server=open_server)
    assert missing.returncode == 2 and "999999" in missing.stderr


def test_watch_prints_a_line_per_event_and_ctrl_c_is_clean(orq, open_server):
    proc = subprocess.Popen([ORQ, "--server", open_server.url, "watch", "--uid", "23"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=orq.env)
    try:
        time.sleep(1.5)  # let it connect
        job_id = open_server.submit("print('watched')", uid=23)
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lines.append(proc.stdout.readline())
            if f"job {job_id} uid 23 DONE" in lines[-1]:
                break
        assert any(f"job {job_id} uid 23 RUNNING" in line for line in lines), lines
        assert f"job {job_id} uid 23 DONE (exit 0" in lines[-1], lines
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
        assert "Traceback" not in proc.stderr.read()
    finally:
        proc.kill()


def test_unreachable_server_and_usage(orq, tmp_path):
    from conftest import free_port
    proc = orq("get", "jobs", extra={"ORQ_SERVER": f"http://127.0.0.1:{free_port()}"})
    assert proc.returncode == 3
    no_traceback(proc)
    assert "cannot reach" in proc.stderr
    usage = orq("get", "jobs", "--limit", "many")
    assert usage.returncode == 2
    no_traceback(usage)
    assert orq("frobnicate").returncode == 2
    assert orq("submit", str(tmp_path / "missing.py")).returncode == 2
    assert orq("--help").returncode == 0


def test_register_login_logout_and_token_file(orq, auth_server):
    password = "secret-pass-1"
    proc = orq("register", "--uid", "31", "--password-stdin", stdin=password + "\n",
               server=auth_server)
    assert proc.returncode == 0, proc.stderr
    config = orq.config / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(orq.config.stat().st_mode) == 0o700
    assert password not in config.read_text()
    token = json.loads(config.read_text())["profiles"][auth_server.url]["token"]
    assert auth_server.request("GET", "/jobs", token=token).status == 200
    # the saved server is used when no --server is given
    proc = orq("submit", "-", "--wait", stdin="print(6*7)\n")
    assert proc.returncode == 0 and proc.stdout == "42\n", proc.stderr
    assert orq("get", "jobs", "--uid", "0").returncode == 4
    assert orq("logout").returncode == 0
    assert auth_server.request("GET", "/jobs", token=token).status == 401  # revoked
    assert "token" not in config.read_text()
    denied = orq("get", "jobs")
    assert denied.returncode == 4
    no_traceback(denied)
    again = orq("login", "--uid", "31", extra={"ORQ_PASSWORD": password})
    assert again.returncode == 0, again.stderr
    assert orq("-o", "json", "get", "jobs").returncode == 0


def test_bad_credentials_exit_4(orq, auth_server):
    auth_server.register(32, "right-password")
    proc = orq("login", "--uid", "32", "--password-stdin", stdin="wrong-password\n",
               server=auth_server)
    assert proc.returncode == 4
    no_traceback(proc)
    assert not (orq.config / "config.json").exists()
    assert orq("login", "--uid", "32", server=auth_server, stdin="").returncode == 2
