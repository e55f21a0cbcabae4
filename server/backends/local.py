"""The local backend: every job in its own bubblewrap sandbox, limited by cgroups and rlimits."""
from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import package_files
from ..runner import core
from ..runtimes import BY_LANGUAGE, Recipe, command, host_recipes, program
from . import seccomp
from .base import Backend, BackendError, BackendUnavailable, JobSpec, RunHooks
from .cgroups import CgroupManager, JobCgroup
from .compile import CompileCache, Compiler
from .ownership import Ownership
from .prestart import Parked, PrestartPool
from .probe import probe
from .procs import read_info, spawn
from .sandbox import (
    GROUP,
    PASSWD,
    Sandbox,
    SandboxUnavailable,
    find_bwrap,
    interpreter_prefixes,
    memfd,
    self_test,
    unprivileged,
)
from .supervise import KILL_GRACE_S, STOP_WAIT_S, Run, supervise, tracked
from .view import shared_dir
from .warm import WarmPool, WarmUnavailable

log = logging.getLogger("orq.local")
INFO_TIMEOUT_S = 30.0  # bwrap reports its child's pid well within this, even under load
STOPPING = "the server is stopping"  # BackendError: the job is left as it is on disk
# warm runners beyond one per slot: a finished runner prepares its next job child (fork,
# namespaces, mounts, cgroup migration) while the next job starts at once on the spare,
# which was prepared while idle. Measured with 2 slots (bench/e2e.py, 3 A/B pairs): the
# machine busy 1.73-1.76 cores instead of 1.58-1.61, 0.96-1.01x the bare spawn loop
# instead of 0.87-0.93x; the cost is one more idle runner (~12 MB RSS, ~3 MB PSS).
SPARE_RUNNERS = 1


@dataclass
class ColdRun(Run):
    """A job in its own sandbox: bwrap started it in a new session. Without a cgroup, the
    job's rusage comes through ``usage_fd`` (see runner/report_usage.py)."""
    proc: asyncio.subprocess.Process
    usage_fd: int | None = None

    @property
    def streams(self) -> tuple:
        return self.proc.stdin, self.proc.stdout, self.proc.stderr

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
    return package_files.read(package_files.RUNNER, "report_usage.py").decode()


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
        self.ownership = Ownership(self.cgroups)
        self.sandbox: Sandbox | None = None
        self._runs: dict[int, Run] = {}
        self._cleanups: set[asyncio.Future] = set()
        self._stopping = False  # set by stop(): no job starts after it
        self.prlimit = shutil.which("prlimit", path="/usr/bin:/bin")
        self.warm = None  # a warm.WarmPool when python jobs run on warm runners
        self._active: set[int] = set()  # compiled jobs between their compile and run
        self._cancelled: set[int] = set()  # ... that were cancelled meanwhile
        cache = CompileCache(Path(config.data_dir) / "cache",
                             shared_dir(Path(config.data_dir)) / "cache",
                             config.compile_cache_mb * 1024 * 1024)
        self.compiler = Compiler(cache, self._contained, config.compile_timeout_s)
        self.seccomp: bytes | None = None  # the jobs' filter (BPF), unless --seccomp false
        # sandboxes started ahead for jobs in images (with --warm, like the warm runners)
        self.prestart = (PrestartPool(self._park, self._retire, config.slots + SPARE_RUNNERS)
                         if config.warm else None)

    @property
    def capacity(self) -> int:
        return self.config.slots

    async def start(self) -> None:
        self.cgroups.detect()
        self.ownership.claim()  # before this server starts any process
        try:
            bwrap = find_bwrap()
            self.sandbox = Sandbox(bwrap, interpreter_prefixes(self.config.python,
                                                               self.config.bash),
                                   self.config.tmp_size_mb)
            if self.config.seccomp:
                self.seccomp = seccomp.build()
            fds = {"seccomp": memfd("seccomp", self.seccomp)} if self.seccomp else {}
            try:
                await asyncio.get_running_loop().run_in_executor(
                    None, self_test, self.sandbox, self.config.python, fds)
            finally:
                for fd in fds.values():
                    os.close(fd)
        except (SandboxUnavailable, seccomp.SeccompUnavailable) as exc:
            raise BackendUnavailable(str(exc)) from exc
        if not self.seccomp:
            log.warning("jobs run without a seccomp filter (--seccomp false)")
        self.runtimes = await asyncio.get_running_loop().run_in_executor(
            None, probe, self.sandbox, None, core.job_env(),
            host_recipes(self.config.python, self.config.bash))
        self.compiler.cache.open()
        if self.prlimit is None:
            log.warning("prlimit(1) not found (Debian: util-linux); jobs run without rlimits")
        if self.cgroups.version is None:
            log.warning("without cgroups, jobs in images have no limit on their processes "
                        "(RLIMIT_NPROC is set on the host image only)")
        if self.config.warm:
            await self._start_warm()
        log.info("local backend ready: %d slots, cgroup v%s, python jobs %s", self.capacity,
                 self.cgroups.version or " none (rlimits)", "warm" if self.warm else "cold")

    async def _start_warm(self) -> None:
        cfg = self.config
        filters = (seccomp.build(seccomp.RUNNER_NEEDS), self.seccomp) if self.seccomp else None
        pool = WarmPool(self.sandbox, cfg.python, self.capacity + SPARE_RUNNERS,
                        cfg.tmp_size_mb, self.cgroups,
                        (cfg.memory_mb, cfg.cpus, cfg.max_pids, cfg.io_weight),
                        self._release_later, filters)
        try:
            await pool.start()
            self.warm = pool
        except WarmUnavailable as exc:
            log.warning("warm runners unavailable (%s); python jobs run cold", exc)

    async def stop(self) -> None:
        """Kill every job (they run again after a restart) and the warm runners, within
        about STOP_WAIT_S; a job on its way to a sandbox sees the flag and does not start."""
        self._stopping = True
        if self.prestart is not None:  # first: no sandbox is parked for a job from now on
            await self.prestart.stop()
        for run in list(self._runs.values()):
            run.kill(core.INTERRUPTED)
        waits = [asyncio.ensure_future(run.done.wait()) for run in self._runs.values()]
        if waits:
            await asyncio.wait(waits, timeout=STOP_WAIT_S)
            for wait in waits:
                wait.cancel()
        if self.warm is not None:
            await self.warm.stop()
        if self._cleanups:
            await asyncio.wait(self._cleanups, timeout=STOP_WAIT_S)
        await self.ownership.release()

    def _check_stopping(self) -> None:
        if self._stopping:
            raise BackendError(STOPPING)

    def info(self) -> dict:
        warm = self.warm is not None and not self.warm.disabled
        return {**super().info(), "cgroup": self.cgroups.version, "running": len(self._runs),
                "warm": warm, "warm_replaced": self.warm.replaced if self.warm else 0,
                "prestarted": self.prestart.used if self.prestart else 0,
                "seccomp": self.seccomp is not None}

    async def cancel(self, job_id: int) -> None:
        if job_id in self._active:  # between its compile and its run, too
            self._cancelled.add(job_id)
        run = self._runs.get(job_id)
        if run is not None:
            run.kill(core.CANCELLED)

    async def run(self, spec: JobSpec, hooks: RunHooks) -> dict:
        self._check_stopping()
        if (spec.language == "python" and spec.root is None and not spec.files
                and self.warm is not None):
            limits = rlimits(spec, self.config, self.cgroups.version is not None)
            result = await self.warm.run(spec, hooks, self._runs, limits)
            if result is not None:
                return result
            self._check_stopping()  # no cold start for a job the warm pool gave back
        files, recipe = self.program(spec)
        if spec.root is not None and recipe.compiled:
            return await self._compile_and_run(spec, hooks, files, recipe)
        command = self.command(spec, files)
        if spec.root is not None and self.prestart is not None:
            return await self._in_image(spec, hooks, files, command)
        return await self._contained(spec, hooks, files, command)

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

    async def _in_image(self, spec: JobSpec, hooks: RunHooks, files: list[tuple[str, str]],
                        command: list[str]) -> dict:
        """A job in an image: on a sandbox parked for jobs like it, else cold; either way
        the next job like it finds one parked (see prestart.py)."""
        try:  # a root removed and made again (same digest, same path) is another directory
            made = os.stat(spec.root)
        except OSError:
            return await self._contained(spec, hooks, files, command)
        key = (spec.root, made.st_ino, made.st_ctime_ns, spec.env, tuple(command),
               spec.memory_mb, spec.cpus, spec.io_weight, spec.timeout_s)
        parked = await self.prestart.take(key)
        try:
            if parked is not None:
                try:
                    parked.write(files)
                    self._check_stopping()
                    parked.go()
                except OSError as exc:  # e.g. it died meanwhile: the job has not started
                    log.warning("a sandbox started ahead failed (%s); starting cold", exc)
                    self._retire(parked)
                    parked = None
            if parked is None:
                return await self._contained(spec, hooks, files, command)
            with tracked(self._runs, spec.job_id, parked.run):
                return await supervise(parked.run, spec, hooks, parked.run.streams,
                                       parked.run.exit_code)
        finally:
            if parked is not None:
                self._retire(parked)
            self.prestart.want(key, spec, command)  # (not once the pool has stopped)

    async def _park(self, spec: JobSpec, command: list[str]) -> Parked:
        """A sandbox for jobs like ``spec`` running ``command``, set up and in its cgroup,
        waiting on its block fd."""
        self._check_stopping()
        stage = self.compiler.cache.scratch("job-")
        cgroup = self.cgroups.acquire(spec.memory_mb, spec.cpus, self.config.max_pids,
                                      spec.io_weight)
        try:
            run, info_r, block_w = await self._launch(
                spec, cgroup, {}, command, ((self.compiler.cache.reach(stage), "/job", False),))
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            if cgroup is not None:
                self._release_later(cgroup)
            raise
        parked = Parked(run, block_w, stage)
        try:
            await self._release(run, info_r, block_w, go=False)
        except BaseException:
            self._retire(parked)
            raise
        return parked

    def _retire(self, parked: Parked) -> None:
        """A parked sandbox's end, whether it ran a job or not: its processes killed, its
        cgroup emptied and reused, its scratch directory removed."""
        if parked.alive():
            core.kill_group(parked.run.proc)
        parked.close()
        if parked.run.cgroup is not None:
            self._release_later(parked.run.cgroup)

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
        run, info_r, block_w = await self._launch(spec, cgroup, fds, command, binds)
        try:
            with tracked(self._runs, spec.job_id, run):
                await self._release(run, info_r, block_w)
                return await supervise(run, spec, hooks, run.streams, run.exit_code)
        finally:
            if run.usage_fd is not None:  # the sandbox failed, or never exited
                os.close(run.usage_fd)

    async def _launch(self, spec: JobSpec, cgroup: JobCgroup | None, fds: dict[str, int],
                      command: list[str], binds: tuple) -> tuple[ColdRun, int, int]:
        """Start bwrap for ``command``; it sets up the sandbox and waits on its block fd.
        Returns the run, the info fd to read and the block fd to write (``_release``).
        ``fds`` (the program's files) are closed here."""
        fds.update(passwd=memfd("passwd", PASSWD.encode()), group=memfd("group", GROUP.encode()))
        if self.seccomp:
            fds["seccomp"] = memfd("seccomp", self.seccomp)
        info_r, fds["info"] = os.pipe()
        fds["block"], block_w = os.pipe()
        usage_r = None
        # without a cgroup to count it, the job reports its rusage (a python helper: on the
        # host only; an image may have no python)
        if spec.root is None and (cgroup is None or not cgroup.measures_usage):
            usage_r, fds["usage"] = os.pipe()
            os.set_blocking(usage_r, False)
        try:
            # the rlimits are set on bwrap itself (lowering needs no privilege) and inherited
            # by everything in the sandbox: an image need not have prlimit(1). (The image's
            # binds read its root: gone, that is an OSError like a failed start.)
            argv, launch = unprivileged(
                rlimit_argv(self.prlimit, spec, self.config, cgroup is not None)
                + self.sandbox.argv(fds, dict(spec.env) or None, root=spec.root, binds=binds)
                + (rlimit_argv(self.prlimit, spec, self.config, cgroup is not None,
                               inside=True) if spec.root is None else [])
                + usage_argv(self.config.python, fds.get("usage")) + command)
            proc = await spawn(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, pass_fds=list(fds.values()),
                start_new_session=True, **launch)
        except BaseException as exc:
            os.close(info_r)
            os.close(block_w)
            if usage_r is not None:
                os.close(usage_r)
            if isinstance(exc, OSError):
                raise BackendError(f"cannot start the sandbox: {exc}") from exc
            raise
        finally:
            for fd in fds.values():
                os.close(fd)
        return ColdRun(cgroup, proc, usage_r), info_r, block_w

    async def _release(self, run: ColdRun, info_r: int, block_w: int, go: bool = True) -> None:
        """Put the sandboxed child into its cgroup, then (``go``) let it run the job; without
        ``go`` the block fd stays open for a parked sandbox."""
        loop = asyncio.get_running_loop()
        try:
            info = await read_info(info_r, INFO_TIMEOUT_S)
            child = int(json.loads(info)["child-pid"])
            if run.cgroup is not None:  # a v1 migration may wait for an RCU grace period
                await loop.run_in_executor(None, run.cgroup.add, child)
            self._check_stopping()  # stop() may have come while this job was on its way
            if go:
                os.write(block_w, b"go")
        except (OSError, ValueError, KeyError, TimeoutError, BackendError) as exc:
            run.kill(core.INTERRUPTED)
            await asyncio.wait([asyncio.ensure_future(run.proc.wait())], timeout=KILL_GRACE_S)
            if self._stopping:
                raise BackendError(STOPPING) from exc
            try:
                stderr = await asyncio.wait_for(run.proc.stderr.read(), KILL_GRACE_S)
            except TimeoutError:
                stderr = b""
            raise BackendError("the sandbox did not start: "
                               f"{stderr.decode(errors='replace').strip() or exc}") from exc
        finally:
            os.close(info_r)
            if go:
                os.close(block_w)


def rlimit_argv(prlimit: str | None, spec: JobSpec, config, with_cgroup: bool,
                inside: bool = False) -> list[str]:
    """prlimit(1) prefixes: rlimits inherited by everything the job starts (the server may
    lack CAP_SYS_RESOURCE, so it cannot raise them; lowering needs nothing). Outside the
    sandbox (before bwrap, so an image needs no prlimit of its own) the per-process limits;
    inside (the host's prlimit, so on the host only) RLIMIT_NPROC, which counts every process
    of uid 65534 on the machine and must not bind bwrap's own forks. Memory and process
    counts come from the cgroup where there is one."""
    limits = {k: v for k, v in rlimits(spec, config, with_cgroup).items()
              if (k == "nproc") == inside}
    if prlimit is None or not limits:
        return []
    return [prlimit] + [f"--{name}={value}" for name, value in limits.items()] + ["--"]


def rlimits(spec: JobSpec, config, with_cgroup: bool) -> dict[str, int]:
    """The rlimits of a job (prlimit(1) names), for the cold and the warm path alike."""
    limits = {"core": 0, "cpu": int(spec.timeout_s) + 2, "nofile": 256,
              "fsize": config.tmp_size_mb * 1024 * 1024}
    if not with_cgroup:
        limits["as"] = (spec.memory_mb + 64) * 1024 * 1024
        limits["nproc"] = config.max_pids * config.slots
    return limits
