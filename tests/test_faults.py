"""Disk full, read-only data dir, corrupt database: clear errors, 503 on writes, no silent loss."""
from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BIN, free_port
from reliability_support import Client, all_jobs

BIG_INPUT = "x" * 100_000


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    """Directories to unmount in teardown, last mounted first."""
    mounted: list[Path] = []
    yield mounted
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def mount_tmpfs(path: Path, size: str, mounted: list[Path]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    mounted.append(path)


def start_fails(data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "orq-server"), "--auth", "open", "--port", str(free_port()),
                           "--data-dir", str(data_dir)], check=False, capture_output=True,
                          text=True, timeout=60)


def assert_one_clear_line(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode not in (0, None), proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("orq-server: ") and all(w in lines[0] for w in words), lines


def test_garbage_database_file_refuses_to_start(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    garbage = bytes(range(256)) * 400
    (data / "orq.db").write_bytes(garbage)
    assert_one_clear_line(start_fails(data), "orq.db")
    assert (data / "orq.db").read_bytes() == garbage, "the server wrote into a corrupt file"


def test_damaged_page_refuses_to_start(server_factory, tmp_path):
    srv = server_factory("--auth", "open", data_dir=tmp_path / "data")
    ids = [srv.submit(f"print({i})", input=BIG_INPUT) for i in range(20)]
    for job_id in ids:
        srv.wait_final(job_id)
    assert srv.stop() == 0  # a clean stop checkpoints the WAL into orq.db
    db = srv.data_dir / "orq.db"
    size = db.stat().st_size
    assert size > 200 * 4096, size
    with db.open("r+b") as f:  # whole b-tree pages (tables, indexes), not just free space
        f.seek(4096)
        f.write(b"\xa5" * 4096 * 6)
    assert_one_clear_line(start_fails(srv.data_dir), "orq.db")


def test_read_only_data_dir_refuses_to_start(mounts, server_factory, tmp_path):
    srv = server_factory("--auth", "open", data_dir=tmp_path / "data")
    job_id = srv.submit("print(1)")
    srv.wait_final(job_id)
    srv.stop()
    subprocess.run(["mount", "--bind", str(srv.data_dir), str(srv.data_dir)], check=True)
    mounts.append(srv.data_dir)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(srv.data_dir)], check=True)
    assert_one_clear_line(start_fails(srv.data_dir), str(srv.data_dir), "writ")


def fill_until_refused(client: Client, limit: int = 200) -> tuple[list[int], dict]:
    acked = []
    for _ in range(limit):
        status, body = client.call("POST", "/jobs", {"uid": 1, "code": "print('ok')",
                                                     "input": BIG_INPUT})
        if status != 201:
            assert status == 503, body
            return acked, body
        acked.append(body["job_id"])
    raise AssertionError(f"{limit} jobs of 100 KB fit on a 4 MB disk")


def test_disk_full_refuses_writes_serves_reads_and_recovers(mounts, server_factory, tmp_path):
    data = tmp_path / "data"
    mount_tmpfs(data, "4m", mounts)
    srv = server_factory("--auth", "open", "--slots", "1", "--max-unfinished-per-user", "60",
                         data_dir=data)
    client = Client(srv.port)
    acked, error = fill_until_refused(client)
    assert set(error) == {"error"} and set(error["error"]) == {"code", "message"}, error
    for _ in range(40):  # small writes may still fit in a free page; those are kept too
        status, body = client.call("POST", "/jobs", {"uid": 1, "code": "print('ok')",
                                                     "input": ""})
        assert status in (201, 503), body
        acked += [body["job_id"]] if status == 201 else []
    time.sleep(3)  # the scheduler keeps trying to start jobs meanwhile
    assert client.call("GET", f"/jobs/{acked[0]}")[0] == 200
    assert client.call("GET", "/healthz")[0] == 200
    assert {j["job_id"] for j in all_jobs(srv.port)} == set(acked)

    subprocess.run(["mount", "-o", "remount,size=64m", str(data)], check=True)
    deadline = time.monotonic() + 180
    while any(j["status"] != "DONE" for j in all_jobs(srv.port)):
        assert time.monotonic() < deadline, [j for j in all_jobs(srv.port)
                                             if j["status"] != "DONE"][:3]
        time.sleep(0.5)
    assert all(j["result"] == "ok\n" for j in all_jobs(srv.port))
    # refused writes took no quota: the whole quota is free again
    statuses = [client.call("POST", "/jobs", {"uid": 1, "code": "1", "input": ""})[0]
                for _ in range(60)]
    assert statuses == [201] * 60, statuses
    client.close()
