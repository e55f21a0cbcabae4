"""Execution environments for tests/lambda_fake.py: the REAL handler, kept warm and reused.

Each environment is one long-lived process that imports ``lambda_handler`` from the
unpacked zip and calls ``handler(event, context)`` for one event at a time, as Lambda's
python runtime does in a warm execution environment. Where this machine allows it (root,
util-linux ``unshare``), each runs in its own PID namespace with its own /proc, as a
Lambda micro-VM has its own process table: the handler scans /proc for processes a job
left behind, and on a shared machine that scan would cost in proportion to every process
of every environment. An environment ends when the fake does (its stdin closes), once
its invocation in progress, if any, has ended.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time

DRIVER = r"""
import json, os, sys, time, traceback
sys.path.insert(0, sys.argv[1])
function_timeout = float(sys.argv[2])
class Context:
    function_name = "orq-runner"
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    def __init__(self):
        self.deadline = time.monotonic() + function_timeout
    def get_remaining_time_in_millis(self):
        return int((self.deadline - time.monotonic()) * 1000)
import lambda_handler
answers = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)  # nothing but answers on the answer pipe
answers.write('{"ready": true}\n')
answers.flush()
for line in sys.stdin:
    try:
        answer = {"result": lambda_handler.handler(json.loads(line), Context())}
    except Exception as exc:
        answer = {"errorMessage": str(exc), "errorType": type(exc).__name__,
                  "stackTrace": traceback.format_exc().splitlines()}
    answers.write(json.dumps(answer) + "\n")
    answers.flush()
"""
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]


def _own_pid_namespace() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(UNSHARE + ["true"], capture_output=True, check=False).returncode == 0


class EnvironmentDied(Exception):
    """The environment's process ended without answering (Runtime.ExitError)."""


class Environment:
    def __init__(self, n: int, task_dir: str, workdir: str, timeout_s: float,
                 credentials: dict, isolate: bool) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **credentials,
               "ORQ_RUNNER_TMP": os.path.join(workdir, f"tmp-{n}")}
        self.log_path = os.path.join(workdir, f"env-{n}.log")
        argv = [PYTHON, "-c", DRIVER, task_dir, str(timeout_s)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen((UNSHARE if isolate else []) + argv,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log, env=env)
        self.ready = False

    def wait_ready(self) -> None:
        """Until the runtime has imported the handler (Lambda's init phase)."""
        if not self.ready:
            self.ready = self._read() == {"ready": True}

    def invoke(self, event: dict) -> dict:
        self.wait_ready()
        try:
            self.proc.stdin.write(json.dumps(event).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # it died: _read says so
        return self._read()

    def _read(self) -> dict:
        try:
            line = self.proc.stdout.readline()
        except OSError:
            line = b""
        if not line:
            raise EnvironmentDied(self._last_words())
        return json.loads(line)

    def cpu_s(self) -> float:
        """CPU seconds of this environment's runtime and of the jobs it has reaped."""
        pid = self.proc.pid
        if self.proc.args[0] == UNSHARE[0]:  # the runtime is unshare's child
            try:
                with open(f"/proc/{pid}/task/{pid}/children") as fh:
                    pid = int(fh.read().split()[0])
            except (OSError, ValueError, IndexError):
                return 0.0
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def _last_words(self) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                return fh.read()[-500:].decode(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # unshare --kill-child takes the namespace down with it
        self.proc.wait()


class Pool:
    """Idle environments, reused most recently used first, as Lambda does; more are
    started while all are busy (cold starts)."""

    def __init__(self, task_dir: str, workdir: str, timeout_s: float, credentials: dict) -> None:
        self.args = (task_dir, workdir, timeout_s, credentials, _own_pid_namespace())
        self.lock = threading.Lock()
        self.idle: list[Environment] = []
        self.everyone: set[Environment] = set()
        self.numbers = itertools.count(1)

    def _new(self) -> Environment:
        with self.lock:
            n = next(self.numbers)
        env = Environment(n, *self.args)
        with self.lock:
            self.everyone.add(env)
        return env

    def prewarm(self, count: int) -> None:
        """Start ``count`` environments now (Lambda's provisioned concurrency)."""
        fresh = [self._new() for _ in range(count)]
        for env in fresh:
            env.wait_ready()
        with self.lock:
            self.idle.extend(fresh)

    def invoke(self, event: dict) -> dict:
        with self.lock:
            env = self.idle.pop() if self.idle else None
        env = env or self._new()
        try:
            answer = env.invoke(event)
        except EnvironmentDied as exc:
            env.close()
            with self.lock:
                self.everyone.discard(env)
            return {"errorMessage": f"Runtime exited without an answer: {exc}",
                    "errorType": "Runtime.ExitError"}
        with self.lock:
            self.idle.append(env)
        return answer

    def size(self) -> int:
        with self.lock:
            return len(self.everyone)

    def cpu_s(self) -> float:
        """CPU seconds of every live environment, its jobs included."""
        with self.lock:
            everyone = list(self.everyone)
        return sum(env.cpu_s() for env in everyone)

    def close(self) -> None:
        with self.lock:
            everyone, self.everyone, self.idle = list(self.everyone), set(), []
        for env in everyone:
            env.close()


class Replay:
    """FOR BENCHMARKS ONLY, a model of Lambda's compute happening on other machines: the
    first invocation of a distinct event (its job_id aside) runs the real handler here;
    every identical one is answered with that answer after the same wall time, and runs
    nothing on this machine. What it keeps real: the HTTP exchange, the injected latency,
    the concurrency, and everything orq does; what it models: the job's own processes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.known: dict[str, tuple[threading.Event, list]] = {}

    def invoke(self, event: dict, run) -> dict:
        began = time.monotonic()
        key = json.dumps({k: v for k, v in event.items() if k != "job_id"}, sort_keys=True)
        with self.lock:
            first = key not in self.known
            if first:
                self.known[key] = (threading.Event(), [])
            done, outcome = self.known[key]
        if first:
            answer = {"errorMessage": "the model's first run failed", "errorType": "Replay"}
            try:
                answer = run(event)
            finally:
                outcome[:] = [answer, time.monotonic() - began]
                done.set()
            return answer
        done.wait()
        answer, wall_s = outcome
        time.sleep(max(0.0, wall_s - (time.monotonic() - began)))
        return json.loads(json.dumps(answer))
