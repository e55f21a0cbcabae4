"""Running ONE job: languages, output caps, result shape, and a blocking runner.

Standard library only: this module is imported by the server's local backend and
shipped inside the AWS Lambda zip (see ``lambda_handler.py``), so both report a
job's outcome the same way.
"""
from __future__ import annotations

import os
import resource
import selectors
import signal
import subprocess
import time

LANGUAGES = ("python", "bash", "sh")
SOURCE_NAMES = {"python": "main.py", "bash": "main.sh", "sh": "main.sh"}
DEFAULT_OUTPUT_CAP = 1024 * 1024

# reasons a job ended without a usable exit code (SPEC section 1, field "error")
TIMEOUT = "timeout"
MEMORY = "memory"
OUTPUT_LIMIT = "output_limit"
CANCELLED = "cancelled"
INTERRUPTED = "interrupted"


def job_argv(language: str, source_path: str, python: str = "python3",
             bash: str = "bash") -> list[str]:
    """The command line that runs a job's source file."""
    if language == "python":
        return [python, "-u", source_path]
    if language == "bash":
        return [bash, source_path]
    if language == "sh":
        return ["/bin/sh", source_path]
    raise ValueError(f"unknown language: {language}")


def job_env(home: str = "/tmp") -> dict[str, str]:
    """The whole environment a job sees: nothing of the server's."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
    }


class CappedBuffer:
    """Collects one output stream up to ``cap`` bytes; remembers whether it overflowed."""

    def __init__(self, cap: int = DEFAULT_OUTPUT_CAP) -> None:
        self.cap = cap
        self.parts: list[bytes] = []
        self.size = 0
        self.truncated = False

    def add(self, chunk: bytes) -> bytes:
        """Keep what fits; return the part that was kept (for live streaming)."""
        room = self.cap - self.size
        if len(chunk) > room:
            self.truncated = True
            chunk = chunk[:max(room, 0)]
        if chunk:
            self.parts.append(chunk)
            self.size += len(chunk)
        return chunk

    def text(self) -> str:
        return decode(b"".join(self.parts))


def decode(data: bytes) -> str:
    """Output as text; invalid UTF-8 (or a cut multi-byte character) becomes U+FFFD."""
    return data.decode("utf-8", errors="replace")


def make_result(stdout: CappedBuffer, stderr: CappedBuffer, returncode: int | None,
                duration_s: float, error: str | None = None,
                usage: dict | None = None) -> dict:
    """The outcome of one run, in the job fields' own names.

    ``returncode`` is the process's status as subprocess reports it (negative for a
    signal); an ``error`` (timeout, memory, output cap, cancel) means the process did
    not exit on its own, so its exit code is null. ``usage``: ``{"cpu_ms", "max_rss_kb"}``.
    """
    truncated = stdout.truncated or stderr.truncated
    if truncated and error is None:
        error = OUTPUT_LIMIT
    exit_code = None
    if error is None and returncode is not None:
        exit_code = returncode if returncode >= 0 else 128 - returncode
    return {
        "stdout": stdout.text(),
        "stderr": stderr.text(),
        "exit_code": exit_code,
        "error": error,
        "duration_ms": int(duration_s * 1000),
        "truncated": truncated,
        "usage": usage,
    }


def rusage_usage(ru: resource.struct_rusage) -> dict[str, int]:
    """Usage from a ``resource.struct_rusage`` (of a reaped process: it and the children it
    waited for). Linux counts ru_maxrss in KiB; it is the largest single process's peak."""
    return {"cpu_ms": round((ru.ru_utime + ru.ru_stime) * 1000), "max_rss_kb": ru.ru_maxrss}


def add_usage(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    """Two processes' usage together: CPU adds up, the peak is the larger one."""
    return {"cpu_ms": total["cpu_ms"] + more["cpu_ms"],
            "max_rss_kb": max(total["max_rss_kb"], more["max_rss_kb"])}


def kill_group(proc: subprocess.Popen) -> None:
    """Kill the job's whole process group (it was started in a new session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_blocking(argv: list[str], stdin: bytes, timeout_s: float, cwd: str,
                 env: dict[str, str], output_cap: int = DEFAULT_OUTPUT_CAP,
                 preexec_fn=None) -> dict:
    """Run one command to completion with a wall timeout and capped outputs.

    The child gets its own session, so a timeout or an overflow kills everything it
    started. Used where no sandbox tool is around the process (AWS Lambda, whose
    micro-VM is the sandbox). The result's usage is the child's rusage (it and what it
    waited for); processes it left behind are the caller's to reap and count.
    """
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=cwd, env=env, close_fds=True,
                            start_new_session=True, preexec_fn=preexec_fn)  # noqa: PLW1509
    out, err = CappedBuffer(output_cap), CappedBuffer(output_cap)
    error = _pump(proc, stdin, out, err, start + timeout_s)
    if error is not None:
        kill_group(proc)
    _, status, rusage = os.wait4(proc.pid, 0)  # its rusage: wait(2) would drop it
    proc.returncode = os.waitstatus_to_exitcode(status)
    kill_group(proc)  # nothing the job started outlives it
    return make_result(out, err, proc.returncode, time.monotonic() - start, error,
                       rusage_usage(rusage))


def _pump(proc: subprocess.Popen, stdin: bytes, out: CappedBuffer, err: CappedBuffer,
          deadline: float) -> str | None:
    """Feed stdin and drain stdout/stderr until both close; return an error reason or None."""
    sel = selectors.DefaultSelector()
    targets = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    for fd in targets:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    pending = memoryview(stdin)
    if pending:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE)
    else:
        proc.stdin.close()
    open_reads = len(targets)
    try:
        while open_reads:
            left = deadline - time.monotonic()
            if left <= 0:
                return TIMEOUT
            for key, _ in sel.select(min(left, 1.0)):
                if key.fd in targets:
                    data = os.read(key.fd, 65536)
                    if not data:
                        sel.unregister(key.fd)
                        open_reads -= 1
                        continue
                    buf = targets[key.fd]
                    buf.add(data)
                    if buf.truncated:
                        return OUTPUT_LIMIT
                else:
                    pending = _write_some(proc, sel, pending)
        return None
    finally:
        sel.close()
        if not proc.stdin.closed:
            try:
                proc.stdin.close()
            except OSError:
                pass


def _write_some(proc: subprocess.Popen, sel: selectors.BaseSelector,
                pending: memoryview) -> memoryview:
    fd = proc.stdin.fileno()
    try:
        pending = pending[os.write(fd, pending[:65536]):]
    except (BrokenPipeError, OSError):
        pending = pending[:0]  # the job closed its stdin: it does not want the rest
    if not pending:
        sel.unregister(fd)
        proc.stdin.close()
    return pending
