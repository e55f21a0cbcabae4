"""The local backend: every job in its own bubblewrap sandbox, limited by cgroups and rlimits."""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..runner import core
from . import seccomp
from .base import Backend, BackendError, BackendUnavailable, JobSpec, RunHooks
from .cgroups import CgroupManager, JobCgroup
from .ownership import Ownership
from .procs import read_info, spawn
from .sandbox import (
    GROUP,
    PASSWD,
    Sandbox,
    SandboxUnavailable,
    as_unprivileged,
    find_bwrap,
    interpreter_prefixes,
    memfd,
    self_test,
)
from .supervise import KILL_GRACE_S, STOP_WAIT_S, Run, supervise, tracked
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
    """A job in its own sandbox: bwrap started it in a new session."""
    proc: asyncio.subprocess.Process

    def sigkill(self) -> None:
        core.kill_group(self.proc)


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
        self.seccomp: bytes | None = None  # the jobs' filter (BPF), unless --seccomp false

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
        if self.prlimit is None:
            log.warning("prlimit(1) not found (Debian: util-linux); jobs run without rlimits")
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
                "seccomp": self.seccomp is not None}

    async def cancel(self, job_id: int) -> None:
        run = self._runs.get(job_id)
        if run is not None:
            run.kill(core.CANCELLED)

    async def run(self, spec: JobSpec, hooks: RunHooks) -> dict:
        self._check_stopping()
        if spec.language == "python" and self.warm is not None:
            limits = rlimits(spec, self.config, self.cgroups.version is not None)
            result = await self.warm.run(spec, hooks, self._runs, limits)
            if result is not None:
                return result
            self._check_stopping()  # no cold start for a job the warm pool gave back
        cgroup = self.cgroups.acquire(spec.memory_mb, spec.cpus, self.config.max_pids,
                                      spec.io_weight)
        try:
            return await self._run(spec, hooks, cgroup)
        finally:
            if cgroup is not None:  # emptied (the job's processes are SIGKILLed) and reused
                self._release_later(cgroup)

    def _release_later(self, cgroup: JobCgroup) -> None:
        """Wait for a finished job's processes to be gone off the critical path."""
        task = asyncio.ensure_future(asyncio.get_running_loop().run_in_executor(
            None, self.cgroups.release, cgroup))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _run(self, spec: JobSpec, hooks: RunHooks, cgroup: JobCgroup | None) -> dict:
        source = "/job/" + core.SOURCE_NAMES[spec.language]
        fds = {source: memfd("source", spec.code.encode("utf-8", "surrogatepass")),
               "passwd": memfd("passwd", PASSWD.encode()), "group": memfd("group", GROUP.encode())}
        if self.seccomp:
            fds["seccomp"] = memfd("seccomp", self.seccomp)
        info_r, fds["info"] = os.pipe()
        fds["block"], block_w = os.pipe()
        argv = (self.sandbox.argv(fds)
                + rlimit_argv(self.prlimit, spec, self.config, cgroup is not None)
                + core.job_argv(spec.language, source, self.config.python, self.config.bash))
        try:
            proc = await spawn(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, pass_fds=list(fds.values()),
                start_new_session=True, **as_unprivileged())
        except BaseException as exc:
            os.close(info_r)
            os.close(block_w)
            if isinstance(exc, OSError):
                raise BackendError(f"cannot start the sandbox: {exc}") from exc
            raise
        finally:
            for fd in fds.values():
                os.close(fd)
        run = ColdRun(cgroup, proc)
        with tracked(self._runs, spec.job_id, run):
            await self._release(run, spec, info_r, block_w)
            return await supervise(run, spec, hooks, (proc.stdin, proc.stdout, proc.stderr),
                                   proc.wait)

    async def _release(self, run: ColdRun, spec: JobSpec, info_r: int, block_w: int) -> None:
        """Put the sandboxed child into its cgroup and rlimits, then let it run the job."""
        loop = asyncio.get_running_loop()
        try:
            info = await read_info(info_r, INFO_TIMEOUT_S)
            child = int(json.loads(info)["child-pid"])
            if run.cgroup is not None:  # a v1 migration may wait for an RCU grace period
                await loop.run_in_executor(None, run.cgroup.add, child)
            self._check_stopping()  # stop() may have come while this job was on its way
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
            os.close(block_w)


def rlimit_argv(prlimit: str | None, spec: JobSpec, config, with_cgroup: bool) -> list[str]:
    """A prlimit(1) prefix: rlimits set inside the sandbox, inherited by everything the job
    starts (the server may lack CAP_SYS_RESOURCE, so it cannot set them from outside).
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
