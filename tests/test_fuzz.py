"""Schemathesis (v4) against /openapi.json of real servers, in both auth modes.

Every operation gets a bounded number of generated requests (valid and invalid,
plus schemathesis' coverage and stateful phases); each answer must not be a 5xx
and must conform to the document (status code, content type, headers, body
schema, 405 with Allow, ...). Afterwards the server must still be healthy and
its log free of tracebacks.

The schemathesis CLI is used rather than its pytest plugin: the plugin's lazy
``from_fixture`` loader fails under pytest 9, and the CLI reads the document from
the live server exactly as an outside client would.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import OrqServer

ST = Path(sys.executable).parent / "schemathesis"
MAX_EXAMPLES = "15"  # per operation; about 30 s per mode on a quiet 2-core box
# positive_data_acceptance judges validity by the schema alone, but orq's limits also
# depend on the server's configured maxima and on who asks (another user's uid is 403);
# ignored_auth assumes every operation needs credentials, yet open mode has none.
# use_after_free assumes a 2xx DELETE removed the resource, yet DELETE /jobs/<id> without
# ?purge=true cancels the job, which stays readable (SPEC section 2).
EXCLUDED = "positive_data_acceptance,ignored_auth,use_after_free"
ADMIN = (0, "admin-password")
# a refused invalid request may also be 413 (code > 256 KiB once encoded: maxLength counts
# characters, the limit counts bytes)
CONFIG = """[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422",
                     "428", "429"]
"""


@pytest.fixture(scope="module")
def fuzz_open(tmp_path_factory):
    srv = _start(tmp_path_factory, "fuzz-open", ["--auth", "open"])
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def fuzz_auth(tmp_path_factory):
    srv = _start(tmp_path_factory, "fuzz-auth", [])
    srv.create_admin(*ADMIN)
    yield srv
    srv.kill()


def _start(tmp_path_factory, name: str, args: list[str]) -> OrqServer:
    # short timeouts: a generated POST /jobs?wait=true must not hold the run for long
    flags = [*args, "--timeout-s", "2", "--max-timeout-s", "3"]
    return OrqServer(tmp_path_factory.mktemp(name) / "data", flags).start()


def schemathesis_run(srv: OrqServer, *extra: str) -> subprocess.CompletedProcess:
    config = srv.data_dir.parent / "schemathesis.toml"
    config.write_text(CONFIG)
    argv = [str(ST), "--config-file", str(config), "run", srv.url + "/openapi.json", "--max-examples", MAX_EXAMPLES,
            "--checks", "all", "--exclude-checks", EXCLUDED, "--workers", "2", "--seed", "7",
            "--generation-database", "none", "--request-timeout", "30", "--no-color",
            "--max-failures", "20", *extra]
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=600,
                          cwd=srv.data_dir.parent)


def _assert_passed(proc: subprocess.CompletedProcess, srv: OrqServer) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-12000:] + "\n--- server log ---\n" + srv.log()
    selected = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", out)
    assert selected, out[-3000:]
    chosen, total, tested = map(int, selected.groups())
    assert tested == chosen >= total - 1 >= 12, out[-3000:]  # every selected operation ran


def test_fuzz_open_mode(fuzz_open: OrqServer) -> None:
    _assert_passed(schemathesis_run(fuzz_open), fuzz_open)


def test_fuzz_auth_mode(fuzz_auth: OrqServer) -> None:
    """Signed in as the admin on every request (a verified Basic pair is cached)."""
    # POST /auth/token ignores its body when Basic credentials come along, so negative
    # bodies are "accepted" there; the open-mode run covers it without credentials
    proc = schemathesis_run(fuzz_auth, "--auth", f"{ADMIN[0]}:{ADMIN[1]}",
                            "--exclude-operation-id", "login")
    _assert_passed(proc, fuzz_auth)


@pytest.mark.parametrize("which", ["fuzz_open", "fuzz_auth"])
def test_server_survived_fuzzing(which: str, request) -> None:
    """Runs after the fuzz tests above (file order): alive, healthy, no traceback logged."""
    srv: OrqServer = request.getfixturevalue(which)
    assert srv.proc.poll() is None, srv.log()
    health = srv.request("GET", "/healthz", timeout=10)
    assert health.status == 200 and health.json["ok"] is True
    job = srv.request("POST", "/jobs?wait=true", {"uid": 0, "code": "print(6*7)"},
                      auth=ADMIN if which == "fuzz_auth" else None).json
    assert job["status"] == "DONE" and job["result"] == "42\n", job
    log = srv.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "Uncaught exception" not in log, log[-4000:]
