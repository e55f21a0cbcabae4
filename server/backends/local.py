"""The local backend: every job in its own bubblewrap sandbox, limited by cgroups and rlimits."""
from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..runner import core
from ..runtimes import BY_LANGUAGE, Recipe, command, host_recipes, program
from .base import Backend, BackendError, BackendUnavailable, JobSpec, RunHooks
from .cgroups import CgroupManager, JobCgroup
from .compile import CompileCache, Compiler
from .probe import probe
from .sandbox import (
    GROUP,
    PASSWD,
    Sandbox,
    SandboxUnavailable,
    as_unprivileged,
    find_bwrap,
    interpreter_prefixes,
    memfd,
    read_info,
    self_test,
)
from .view import shared_dir

log = logging.getLogger("orq.local")
KILL_GRACE_S = 2.0  # after this, a job that ignored its kill is reported anyway
# warm runners beyond one per slot: a finished runner prepares its next job child (fork,
# namespaces, mounts, cgroup migration) while the next job starts at once on the spare,
# which was prepared while idle. Measured with 2 slots (bench/e2e.py, 3 A/B pairs): the
# machine busy 1.73-1.76 cores instead of 1.58-1.61, 0.96-1.01x the bare spawn loop
# instead of 0.87-0.93x; the cost is one more idle runner (~12 MB RSS, ~3 MB PSS).
SPARE_RUNNERS = 1


@dataclass
class Run:
    """One running job, as LocalBackend's cancel/stop and ``supervise`` see it. A subclass
    says how its processes are signalled; the cgroup, where there is one, gets the rest."""
    cgroup: JobCgroup | None
    error: str | None = field(default=None, init=False)
    done: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    rusage: dict | None = field(default=None, init=False)  # of its processes, once exited

    def kill(self, reason: str) -> None:
        if self.error is None:
            self.error = reason
        self.sigkill()
        if self.cgroup is not None:
            self.cgroup.kill_all()

    def sigkill(self) -> None:
        raise NotImplementedError


@dataclass
class ColdRun(Run):
    """A job in its own sandbox: bwrap started it in a new session. Without a cgroup, the
    job's rusage comes through ``usage_fd`` (see runner/report_usage.py)."""
    proc: asyncio.subprocess.Process
    usage_fd: int | None = None

    def sigkill(self) -> None:
        core.kill_group(self.proc)

    async def exit_code(self) -> int:
        code = await self.proc.wait()
        if self.usage_fd is not None:
            fd, self.usage_fd = self.usage_fd, None
            self.rusage = read_usage(fd)
        return code


def read_usage(fd: int) -> dict[str, int] | None:
    """What report_usage.py wrote before it exited (the fd is non-blocking: a sandbox
    process may still hold the other end for a moment)."""
    try:
        cpu_ms, max_rss_kb = (int(n) for n in os.read(fd, 64).split())
        return {"cpu_ms": cpu_ms, "max_rss_kb": max_rss_kb}
    except (OSError, ValueError):
        return None  # killed before it could report
    finally:
        os.close(fd)


@functools.cache
def _report_usage_source() -> str:
    return (Path(core.__file__).parent / "report_usage.py").read_text()


def usage_argv(python: str, fd: int | None) -> list[str]:
    """The prefix that runs a job under report_usage.py, writing to ``fd`` (none: [])."""
    return [] if fd is None else [python, "-I", "-S", "-c", _report_usage_source(), str(fd)]


def instance_name(data_dir) -> str:
    """A stable name per data dir: this server's cgroups live under orq/<name>."""
    return "srv-" + hashlib.sha1(str(Path(data_dir).resolve()).encode()).hexdigest()[:12]


class LocalBackend(Backend):
    name = "local"

    def __init__(self, config) -> None:
        self.config = config
        self.cgroups = CgroupManager(instance=instance_name(config.data_dir))
        self.sandbox: Sandbox | None = None
        self._runs: dict[int, Run] = {}
        self._cleanups: set[asyncio.Future] = set()
        self.prlimit = shutil.which("prlimit", path="/usr/bin:/bin")
        self.warm = None  # a warm.WarmPool when python jobs run on warm runners
        self._active: set[int] = set()  # compiled jobs between their compile and run
        self._cancelled: set[int] = set()  # ... that were cancelled meanwhile
        cache = CompileCache(Path(config.data_dir) / "cache",
                             shared_dir(Path(config.data_dir)) / "cache",
                             config.compile_cache_mb * 1024 * 1024)
        self.compiler = Compiler(cache, self._contained, config.compile_timeout_s)

    @property
    def capacity(self) -> int:
        return self.config.slots

    async def start(self) -> None:
        try:
            bwrap = find_bwrap()
            self.sandbox = Sandbox(bwrap, interpreter_prefixes(self.config.python,
                                                               self.config.bash),
                                   self.config.tmp_size_mb)
            await asyncio.get_running_loop().run_in_executor(
                None, self_test, self.sandbox, self.config.python)
        except SandboxUnavailable as exc:
            raise BackendUnavailable(str(exc)) from exc
        self.runtimes = await asyncio.get_running_loop().run_in_executor(
            None, probe, self.sandbox, None, core.job_env(),
            host_recipes(self.config.python, self.config.bash))
        self.compiler.cache.open()
        self.cgroups.detect()
        if self.prlimit is None:
            log.warning("prlimit(1) not found (Debian: util-linux); jobs run without rlimits")
        if self.cgroups.version:
            self.cgroups.cleanup_stale()
        if self.config.warm:
            await self._start_warm()
        log.info("local backend ready: %d slots, cgroup v%s, python jobs %s", self.capacity,
                 self.cgroups.version or " none (rlimits)", "warm" if self.warm else "cold")

    async def _start_warm(self) -> None:
        from .warm import WarmPool, WarmUnavailable  # warm imports this module
        cfg = self.config
        pool = WarmPool(self.sandbox, cfg.python, self.capacity + SPARE_RUNNERS,
                        cfg.tmp_size_mb, self.cgroups,
                        (cfg.memory_mb, cfg.cpus, cfg.max_pids, cfg.io_weight),
                        self._release_later)
        try:
            await pool.start()
            self.warm = pool
        except WarmUnavailable as exc:
            log.warning("warm runners unavailable (%s); python jobs run cold", exc)

    async def stop(self) -> None:
        for run in list(self._runs.values()):
            run.kill(core.INTERRUPTED)
        for run in list(self._runs.values()):
            try:
                await asyncio.wait_for(run.done.wait(), 5)
            except TimeoutError:
                pass
        if self.warm is not None:
            await self.warm.stop()
        if self._cleanups:
            await asyncio.wait(self._cleanups, timeout=5)

    def info(self) -> dict:
        warm = self.warm is not None and not self.warm.disabled
        return {**super().info(), "cgroup": self.cgroups.version, "running": len(self._runs),
                "warm": warm, "warm_replaced": self.warm.replaced if self.warm else 0}

    async def cancel(self, job_id: int) -> None:
        if job_id in self._active:  # between its compile and its run, too
            self._cancelled.add(job_id)
        run = self._runs.get(job_id)
        if run is not None:
            run.kill(core.CANCELLED)

    async def run(self, spec: JobSpec, hooks: RunHooks) -> dict:
        if (spec.language == "python" and spec.root is None and not spec.files
                and self.warm is not None):
            limits = rlimits(spec, self.config, self.cgroups.version is not None)
            result = await self.warm.run(spec, hooks, self._runs, limits)
            if result is not None:
                return result
        files, recipe = self.program(spec)
        if spec.root is None or not recipe.compiled:
            return await self._contained(spec, hooks, files, self.command(spec, files))
        return await self._compile_and_run(spec, hooks, files, recipe)

    async def _compile_and_run(self, spec: JobSpec, hooks: RunHooks,
                               files: list[tuple[str, str]], recipe: Recipe) -> dict:
        """Compile (or take the cached result), then run it with /build read-only. The job is
        RUNNING from the start of the compile; a cancel stops either step."""
        if not await hooks.started():
            return {"error": core.CANCELLED}
        self._active.add(spec.job_id)
        going = RunHooks(started=lambda: self._still_going(spec.job_id), output=hooks.output)
        try:
            build = await self.compiler.build(spec, recipe, files, going)
            if build.error is not None:
                return build.result()
            try:
                result = await self._contained(spec, going, files,
                                               self.command(spec, files, recipe),
                                               ((build.build_dir, "/build", False),))
            finally:
                self.compiler.release(build)
            return {**result, "compile": build.info}
        finally:
            self._active.discard(spec.job_id)
            self._cancelled.discard(spec.job_id)

    async def _still_going(self, job_id: int) -> bool:
        return job_id not in self._cancelled

    async def _contained(self, spec: JobSpec, hooks: RunHooks, files: list[tuple[str, str]],
                         command: list[str], binds: tuple = ()) -> dict:
        """Run one command in a fresh sandbox within a cgroup with the job's limits."""
        cgroup = self.cgroups.acquire(spec.memory_mb, spec.cpus, self.config.max_pids,
                                      spec.io_weight)
        try:
            return await self._run(spec, hooks, cgroup, files, command, binds)
        finally:
            if cgroup is not None:  # emptied (the job's processes are SIGKILLed) and reused
                self._release_later(cgroup)

    def _release_later(self, cgroup: JobCgroup) -> None:
        """Wait for a finished job's processes to be gone off the critical path."""
        task = asyncio.ensure_future(asyncio.get_running_loop().run_in_executor(
            None, self.cgroups.release, cgroup))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    @staticmethod
    def program(spec: JobSpec) -> tuple[list[tuple[str, str]], Recipe]:
        """The job's files (entry point first) and its recipe."""
        recipe = BY_LANGUAGE[spec.language]
        if spec.root is None and not spec.files:  # the host keeps its historic file names
            return [(core.SOURCE_NAMES[spec.language], spec.code)], recipe
        return program(recipe, spec.code, spec.files), recipe

    def command(self, spec: JobSpec, files: list[tuple[str, str]],
                recipe: Recipe | None = None) -> list[str]:
        """The command that runs the program: the host's configured interpreters, or the
        recipe's run command in an image."""
        if spec.root is None:
            return core.job_argv(spec.language, f"/job/{files[0][0]}", self.config.python,
                                 self.config.bash)
        recipe = recipe or BY_LANGUAGE[spec.language]
        return command(recipe.run, files, recipe, spec.memory_mb)

    async def _run(self, spec: JobSpec, hooks: RunHooks, cgroup: JobCgroup | None,
                   files: list[tuple[str, str]], command: list[str], binds: tuple) -> dict:
        fds = {f"/job/{name}": memfd("source", content.encode("utf-8", "surrogatepass"))
               for name, content in files}
        fds.update(passwd=memfd("passwd", PASSWD.encode()), group=memfd("group", GROUP.encode()))
        info_r, fds["info"] = os.pipe()
        fds["block"], block_w = os.pipe()
        usage_r = None
        # without a cgroup to count it, the job reports its rusage (a python helper: on the
        # host only; an image may have no python)
        if spec.root is None and (cgroup is None or not cgroup.measures_usage):
            usage_r, fds["usage"] = os.pipe()
            os.set_blocking(usage_r, False)
        # the rlimits are set on bwrap itself (lowering needs no privilege) and inherited by
        # everything in the sandbox: an image need not have prlimit(1)
        env = dict(spec.env) or None
        if spec.root is not None and BY_LANGUAGE[spec.language].env:
            env = {**(env or {}), **dict(BY_LANGUAGE[spec.language].env)}
        argv = (rlimit_argv(self.prlimit, spec, self.config, cgroup is not None)
                + self.sandbox.argv(fds, env, root=spec.root, binds=binds)
                + usage_argv(self.config.python, fds.get("usage")) + command)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, pass_fds=list(fds.values()),
                start_new_session=True, **as_unprivileged())
        except OSError as exc:
            if usage_r is not None:
                os.close(usage_r)
            raise BackendError(f"cannot start the sandbox: {exc}") from exc
        finally:
            for fd in fds.values():
                os.close(fd)
        run = ColdRun(cgroup, proc, usage_r)
        try:
            with tracked(self._runs, spec.job_id, run):
                await self._release(run, spec, info_r, block_w)
                return await supervise(run, spec, hooks,
                                       (proc.stdin, proc.stdout, proc.stderr), run.exit_code)
        finally:
            if run.usage_fd is not None:  # the sandbox failed, or never exited
                os.close(run.usage_fd)

    async def _release(self, run: ColdRun, spec: JobSpec, info_r: int, block_w: int) -> None:
        """Put the sandboxed child into its cgroup and rlimits, then let it run the job."""
        loop = asyncio.get_running_loop()
        try:
            info = await loop.run_in_executor(None, read_info, info_r)
            child = int(json.loads(info)["child-pid"])
            if run.cgroup is not None:  # a v1 migration may wait for an RCU grace period
                await loop.run_in_executor(None, run.cgroup.add, child)
            os.write(block_w, b"go")
        except (OSError, ValueError, KeyError) as exc:
            run.kill(core.INTERRUPTED)
            await run.proc.wait()
            stderr = (await run.proc.stderr.read()).decode(errors="replace").strip()
            raise BackendError(f"the sandbox did not start: {stderr or exc}") from exc
        finally:
            os.close(info_r)
            os.close(block_w)


@contextlib.contextmanager
def tracked(runs: dict[int, Run], job_id: int, run: Run):
    """``run`` in LocalBackend's running jobs (for cancel and stop) while the block runs."""
    runs[job_id] = run
    try:
        yield
    finally:
        runs.pop(job_id, None)
        run.done.set()


async def supervise(run: Run, spec: JobSpec, hooks: RunHooks, streams: tuple,
                    exit_code: Callable[[], Awaitable[int | None]]) -> dict:
    """Start a job that is ready to run: feed it its input, collect its output (``streams``:
    its stdin, stdout, stderr), kill it on timeout, and make its result.

    ``exit_code()`` waits for the job's exit code (None when there is none); if the job
    has not exited KILL_GRACE_S after its kill, it is cancelled and the job ends without one.
    """
    if not await hooks.started():
        run.kill(core.CANCELLED)  # cancelled between leaving the queue and starting
    start = time.monotonic()
    out, err = core.CappedBuffer(spec.output_cap), core.CappedBuffer(spec.output_cap)
    tasks = [asyncio.ensure_future(_feed(streams[0], spec.input.encode("utf-8",
                                                                      "surrogatepass"))),
             asyncio.ensure_future(_drain(run, streams[1], out, "stdout", hooks)),
             asyncio.ensure_future(_drain(run, streams[2], err, "stderr", hooks))]
    exited = asyncio.ensure_future(exit_code())
    done, _ = await asyncio.wait({exited}, timeout=spec.timeout_s)
    if not done:
        run.kill(core.TIMEOUT)
        done, _ = await asyncio.wait({exited}, timeout=KILL_GRACE_S)
    if not done:
        log.warning("job %s: sandbox did not exit after SIGKILL", spec.job_id)
        exited.cancel()
        await asyncio.wait({exited})  # its clean-up (see WarmRunner._exit_code) runs now
    _, pending = await asyncio.wait(tasks, timeout=KILL_GRACE_S)
    if pending:
        log.warning("job %s: output pipes still open after the job ended", spec.job_id)
    for task in tasks:
        task.cancel()
    error = run.error
    if run.cgroup is not None and run.cgroup.oom_killed() and error in (None, core.TIMEOUT):
        error = core.MEMORY
    returncode = None if exited.cancelled() else exited.result()
    return core.make_result(out, err, returncode, time.monotonic() - start, error,
                            job_usage(run))


def job_usage(run: Run) -> dict[str, int] | None:
    """What the job used: its cgroup's accounting where it has one, else (and for what the
    cgroup cannot tell) the rusage of its processes; None when neither is known."""
    counted = run.cgroup.usage() if run.cgroup is not None else {}
    usage = {key: counted.get(key) if counted.get(key) is not None
             else (run.rusage or {}).get(key) for key in ("cpu_ms", "max_rss_kb")}
    return None if None in usage.values() else usage


def rlimit_argv(prlimit: str | None, spec: JobSpec, config, with_cgroup: bool) -> list[str]:
    """A prlimit(1) prefix for bwrap: rlimits inherited by everything the job starts (the
    server may lack CAP_SYS_RESOURCE, so it cannot raise them; lowering needs nothing).
    Memory and process counts come from the cgroup where there is one: RLIMIT_NPROC
    counts every process of the uid, not just this job's."""
    if prlimit is None:
        return []
    limits = rlimits(spec, config, with_cgroup)
    return [prlimit] + [f"--{name}={value}" for name, value in limits.items()] + ["--"]


def rlimits(spec: JobSpec, config, with_cgroup: bool) -> dict[str, int]:
    """The rlimits of a job (prlimit(1) names), for the cold and the warm path alike."""
    limits = {"core": 0, "cpu": int(spec.timeout_s) + 2, "nofile": 256,
              "fsize": config.tmp_size_mb * 1024 * 1024}
    if not with_cgroup:
        limits["as"] = (spec.memory_mb + 64) * 1024 * 1024
        limits["nproc"] = config.max_pids * config.slots
    return limits


async def _feed(stream: asyncio.StreamWriter, data: bytes) -> None:
    try:
        if data:
            stream.write(data)
            await stream.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the job did not read all of its input
    finally:
        stream.close()


async def _drain(run: Run, stream: asyncio.StreamReader, buf: core.CappedBuffer, name: str,
                 hooks: RunHooks) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while chunk := await stream.read(65536):
        kept = buf.add(chunk)
        if kept:
            hooks.output(name, decoder.decode(kept))
        if buf.truncated:
            run.kill(core.OUTPUT_LIMIT)
            return
