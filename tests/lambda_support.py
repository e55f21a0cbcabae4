"""The Lambda test endpoint (tests/lambda_fake.py) as the tests drive it."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import REPO


class FakeLambda:
    def __init__(self, proc: subprocess.Popen, port: int) -> None:
        self.proc, self.url = proc, f"http://127.0.0.1:{port}"

    @classmethod
    def start(cls, lambda_zip: Path, workdir: Path, *flags: str) -> FakeLambda:
        proc = subprocess.Popen([sys.executable, str(REPO / "tests/lambda_fake.py"), "--zip",
                                 str(lambda_zip), "--workdir", str(workdir), *flags],
                                stdout=subprocess.PIPE, text=True)
        return cls(proc, int(proc.stdout.readline()))

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def control(self, what: str, **body) -> None:
        req = urllib.request.Request(f"{self.url}/_fake/{what}", json.dumps(body).encode(),
                                     method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200

    def stats(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/_fake/stats", timeout=10) as resp:
            return json.loads(resp.read())

    def env(self) -> dict:
        """What the server needs to reach this fake through boto3's own configuration."""
        return {"AWS_ENDPOINT_URL_LAMBDA": self.url, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}


def poll(until, timeout: float = 60, every: float = 0.05):
    """Call ``until`` until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = until()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not met in time")
