"""Helpers shared by the load, crash, fault and slowloris tests and bench/soak.py.

Plain HTTP over keep-alive connections from a thread pool: no mocks, the real server.
"""
from __future__ import annotations

import collections
import http.client
import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from conftest import FINAL

from server.backends.local import instance_name

BLOCKER_UID = 10**6  # owns the sleeping jobs that hold every slot (block_slots)


class Client:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1; reconnects after any error."""

    def __init__(self, port: int, timeout: float = 60) -> None:
        self.port, self.timeout = port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                       timeout=self.timeout)
            self.conn.request(method, path, body=data, headers=headers)
            resp = self.conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        return resp.status, (json.loads(raw) if raw else None)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class Ledger:
    """What the server acknowledged (201) and what it refused, across threads."""
    acked: dict[int, int] = field(default_factory=dict)  # job_id -> uid
    refused: collections.Counter = field(default_factory=collections.Counter)
    duplicates: list[int] = field(default_factory=list)
    by_thread: dict[int, list[int]] = field(default_factory=dict)  # ids in answer order
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, job_id: int, uid: int) -> None:
        with self.lock:
            if job_id in self.acked:
                self.duplicates.append(job_id)
            self.acked[job_id] = uid
            self.by_thread.setdefault(threading.get_ident(), []).append(job_id)

    def ids_increase(self) -> bool:
        """Each thread submits one job at a time, so its ids must only grow."""
        return all(ids == sorted(set(ids)) for ids in self.by_thread.values())


def submit_all(port: int, work: Iterable[tuple[int, str]], threads: int = 16,
               ledger: Ledger | None = None, stop: threading.Event | None = None) -> Ledger:
    """POST /jobs for every (uid, code), ``threads`` connections at once.

    Connection errors (a killed server) count as refused and are not retried: a job is
    only ever expected to exist when its 201 arrived.
    """
    ledger = ledger or Ledger()
    items = list(work)
    lock = threading.Lock()
    cursor = iter(items)

    def worker() -> None:
        client = Client(port)
        while not (stop and stop.is_set()):
            with lock:
                item = next(cursor, None)
            if item is None:
                break
            uid, code = item
            try:
                status, body = client.call("POST", "/jobs", {"uid": uid, "code": code,
                                                            "input": ""})
            except (OSError, http.client.HTTPException) as exc:
                ledger.refused[type(exc).__name__] += 1
                time.sleep(0.05)
                continue
            if status == 201:
                ledger.ack(body["job_id"], uid)
            else:
                ledger.refused[status] += 1
        client.close()
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(worker) for _ in range(threads)]:
            future.result()
    return ledger


def all_jobs(port: int, status: str | None = None) -> list[dict]:
    """Every job on the server (pages through ?before=), newest first."""
    client, jobs, before = Client(port), [], None
    while True:
        query = "/jobs?limit=10000" + (f"&status={status}" if status else "")
        query += f"&before={before}" if before else ""
        code, page = client.call("GET", query)
        assert code == 200, page
        jobs.extend(page)
        if len(page) < 10000:
            client.close()
            return jobs
        before = page[-1]["job_id"]


def wait_all_final(port: int, timeout: float) -> list[dict]:
    """Poll until no job is WAITING or RUNNING; return every job."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = all_jobs(port)
        open_jobs = [j for j in jobs if j["status"] not in FINAL]
        if not open_jobs:
            return jobs
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(open_jobs)} jobs never finished, e.g. {open_jobs[:3]}")
        time.sleep(0.5)


def block_slots(srv, slots: int) -> list[int]:
    """Occupy every slot so the whole backlog is queued before anything runs."""
    ids = [srv.submit("import time; time.sleep(55)", uid=BLOCKER_UID, timeout=60)
           for _ in range(slots)]
    deadline = time.monotonic() + 60
    while srv.request("GET", "/healthz").json["running"] < slots:
        assert time.monotonic() < deadline, "blockers never started"
        time.sleep(0.1)
    return ids


def start_order(jobs: list[dict]) -> list[int]:
    """The uids of the jobs that started, in the order they started."""
    ran = sorted((j for j in jobs if j["started_at"]), key=lambda j: (j["started_at"], j["job_id"]))
    return [j["uid"] for j in ran]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def integrity(db_path: Path) -> str:
    """PRAGMA integrity_check of a database no server has open."""
    conn = sqlite3.connect(str(db_path))
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def max_spread(order: list[int], uids: Iterable[int]) -> int:
    """Largest (max - min) of jobs started per user over every prefix of the start order.

    Round-robin keeps this near 1; first-come-first-served of a user-sorted backlog
    makes it as large as one user's whole backlog.
    """
    counts = dict.fromkeys(uids, 0)
    worst = 0
    for uid in order:
        counts[uid] += 1
        worst = max(worst, max(counts.values()) - min(counts.values()))
        if min(counts.values()) > 0:
            counts = {u: c - 1 for u, c in counts.items()}
    return worst


def check_after_crashes(srv, ledger: Ledger, timeout: float = 600) -> list[dict]:
    """The whole contract of SPEC section 1 after kill -9 cycles; returns every job."""
    jobs = wait_all_final(srv.port, timeout)
    ids = [j["job_id"] for j in jobs]
    assert len(ids) == len(set(ids)), "a job id appears twice"
    assert not ledger.duplicates, f"ids answered twice: {ledger.duplicates[:5]}"
    by_id = {j["job_id"]: j for j in jobs}
    lost = [i for i in ledger.acked if i not in by_id]
    assert not lost, f"{len(lost)} acknowledged jobs are gone, e.g. {lost[:5]}"
    for job in (by_id[i] for i in ledger.acked):
        ok = job["status"] == "DONE" and job["attempts"] in (1, 2)
        twice = (job["status"], job["error"], job["attempts"]) == ("ERROR", "interrupted", 2)
        assert ok or twice, job
    assert srv.stop() == 0
    assert integrity(srv.data_dir / "orq.db") == "ok"
    return jobs


def kill_loop(srv, cycles: int, rng: random.Random, done: threading.Event) -> list[int]:
    """kill -9 the server ``cycles`` times at random moments; returns the max id seen alive."""
    seen = []
    for _ in range(cycles):
        time.sleep(rng.uniform(0.3, 2.5))
        srv.kill()
        time.sleep(rng.uniform(0.0, 0.5))
        srv.start(timeout=60)
        jobs = all_jobs(srv.port)
        seen.append(max((j["job_id"] for j in jobs), default=0))
    done.set()
    return seen


def submit_during_kills(srv, work: list[tuple[int, str]], cycles: int, rng: random.Random,
                        threads: int) -> tuple[Ledger, list[int]]:
    """Submit ``work`` over and over while kill_loop kills and restarts the server
    ``cycles`` times; returns the ledger and kill_loop's max id seen after each restart."""
    stop, ledger, seen = threading.Event(), Ledger(), []
    killer = threading.Thread(target=lambda: seen.extend(kill_loop(srv, cycles, rng, stop)))
    killer.start()
    while not stop.is_set():  # keep submitting until the last restart
        submit_all(srv.port, work, threads=threads, ledger=ledger, stop=stop)
    killer.join()
    return ledger, seen


# -- processes and cgroups a server leaves behind (issue 16) ------------------------------

def _stat(pid: int | str) -> tuple[int, str, int] | None:
    """(ppid, state, start time in clock ticks) of a process, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0], int(fields[19])


def process_tree(root: int) -> dict[tuple[int, int], str]:
    """Every live descendant of ``root``: (pid, start time) -> command line. The start
    time tells a process from a later one that reuses its pid."""
    kids: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(entry)) is not None and stat[1] != "Z":
            kids.setdefault(stat[0], []).append(int(entry))
            starts[int(entry)] = stat[2]
    found, todo = {}, [root]
    while todo:
        for pid in kids.get(todo.pop(), []):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            found[(pid, starts[pid])] = cmd
            todo.append(pid)
    return found


def still_alive(procs: dict[tuple[int, int], str]) -> dict[tuple[int, int], str]:
    """Those of ``procs`` still running. A zombie counts as gone: it holds nothing but its
    pid, and on this machine pid 1 never reaps the orphans it adopts."""
    return {key: cmd for key, cmd in procs.items()
            if (stat := _stat(key[0])) is not None and stat[2] == key[1] and stat[1] != "Z"}


def wait_gone(procs: dict[tuple[int, int], str], timeout: float) -> dict[tuple[int, int], str]:
    """Wait until every one of ``procs`` is gone; returns those still alive at the end."""
    deadline = time.monotonic() + timeout
    while (left := still_alive(procs)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def instance_cgroups(data_dir: Path) -> list[Path]:
    """The cgroup directories of the server of ``data_dir`` (orq/<instance>), one per
    hierarchy the local backend uses (cgroup v1 or v2)."""
    root = Path("/sys/fs/cgroup")
    hierarchies = [root] if (root / "cgroup.controllers").exists() else \
        [root / c for c in ("memory", "pids", "cpu", "blkio")]
    return [h / "orq" / instance_name(data_dir) for h in hierarchies]


def cgroup_children(data_dir: Path) -> list[str]:
    """The names of the cgroups under orq/<instance>, every hierarchy together."""
    return sorted(c.name for d in instance_cgroups(data_dir) if d.is_dir()
                  for c in d.iterdir() if c.is_dir())
