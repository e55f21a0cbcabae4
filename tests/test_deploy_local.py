"""scripts/deploy.sh local --runtimes: builds the images those languages need (once), then
starts the server, which runs them."""
from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request

from conftest import REPO, free_port

from server.runtimes import BY_LANGUAGE


def deploy(data, *args: str, port: int | None = None) -> subprocess.Popen:
    """scripts/deploy.sh local with this checkout's virtualenv (the one running the tests)."""
    env = {**os.environ, "ORQ_VENV": str(REPO / ".venv")}
    argv = ["bash", str(REPO / "scripts" / "deploy.sh"), "local", "--data-dir", str(data),
            "--auth", "open", "--port", str(port or free_port()), *args]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)


def wait_for(proc: subprocess.Popen, marker: str, timeout: float = 600) -> list[str]:
    """Lines of the deploy's output up to the one holding ``marker``."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("deploy.sh ended early:\n" + "".join(lines[-30:]))
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError("deploy.sh too slow:\n" + "".join(lines[-30:]))


def test_runtimes_are_built_once_and_served(tmp_path):
    data, port = tmp_path / "data", free_port()
    proc = deploy(data, "--runtimes", "ruby,py", port=port)
    try:
        lines = wait_for(proc, "listening on")
        assert any("building the images for: ruby,py" in line for line in lines)
        assert any("probing its runtimes" in line for line in lines), lines[-10:]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/runtimes") as resp:
            runtimes = json.load(resp)
        assert any(r["image"] == "ruby" and r["language"] == "ruby" for r in runtimes), runtimes
    finally:
        proc.terminate()
        proc.wait(30)
    again = deploy(data, "--runtimes", "rb", port=free_port())
    try:
        lines = wait_for(again, "listening on", timeout=120)
        packages = ", ".join(BY_LANGUAGE["ruby"].packages)
        assert any(f"image ruby: already built from {packages}" in line for line in lines)
        assert not any("making the root file system" in line for line in lines)
    finally:
        again.terminate()
        again.wait(30)


def test_unknown_runtime_is_one_clear_line(tmp_path):
    proc = deploy(tmp_path / "data", "--runtimes", "cobol")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out
    assert out.strip().splitlines()[-1] == ("orq: unknown runtime 'cobol'; known: "
                                            + ", ".join(sorted(BY_LANGUAGE)))
