"""The AWS Lambda entry point (handler ``lambda_handler.handler``): run ONE orq job.

Standard library only. The deployment zip holds this file and ``core.py`` side by side
(``server/deploy_lambda.py`` builds it), so the job runs exactly as the local backend's
shared code says. The event::

    {"job_id": 7, "language": "python", "code": "...", "input": "...",
     "timeout_s": 10, "memory_mb": 256, "output_cap": 1048576}

The answer is the job's outcome in the job fields' names: ``stdout``, ``stderr``,
``exit_code``, ``error`` (``timeout``, ``output_limit``, ...), ``duration_ms``, ``truncated``.

A Lambda execution environment is reused for later jobs of any user, so each job gets a
fresh private directory under the tmp root (``ORQ_RUNNER_TMP``, default ``/tmp``), sees
none of the function's environment (no AWS credentials), cannot read this process's
environment through ``/proc`` (it is made non-dumpable), and leaves nothing behind:
its process group, any process that escaped it (this process is their subreaper) and
everything it wrote under the tmp root are removed before the answer is returned.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

try:  # inside the repository: server.runner.lambda_handler
    from . import core
except ImportError:  # inside the Lambda zip: top-level modules
    import core

TMP_ROOT_ENV = "ORQ_RUNNER_TMP"
DEFAULT_TIMEOUT_S = 10.0
DEADLINE_MARGIN_S = 2.0  # answer this long before the function itself would time out
MAX_RESPONSE_BYTES = 5_500_000  # a synchronous Lambda answer may be at most 6 MB
PASSED_ENV = ("LD_LIBRARY_PATH",)  # not secret; the runtime's python may need it
PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 4, 36

_tmp_keep: set[str] | None = None  # what the tmp root held when this environment started


def handler(event: dict, context=None) -> dict:
    """Run the job described by ``event``; return its result dict. The event
    ``{"probe": true}`` asks instead which languages (and versions) this function runs."""
    if isinstance(event, dict) and event.get("probe"):
        return {"runtimes": runtimes()}
    job = _parse(event)
    root = os.environ.get(TMP_ROOT_ENV) or "/tmp"
    _prepare(root)
    timeout_s = _timeout(job["timeout_s"], context)
    workdir = tempfile.mkdtemp(prefix="orq-job-", dir=root)  # mode 0700
    try:
        source = os.path.join(workdir, core.SOURCE_NAMES[job["language"]])
        with open(source, "w", encoding="utf-8", errors="surrogatepass") as fh:
            fh.write(job["code"])
        result = core.run_blocking(
            _argv(job["language"], source), job["input"].encode("utf-8", "surrogatepass"),
            timeout_s, workdir, _env(workdir), job["output_cap"],
            preexec_fn=_limits(job["memory_mb"]))
    finally:
        strays = _reap_strays()
        _clean(root)
    result["usage"] = core.add_usage(result["usage"], strays)
    return fit_response(result)


def runtimes() -> list[dict]:
    """[{"language", "version"}] of what jobs may use here: this python, bash, and sh."""
    found = [{"language": "python", "version": platform.python_version()},
             {"language": "sh", "version": "posix"}]
    try:
        out = subprocess.run([shutil.which("bash") or "/bin/bash", "-c", 'echo "$BASH_VERSION"'],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        found.insert(1, {"language": "bash", "version": out.split("(")[0].strip()})
    except (OSError, subprocess.SubprocessError):
        pass
    return found


def _parse(event) -> dict:
    """Check the event; a bad one is a bug in the caller, so it raises (FunctionError)."""
    if isinstance(event, (str, bytes)):
        event = json.loads(event)
    if not isinstance(event, dict) or not isinstance(event.get("code"), str):
        raise TypeError("the event must be a JSON object with a string 'code'")
    language = event.get("language") or "python"
    if language not in core.LANGUAGES:
        raise ValueError(f"unknown language: {language!r}")
    return {"language": language, "code": event["code"],
            "input": str(event.get("input") or ""),
            "timeout_s": float(event.get("timeout_s") or DEFAULT_TIMEOUT_S),
            "memory_mb": int(event.get("memory_mb") or 0),
            "output_cap": int(event.get("output_cap") or core.DEFAULT_OUTPUT_CAP)}


def _timeout(wanted: float, context) -> float:
    """The job's timeout, but never past the function's own deadline."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return wanted
    return max(0.1, min(wanted, remaining() / 1000 - DEADLINE_MARGIN_S))


def _argv(language: str, source: str) -> list[str]:
    bash = shutil.which("bash") or "/bin/bash"
    return core.job_argv(language, source, python=sys.executable, bash=bash)


def _env(workdir: str) -> dict[str, str]:
    """A fresh environment: nothing of the function's (credentials included)."""
    env = core.job_env(home=workdir)
    env["PATH"] = os.path.dirname(sys.executable) + ":" + env["PATH"]
    env.update({k: os.environ[k] for k in PASSED_ENV if os.environ.get(k)})
    return env


def _limits(memory_mb: int):
    """A preexec function: no core dumps, and an address-space cap when asked for."""
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if memory_mb > 0:
            cap = (memory_mb + 64) * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return apply


def _prepare(root: str) -> None:
    """Once per execution environment: protect this process and note the tmp root."""
    global _tmp_keep
    if _tmp_keep is not None:
        return
    _prctl(PR_SET_DUMPABLE, 0)  # /proc/<this pid>/environ is no longer readable by jobs
    _prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of a job become our children: we reap them
    os.makedirs(root, exist_ok=True)
    _tmp_keep = set(os.listdir(root))


def _prctl(option: int, value: int) -> None:
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _children() -> list[int]:
    me, found = os.getpid(), []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me:
            found.append(int(name))
    return found


def _reap_strays(rounds: int = 50) -> dict[str, int]:
    """Kill and reap every process a job left behind (e.g. one that called setsid); their
    usage, together."""
    usage = {"cpu_ms": 0, "max_rss_kb": 0}
    for _ in range(rounds):
        strays = _children()
        if not strays:
            break
        for pid in strays:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in strays:
            try:
                usage = core.add_usage(usage, core.rusage_usage(os.wait4(pid, 0)[2]))
            except ChildProcessError:
                pass
        time.sleep(0.01)
    return usage


def _clean(root: str) -> None:
    """Remove everything a job wrote under the tmp root, however it set permissions."""
    keep = _tmp_keep or set()
    for name in os.listdir(root):
        if name in keep:
            continue
        path = os.path.join(root, name)
        if os.path.isdir(path) and not os.path.islink(path):
            _unlock(path)
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


def _unlock(top: str) -> None:
    """Make every directory under ``top`` ours to empty (a job may chmod 000 them)."""
    try:
        os.chmod(top, stat.S_IRWXU)
    except OSError:
        return
    for dirpath, dirnames, _ in os.walk(top):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            try:
                if not os.path.islink(path):
                    os.chmod(path, stat.S_IRWXU)
            except OSError:
                pass


def fit_response(result: dict, limit: int = MAX_RESPONSE_BYTES) -> dict:
    """Trim stdout/stderr until the JSON answer fits Lambda's response limit."""
    while len(json.dumps(result)) > limit:
        name = max(("stdout", "stderr"), key=lambda n: len(result[n]))
        result[name] = result[name][:len(result[name]) // 2]
        result["truncated"] = True
        if result.get("error") is None:
            result["error"], result["exit_code"] = core.OUTPUT_LIMIT, None
    return result
