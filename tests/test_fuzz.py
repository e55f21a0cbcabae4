"""Schemathesis (v4) against the live /openapi.json of real servers, in both auth modes.

`--checks all`: every answer must not be a 5xx and must conform to the document (status,
content type, headers, body schema, 405 with Allow), a schema-valid request must be accepted
and a schema-violating one refused, credentials must be enforced where the document asks for
them, and a created job must be readable. One check is left out, because the contract says
otherwise (see USE_AFTER_FREE). The examples,
coverage (boundaries of every range and enum), fuzzing and stateful (POST /jobs -> GET,
DELETE ...) phases run over every operation the served document lists, so an operation
added to the document is tested without editing this file. Afterwards each server must
still be healthy and its log free of tracebacks.

The schemathesis CLI is used rather than its pytest plugin: the plugin's lazy
``from_fixture`` loader fails under pytest 9, and the CLI reads the document from the live
server exactly as an outside client would.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import OrqServer

ST = Path(sys.executable).parent / "schemathesis"
MAX_EXAMPLES = "25"  # per operation and phase; about 25 s per mode on a quiet 2-core box
PHASES = "examples,coverage,fuzzing,stateful"
ADMIN = (0, "admin-password")
# use_after_free expects a resource gone after any successful DELETE; SPEC section 2 makes
# DELETE /jobs/<id> a cancel that keeps the job readable (CANCELLED), and only ?purge=true
# removes it (that purge then 404s is checked in test_openapi.py and test_api.py)
USE_AFTER_FREE = "use_after_free"
# One worker: with two, schemathesis' threads call ast.parse at once (hypothesis describes
# its filters), which CPython before 3.11.8/3.12.1 can fail with "SystemError: AST constructor
# recursion depth mismatch" (python/cpython#106905); Debian 12's python3 is 3.11.2.
WORKERS = "1"
# GET /ws is a WebSocket upgrade, which an HTTP fuzzer cannot open (tests/test_ws.py covers it)
NOT_HTTP = ("events",)
# An invalid request may also be refused with 413: code and input are limited in UTF-8 bytes,
# which JSON Schema cannot state (maxLength counts characters; the descriptions say so).
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
    # short timeouts: a generated POST /jobs?wait=true must not hold the run for long (the
    # served document states these maxima, so valid requests stay within them)
    flags = [*args, "--timeout-s", "2", "--max-timeout-s", "3"]
    return OrqServer(tmp_path_factory.mktemp(name) / "data", flags).start()


def schemathesis_run(srv: OrqServer, *extra: str) -> subprocess.CompletedProcess:
    config = srv.data_dir.parent / "schemathesis.toml"
    config.write_text(CONFIG)
    skip = [arg for op in NOT_HTTP for arg in ("--exclude-operation-id", op)]
    argv = [str(ST), "--config-file", str(config), "run", srv.url + "/openapi.json",
            "--checks", "all", "--exclude-checks", USE_AFTER_FREE, "--phases", PHASES, "--max-examples", MAX_EXAMPLES,
            "--workers", WORKERS, "--seed", "7", "--generation-database", "none",
            "--request-timeout", "30", "--no-color", "--max-failures", "20", *skip, *extra]
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=600,
                          cwd=srv.data_dir.parent)


def _assert_passed(proc: subprocess.CompletedProcess, srv: OrqServer) -> None:
    out = proc.stdout + proc.stderr
    report = re.sub(r"(.)\1{200,}", r"\1\1\1...", out)  # a 256 KiB boundary string, shortened
    assert proc.returncode == 0, report[-12000:] + "\n--- server log ---\n" + srv.log()
    documented = srv.request("GET", "/openapi.json").json["paths"]
    operations = sum(method in ("get", "post", "delete", "put", "patch")
                     for ops in documented.values() for method in ops)
    selected = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", out)
    assert selected, report[-3000:]
    chosen, total, tested = map(int, selected.groups())
    # every documented operation (schemathesis leaves out GET /openapi.json, its own source)
    assert tested == chosen == total - len(NOT_HTTP) and total >= operations - 1, report[-3000:]
    for phase in PHASES.split(","):  # each phase ran (none was skipped for lack of data)
        assert re.search(rf"✅ {phase}", out, re.IGNORECASE), report[-3000:]


def test_fuzz_open_mode(fuzz_open: OrqServer) -> None:
    _assert_passed(schemathesis_run(fuzz_open), fuzz_open)


def test_fuzz_auth_mode(fuzz_auth: OrqServer) -> None:
    """Signed in as the admin (a verified Basic pair is cached); the checks also send the
    requests without credentials and with wrong ones where the document requires them."""
    _assert_passed(schemathesis_run(fuzz_auth, "--auth", f"{ADMIN[0]}:{ADMIN[1]}"), fuzz_auth)


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
