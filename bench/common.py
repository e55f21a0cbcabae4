"""Shared pieces of the benchmark suite: servers on free ports, wrk, percentiles."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Self

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import free_port
from reliability_support import process_tree, rss_kb

BENCH = REPO / "bench"
BIN = Path(sys.executable).parent
RESULTS = BENCH / "results"
PASSWORD = "bench-password-1"


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def basic_header(uid: int, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{uid}:{password}".encode()).decode()


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> float:
    """Poll ``url`` until it answers 200; returns the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


class Server:
    """One subprocess (orq-server or the hello-world baseline) on a free port."""

    def __init__(self, argv: list[str], port: int, log_name: str,
                 env: dict | None = None) -> None:
        self.argv, self.port, self.env = argv, port, env
        self.url = f"http://127.0.0.1:{port}"
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.log_path = RESULTS / f"{log_name}-{port}.log"
        self.proc: subprocess.Popen | None = None
        self.startup_s = 0.0

    def start(self, timeout: float = 60) -> Server:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, **(self.env or {})})
        self.startup_s = wait_http(self.url + "/healthz", timeout, self.proc)
        return self

    def cpu_s(self) -> float:
        """User + system CPU seconds this server process has used so far (all threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def tree_cpu_s(self) -> float:
        """CPU seconds of this server and every process below it (sandboxes, runners, the
        jobs), live or already reaped: what the other processes of a shared machine do
        not blur, unlike wall time or the machine's busy time."""
        total = 0
        for pid in [self.proc.pid] + [pid for pid, _ in process_tree(self.proc.pid)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile: its time is in its parent's children's time
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        return total / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        return rss_kb(self.proc.pid) / 1024

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def orq_server(data_dir: Path, auth: str = "open", extra: list[str] | None = None,
               env: dict | None = None) -> Server:
    port = free_port()
    argv = [str(BIN / "orq-server"), "--port", str(port), "--data-dir", str(data_dir),
            "--auth", auth, "--log-level", "warning", "--max-unfinished-per-user", "1000000",
            *(extra or [])]
    return Server(argv, port, "orq", env)


def hello_server(payload: bytes) -> Server:
    """The bare Tornado baseline answering ``payload`` to GET and POST."""
    port = free_port()
    path = Path(tempfile.mkstemp(prefix="orq-hello-", suffix=".json")[1])
    path.write_bytes(payload)
    argv = [sys.executable, str(BENCH / "hello.py"), str(port), str(path)]
    return Server(argv, port, "hello")


class KeepAlive:
    """One kept-alive HTTP/1.1 connection for asyncio code, as any serious client keeps
    one: Tornado's simple client opens a connection per request, which would bill a TCP
    set-up and tear-down to the server (and to the same 2 cores) for every job."""

    def __init__(self, url: str) -> None:
        parsed = urllib.parse.urlparse(url)
        self.host, self.port = parsed.hostname, parsed.port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: dict | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Length: {len(body)}\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()) + "\r\n")
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            self.close()
            raise ConnectionError(f"{method} {path}: the server closed the connection")
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection":
                close = value == "close"
        data = await self.reader.readexactly(length)
        if close:
            self.close()
        return int(status_line.split()[1]), data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def wait_job(self, fields: dict) -> tuple[float, int, dict]:
        """One job submitted with ``?wait=true``: the seconds until its answer, the HTTP
        status and the job."""
        start = time.monotonic()
        status, data = await self.request("POST", "/jobs?wait=true", json.dumps(fields).encode(),
                                          {"Content-Type": "application/json"})
        return time.monotonic() - start, status, json.loads(data)


def machine_cpu_s() -> float:
    """Busy CPU seconds of the whole machine so far (every core; idle and iowait excluded)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def request(url: str, method: str = "GET", body: dict | None = None,
            headers: dict | None = None, timeout: float = 30) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def request_json(url: str, method: str = "GET", body: dict | None = None,
                 headers: dict | None = None) -> object:
    status, data = request(url, method, body, headers)
    if status >= 300:
        raise RuntimeError(f"{method} {url}: {status} {data[:200]!r}")
    return json.loads(data)


def wrk(url: str, seconds: float, script: str | None = None, connections: int = 32,
        env: dict | None = None) -> dict:
    """Run wrk (1 thread, ``connections`` connections); returns req/s and non-2xx count."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    if script:
        argv += ["-s", str(BENCH / "wrk" / script)]
    out = subprocess.run(argv + [url], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})}).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {"rps": rps, "non2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(0) if errors else ""}


def blocker_job(url: str, uid: int = 0, headers: dict | None = None) -> None:
    """Fill the one slot with a sleeping job so benchmark submissions stay WAITING."""
    request_json(url + "/jobs", "POST", {"uid": uid, "code": "import time; time.sleep(55)",
                                         "input": "", "timeout": 60}, headers)



@contextlib.contextmanager
def image_data(template: Path, prefix: str):
    """A fresh data dir holding a template's image (tests/images_support.py), in a directory
    uid 65534 may enter: the baselines run bwrap as that user, as orq does. Yields (data dir,
    the image's root file system, the environment of a job in it, a scratch directory)."""
    from images_support import copy_data_dir  # tests/ is on sys.path (above)

    from server.backends.sandbox import image_env
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(tmp, 0o755)
    try:
        data = copy_data_dir(template, tmp / "data")
        store = next((data / "images" / "store").iterdir())
        env = image_env(json.loads((store / "image.json").read_text())["env"])
        yield data, str(store / "rootfs"), env, tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
