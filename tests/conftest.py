"""Fixtures: a real orq-server process on a free port, and a tiny HTTP client for it."""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FINAL = ("DONE", "ERROR", "CANCELLED")
ORQ = str(BIN / "orq")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Response:
    def __init__(self, status: int, headers, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.body[:300]!r}>"


class OrqServer:
    """One orq-server subprocess; restartable on the same data dir."""
    command: tuple[str, ...] = (str(BIN / "orq-server"),)  # test_package.py: an installed one

    def __init__(self, data_dir: Path, args: list[str], env: dict | None = None) -> None:
        self.data_dir, self.args, self.env = data_dir, list(args), env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    def start(self, timeout: float = 20, wait: bool = True) -> OrqServer:
        """Start the server; unless ``wait`` is false, return once it answers /healthz."""
        env = {**os.environ, **self.env}
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the fd
            self.proc = subprocess.Popen(
                [*self.command, "--port", str(self.port), "--data-dir",
                 str(self.data_dir), *self.args], stdout=log, stderr=subprocess.STDOUT, env=env)
        if not wait:
            return self
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"orq-server exited {self.proc.returncode}: {self.log()}")
            try:
                if self.request("GET", "/healthz").status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"orq-server did not become healthy: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> OrqServer:
        self.stop()
        return self.start()

    # -- HTTP ---------------------------------------------------------------------

    def request(self, method: str, path: str, body=None, auth: tuple | None = None,
                token: str | None = None, headers: dict | None = None,
                timeout: float = 60) -> Response:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if auth is not None:
            cred = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            req.add_header("Authorization", f"Basic {cred}")
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return Response(resp.status, resp.headers, resp.read())
        except urllib.error.HTTPError as err:
            return Response(err.code, err.headers, err.read())

    def register(self, uid: int, password: str = "password-123") -> tuple[int, str]:
        resp = self.request("POST", "/users", {"uid": uid, "password": password})
        assert resp.status in (201, 409), resp
        return uid, password

    def token(self, uid: int, password: str = "password-123") -> str:
        resp = self.request("POST", "/auth/token", {"uid": uid, "password": password})
        assert resp.status == 200, resp
        return resp.json["token"]

    def create_admin(self, uid: int, password: str = "admin-password") -> tuple[int, str]:
        subprocess.run([*self.command, "create-admin", "--uid", str(uid),
                        "--data-dir", str(self.data_dir), "--password-stdin"],
                       input=password + "\n", text=True, check=True, capture_output=True)
        return uid, password

    def submit(self, code: str, uid: int = 1, auth: tuple | None = None, **fields) -> int:
        resp = self.request("POST", "/jobs", {"uid": uid, "code": code, "input": "", **fields},
                            auth=auth)
        assert resp.status == 201, resp
        return resp.json["job_id"]

    def wait_final(self, job_id: int, auth: tuple | None = None, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.request("GET", f"/jobs/{job_id}", auth=auth).json
            if job["status"] in FINAL:
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} did not finish: {job}")

    def wait_status(self, job_id: int, status: str, auth: tuple | None = None,
                    timeout: float = 30) -> dict:
        """Poll until the job has ``status`` (e.g. RUNNING) and return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.request("GET", f"/jobs/{job_id}", auth=auth).json
            if job["status"] == status:
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} never reached {status}: {job}")

    def run(self, code: str, uid: int = 1, auth: tuple | None = None, **fields) -> dict:
        """Submit with ?wait=true and return the final job."""
        resp = self.request("POST", "/jobs?wait=true",
                            {"uid": uid, "code": code, "input": "", **fields}, auth=auth)
        assert resp.status == 200, resp
        return resp.json


@pytest.fixture
def server_factory(tmp_path):
    """Start servers with any flags: ``server_factory("--auth", "open")``."""
    started: list[OrqServer] = []

    def make(*args: str, env: dict | None = None, data_dir: Path | None = None) -> OrqServer:
        srv = OrqServer(data_dir or tmp_path / f"data{len(started)}", list(args), env)
        started.append(srv)
        return srv.start()
    yield make
    for srv in started:
        srv.kill()


@pytest.fixture
def orq(tmp_path):
    """Run `orq ARGS...` with private XDG dirs; returns the CompletedProcess."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
           "XDG_DATA_HOME": str(tmp_path / "data")}
    for name in ("ORQ_SERVER", "ORQ_PASSWORD"):
        env.pop(name, None)

    def run(*args: str, server=None, stdin: str | None = None, extra: dict | None = None,
            timeout: float = 90) -> subprocess.CompletedProcess:
        argv = [ORQ, *(["--server", server.url] if server else []), *args]
        return subprocess.run(argv, check=False, input=stdin, capture_output=True, text=True,
                              env={**env, **(extra or {})}, timeout=timeout)
    run.env = env
    run.config = tmp_path / "cfg" / "orq"
    return run


@pytest.fixture(scope="session")
def open_server(tmp_path_factory):
    """A shared server in --auth open mode (the original spec)."""
    srv = OrqServer(tmp_path_factory.mktemp("open") / "data", ["--auth", "open"]).start()
    yield srv
    srv.kill()


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory):
    """A shared server in the default --auth required mode, with admin uid 0."""
    srv = OrqServer(tmp_path_factory.mktemp("auth") / "data", []).start()
    srv.create_admin(0)
    yield srv
    srv.kill()


@pytest.fixture(scope="session")
def langs_server(tmp_path_factory):
    """A shared --auth open server with the image "langs" (every runtime; built once, cached)."""
    from images_support import LANGS, copy_data_dir, debian_template
    data = copy_data_dir(debian_template(*LANGS), tmp_path_factory.mktemp("langs") / "data")
    srv = OrqServer(data, ["--auth", "open"]).start()
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's), for the dashboard tests."""
    from dashboard_support import CHROMIUM, CHROMIUM_ARGS
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser):
    """``new_page(viewport)`` -> (page, console log); contexts are closed afterwards."""
    from dashboard_support import DESKTOP, WAIT, ConsoleLog
    contexts = []

    def make(viewport: dict = DESKTOP):
        context = browser.new_context(viewport=viewport)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT)
        return page, ConsoleLog(page)
    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def fake(lambda_zip, tmp_path):
    """A Lambda Invoke endpoint on 127.0.0.1 running the real handler (tests/lambda_fake.py)."""
    from lambda_support import FakeLambda
    fake = FakeLambda.start(lambda_zip, tmp_path / "fake")
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def lambda_zip(tmp_path_factory) -> Path:
    """The Lambda deployment zip, built by the real packaging code."""
    path = tmp_path_factory.mktemp("zip") / "runner.zip"
    subprocess.run([sys.executable, "-m", "server.deploy_lambda", "--package-only", str(path)],
                   cwd=REPO, check=True, capture_output=True)
    return path


def pytest_configure(config):
    if shutil.which("bwrap") is None:
        pytest.exit("bubblewrap is missing: run scripts/test.sh (it installs it)", returncode=2)
