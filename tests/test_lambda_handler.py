"""The Lambda runner, run as Lambda runs it: imported from the BUILT zip in its own process
(an unprivileged user when the tests run as root, like Lambda's sbx_user), called with an
event and a context object, on real scripts."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest
from conftest import REPO
from environments import DRIVER
from lambda_fake import FAKE_CREDENTIALS, FAKE_SECRET, extract

PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
AS_ROOT = os.geteuid() == 0
NOBODY = 65534


@pytest.fixture
def lam(lambda_zip):
    """A fresh 'execution environment': the zip unpacked as /var/task, a private tmp root."""
    base = Path(tempfile.mkdtemp(prefix="orq-lambda-test-"))
    base.chmod(0o755)
    extract(lambda_zip, base / "task")
    root = base / "tmp"
    root.mkdir()
    if AS_ROOT:
        os.chown(root, NOBODY, NOBODY)
    env = Environment(base / "task", root)
    yield env
    shutil.rmtree(base, ignore_errors=True)


class Environment:
    def __init__(self, task: Path, root: Path) -> None:
        self.task, self.root = task, root

    def invoke(self, *events: dict, function_timeout: float = 60) -> list[dict]:
        """Call the handler once per event, all in one warm process."""
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", **FAKE_CREDENTIALS,
               "ORQ_RUNNER_TMP": str(self.root), "ORQ_SECRET_SETTING": "server-only"}
        proc = subprocess.run(
            [PYTHON, "-c", DRIVER, str(self.task), str(function_timeout)],
            input="".join(json.dumps(e) + "\n" for e in events), capture_output=True, text=True,
            env=env, check=False, cwd=self.task, timeout=120,
            **({"user": NOBODY, "group": NOBODY} if AS_ROOT else {}))
        assert proc.returncode == 0, proc.stderr
        ready, *answers = (json.loads(line) for line in proc.stdout.splitlines())
        assert ready == {"ready": True}
        return [a.get("result", a) for a in answers]

    def run(self, code: str, **fields) -> dict:
        return self.invoke({"code": code, **fields})[0]


def test_zip_holds_the_handler_and_the_same_core():
    import io

    from server.deploy_lambda import build_zip
    with zipfile.ZipFile(io.BytesIO(build_zip())) as zf:
        assert sorted(zf.namelist()) == ["core.py", "lambda_handler.py"]
        assert zf.read("core.py") == (REPO / "server/runner/core.py").read_bytes()
        assert zf.read("lambda_handler.py") == (REPO / "server/runner/lambda_handler.py").read_bytes()


def test_output_stdin_and_exit_codes(lam):
    ok, bash, failing = lam.invoke(
        {"code": "import sys\nprint('got', sys.stdin.read().upper())", "input": "hello é"},
        {"language": "bash", "code": "read x; echo \"bash $x\"; echo oops >&2; exit 3",
         "input": "there\n"},
        {"code": "import sys\nprint('partial')\nsys.exit(5)"})
    assert ok == {"stdout": "got HELLO É\n", "stderr": "", "exit_code": 0, "error": None,
                  "duration_ms": ok["duration_ms"], "truncated": False, "usage": ok["usage"]}
    assert isinstance(ok["duration_ms"], int) and ok["duration_ms"] >= 0
    assert (bash["stdout"], bash["stderr"], bash["exit_code"]) == ("bash there\n", "oops\n", 3)
    assert (failing["stdout"], failing["exit_code"], failing["error"]) == ("partial\n", 5, None)


def test_timeout_keeps_partial_output(lam):
    began = time.monotonic()
    res = lam.run("import time\nprint('before', flush=True)\ntime.sleep(60)\nprint('after')",
                  timeout_s=1)
    assert time.monotonic() - began < 30
    assert (res["stdout"], res["error"], res["exit_code"]) == ("before\n", "timeout", None)
    assert res["duration_ms"] >= 900


def test_timeout_stays_below_the_functions_own_timeout(lam):
    """A job asking for more time than the function has left is stopped in time, cleanly."""
    began = time.monotonic()
    res = lam.invoke({"code": "import time\nprint('x', flush=True)\ntime.sleep(60)",
                      "timeout_s": 30}, function_timeout=4)[0]
    assert res["error"] == "timeout" and res["stdout"] == "x\n"
    assert time.monotonic() - began < 20


def test_output_is_capped(lam):
    res = lam.run("import sys\nsys.stdout.write('x' * 100000)\nsys.stderr.write('e' * 10)",
                  output_cap=1000)
    assert res["truncated"] is True and res["error"] == "output_limit"
    assert res["stdout"] == "x" * 1000 and res["exit_code"] is None


def test_credentials_and_environment_are_hidden(lam):
    # The job checks it CAN read a same-user process's /proc environ (its own child, given
    # a marker), so a clean scan means the handler's environment is really out of reach.
    code = r"""
import json, os, subprocess, time
child = subprocess.Popen(["sleep", "30"], env={"MARKER": "visible-marker"})
time.sleep(0.3)
found = []
for pid in os.listdir("/proc"):
    if pid.isdigit():
        for what in ("environ", "cmdline"):
            try:
                data = open(f"/proc/{pid}/{what}", "rb").read()
            except OSError:
                continue
            for needle in (b"FAKE-SECRET", b"visible-marker", b"server-only"):
                if needle in data:
                    found.append((pid, what, needle.decode()))
child.kill()
print(json.dumps({"env": dict(os.environ), "found": found}))
"""
    res = lam.run(code)
    assert res["exit_code"] == 0, res
    seen = json.loads(res["stdout"])
    assert FAKE_SECRET not in res["stdout"] + res["stderr"]
    assert not any(k.startswith(("AWS_", "ORQ_")) for k in seen["env"])
    assert set(seen["env"]) <= {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONDONTWRITEBYTECODE",
                                "PYTHONIOENCODING", "LD_LIBRARY_PATH"}
    needles = {needle for _, _, needle in seen["found"]}
    assert needles == {"visible-marker"}, seen["found"]


def test_tmp_and_processes_are_clean_between_jobs(lam):
    first = r"""
import os, subprocess
root = os.path.dirname(os.environ["TMPDIR"])
open("here.txt", "w").write("job one")
open(os.path.join(root, "leftover.txt"), "w").write("job one")
os.makedirs(os.path.join(root, "locked/inner"))
open(os.path.join(root, "locked/inner/f"), "w").write("x")
os.chmod(os.path.join(root, "locked/inner"), 0)
os.chmod(os.path.join(root, "locked"), 0)
quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
escaped = subprocess.Popen(["sleep", "300"], start_new_session=True, **quiet)
grouped = subprocess.Popen(["sleep", "300"], **quiet)
print(os.getcwd(), escaped.pid, grouped.pid)
"""
    second = r"""
import os, stat
root = os.path.dirname(os.environ["TMPDIR"])
print(sorted(os.listdir(root)), os.getcwd(), oct(stat.S_IMODE(os.stat(os.getcwd()).st_mode)))
"""
    one, two = lam.invoke({"code": first}, {"code": second})
    assert one["exit_code"] == 0 and one["error"] is None, one
    cwd1, escaped, grouped = one["stdout"].split()
    listing, cwd2, mode = two["stdout"].rsplit(" ", 2)
    assert cwd2.strip() != cwd1 and mode.strip() == "0o700"
    assert eval(listing) == [os.path.basename(cwd2.strip())]  # only its own fresh dir
    for pid in (escaped, grouped):
        assert not _alive(int(pid)), f"process {pid} outlived its job"
    assert list(lam.root.iterdir()) == []


def test_a_bad_event_is_a_function_error(lam):
    res = lam.invoke({"code": "print(1)", "language": "cobol"})[0]
    assert res["errorType"] == "ValueError" and "cobol" in res["errorMessage"]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_answer_fits_lambdas_response_limit(lam):
    """Control characters take 6 bytes each in the JSON answer: 2 MB of them would be a
    12 MB answer, which Lambda refuses; the handler trims the output instead."""
    res = lam.run("import sys\nsys.stdout.write('\\x01' * 2_000_000)",
                  output_cap=4 * 1024 * 1024)
    assert len(json.dumps(res)) <= 5_500_000
    assert res["truncated"] is True and res["error"] == "output_limit"
    assert 100_000 < len(res["stdout"]) < 2_000_000 and set(res["stdout"]) == {"\x01"}
