"""A pool of warm runners (server/runner/warm.py): one per slot of the local backend, and a
spare (see SPARE_RUNNERS in local.py).

Each runner is a sandboxed, already initialised interpreter; for every job it forks a
fresh child in new mount/PID/IPC/network namespaces (see the runner's docstring). This
side hands the job its pipes, puts the child into the job's cgroup before it runs, kills
it on timeout or cancel, and replaces a runner that dies or breaks its protocol.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import package_files
from ..runner import core
from .base import JobSpec, RunHooks
from .cgroups import CgroupManager, JobCgroup, read_small
from .procs import read_info, spawn
from .sandbox import GROUP, PASSWD, Sandbox, memfd, unprivileged
from .supervise import STOP_WAIT_S, Run, supervise, tracked

log = logging.getLogger("orq.warm")
# what the runner needs inside its user namespace (never passed on to a job)
RUNNER_CAPS = ("CAP_SYS_ADMIN", "CAP_SETPCAP")
PROTOCOL_TIMEOUT_S = 10.0
BREAK_ENV = "_ORQ_WARM_WITHOUT_CAPS"  # test hook: start runners without their capabilities
JOB_FILTER = "/job/seccomp.bpf"  # the jobs' seccomp filter, as the runner reads it


class WarmUnavailable(Exception):
    """The kernel or sandbox does not allow warm runners; the message says why."""


class RunnerBroken(Exception):
    """A runner died or broke the protocol; it is replaced."""


def _proc(path: str) -> str:
    try:
        return read_small(path)
    except OSError:
        return ""  # the process is gone


def children(pid: int) -> list[int]:
    return [int(k) for k in _proc(f"/proc/{pid}/task/{pid}/children").split()]


def child_host_pid(parent: int, ns_pid: int) -> int | None:
    """The host pid of ``parent``'s child whose pid in the sandbox is ``ns_pid``."""
    for kid in children(parent):
        status = _proc(f"/proc/{kid}/status")
        start = status.find("\nNSpid:")
        if start >= 0 and int(status[start:status.index("\n", start + 1)].split()[-1]) == ns_pid:
            return kid
    return None


class Channel:
    """Newline-delimited JSON over the runner's Unix socket (fds attached to job requests)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock, self.buf = sock, b""

    def send(self, msg: dict, fds: list[int] = ()) -> None:
        data = json.dumps(msg).encode() + b"\n"
        sent = socket.send_fds(self.sock, [data], list(fds)) if fds else self.sock.send(data)
        if sent != len(data):
            raise RunnerBroken("short write to the runner")

    async def recv(self) -> dict:
        loop = asyncio.get_running_loop()
        while b"\n" not in self.buf:
            data = await loop.sock_recv(self.sock, 4096)
            if not data:
                raise RunnerBroken("the runner closed its socket")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)


@dataclass
class WarmRun(Run):
    """One job on a runner."""
    pid: int  # host pid of the job's child; killing it collapses the job's PID namespace
    exited: bool = field(default=False, init=False)

    def sigkill(self) -> None:
        if not self.exited:  # once reaped, the pid may belong to someone else
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class WarmRunner:
    def __init__(self, proc: asyncio.subprocess.Process, chan: Channel, host_pid: int) -> None:
        self.proc, self.chan, self.host_pid = proc, chan, host_pid
        self.next: asyncio.Future | None = None  # -> (host pid of C, its cgroup), see prepare
        self.last_error = ""  # the runner's last line on stderr (it writes only when failing)
        self.log_level = logging.WARNING  # DEBUG while probing: the fallback says it in one line
        self.stderr_task: asyncio.Future | None = None

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    @classmethod
    async def start(cls, sandbox: Sandbox, python: str, tmp_size: int,
                    filters: tuple[bytes, bytes] | None = None) -> WarmRunner:
        """Start a runner; ``filters``: the seccomp programs (BPF) of the runner itself
        (the jobs' one minus what it needs to prepare a job) and of its jobs."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        info_r, info_w = os.pipe()
        fds = {"/job/warm.py": memfd("warm", _runner_source()),
               "passwd": memfd("passwd", PASSWD.encode()), "group": memfd("group", GROUP.encode()),
               "info": info_w}
        if filters:
            fds["seccomp"] = memfd("seccomp", filters[0])
            fds[JOB_FILTER] = memfd("job-seccomp", filters[1])
        argv, launch = unprivileged(
            runner_argv(sandbox, fds) + [python, "-u", "/job/warm.py", str(theirs.fileno()),
                                         str(tmp_size), *([JOB_FILTER] if filters else [])])
        try:
            proc = await spawn(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, pass_fds=[*fds.values(), theirs.fileno()],
                start_new_session=True, **launch)
        except BaseException:
            os.close(info_r)
            ours.close()
            raise
        finally:
            for fd in fds.values():
                os.close(fd)
            theirs.close()
        runner = cls(proc, Channel(ours), 0)
        try:
            await runner._handshake(info_r)
        except (RunnerBroken, OSError, ValueError, KeyError, TimeoutError) as exc:
            runner.kill()
            try:
                stderr = await asyncio.wait_for(proc.stderr.read(), PROTOCOL_TIMEOUT_S)
            except TimeoutError:
                stderr = b""
            raise WarmUnavailable("runner did not start: "
                                  f"{stderr.decode(errors='replace').strip() or exc}") from exc
        except BaseException:  # cancelled (the server is stopping): leave nothing running
            runner.kill()
            raise
        runner.stderr_task = asyncio.ensure_future(_log_stderr(runner))
        return runner

    async def _handshake(self, info_r: int) -> None:
        try:
            info = await read_info(info_r, 30)
        finally:
            os.close(info_r)
        sandbox_init = int(json.loads(info)["child-pid"])
        ready = await asyncio.wait_for(self.chan.recv(), 30)
        self.host_pid = child_host_pid(sandbox_init, int(ready["ready"])) or 0
        if not self.host_pid:
            raise RunnerBroken("cannot find the runner's host pid")

    def kill(self, release=None) -> None:
        core.kill_group(self.proc)
        self.chan.sock.close()
        self._drop_next(release)

    def _drop_next(self, release) -> None:
        nxt, self.next = self.next, None
        if nxt is None:
            return
        if not nxt.done():
            nxt.cancel()
        elif not nxt.cancelled() and nxt.exception() is None and release is not None:
            cgroup = nxt.result()[1]
            if cgroup is not None:
                release(cgroup)

    def prepare(self, pool: WarmPool) -> None:
        """Take the runner's next job child into a cgroup now, while the slot is idle: a
        cgroup v1 migration can wait ~10 ms for an RCU grace period, which must not sit
        on a job's path. The job's own limits are written into that cgroup when it comes."""
        self.next = asyncio.ensure_future(self._prepare(pool))
        self.next.add_done_callback(lambda f: f.cancelled() or f.exception())  # seen in _claim

    async def _prepare(self, pool: WarmPool) -> tuple[int, JobCgroup | None]:
        reply = await self.chan.recv()
        pid = child_host_pid(self.host_pid, int(reply["prepared"]))
        if pid is None:
            raise RunnerBroken(f"job child {reply['prepared']} not found")
        init = children(pid)  # G forks the job: every job process starts in the cgroup;
        if len(init) != 1:    # C only waits, and is killed by pid
            raise RunnerBroken(f"job child {pid} has no init process")
        if pool.cgroups.version is None:
            return pid, None
        cgroup = pool.cgroups.acquire(*pool.cgroup_defaults)
        if cgroup is None:
            raise RunnerBroken("no cgroup for the next job")
        try:
            await asyncio.get_running_loop().run_in_executor(None, cgroup.add, init[0])
        except BaseException:
            pool.release_cgroup(cgroup)
            raise
        return pid, cgroup

    async def execute(self, spec: JobSpec, hooks: RunHooks, runs: dict, rlimits: dict,
                      pool: WarmPool) -> dict:
        """Run one job; raise RunnerBroken (before it started) or return its result. The
        job's cgroup goes back to the pool's manager (emptied and reused) in the end."""
        run = await self._claim(spec, pool.pids)
        try:
            return await self._execute(run, spec, hooks, runs, rlimits)
        finally:
            if run.cgroup is not None:
                pool.release_cgroup(run.cgroup)

    async def _execute(self, run: WarmRun, spec: JobSpec, hooks: RunHooks, runs: dict,
                       rlimits: dict) -> dict:
        pipes = [os.pipe() for _ in range(3)]
        child_ends = [pipes[0][0], pipes[1][1], pipes[2][1],
                      memfd("source", spec.code.encode("utf-8", "surrogatepass"))]
        ours = [pipes[0][1], pipes[1][0], pipes[2][0]]
        try:
            self.chan.send({"rlimits": rlimits}, child_ends)
        except OSError as exc:
            for fd in ours:
                os.close(fd)
            raise RunnerBroken(f"cannot send a job: {exc}") from exc
        finally:
            for fd in child_ends:
                os.close(fd)
        streams = await _streams(*ours)
        with tracked(runs, spec.job_id, run):
            return await supervise(run, spec, hooks, streams, lambda: self._exit_code(run))

    async def _claim(self, spec: JobSpec, pids: int) -> WarmRun:
        """Take the prepared job child (already in its cgroup) and give it the job's limits."""
        nxt, self.next = self.next, None
        cgroup = None
        try:
            if nxt is None:
                raise RunnerBroken("no job child was prepared")
            pid, cgroup = await asyncio.wait_for(nxt, PROTOCOL_TIMEOUT_S)
            if cgroup is not None:
                cgroup.configure(spec.memory_mb, spec.cpus, pids, spec.io_weight)
        except (RunnerBroken, OSError, ValueError, KeyError, TimeoutError) as exc:
            if cgroup is not None:
                cgroup.remove()  # its limits may be half written: never reused
            raise RunnerBroken(f"the warm runner did not start job {spec.job_id}: {exc}") \
                from exc
        return WarmRun(cgroup, pid)

    async def _exit_code(self, run: WarmRun) -> int | None:
        """The job's exit code, which the runner reports once it reaped the job. Without
        that report the runner is broken (it died or broke the protocol, or ``supervise``
        gave up waiting after the kill): it is killed, and the job dies with it."""
        try:
            reply = await self.chan.recv()
        except asyncio.CancelledError:
            self._lost(run)
            raise
        except (RunnerBroken, OSError, ValueError):  # ValueError: not JSON
            self._lost(run)
            return None
        run.exited = True
        usage = reply.get("usage")
        if isinstance(usage, dict) and all(isinstance(usage.get(k), int)
                                           for k in ("cpu_ms", "max_rss_kb")):
            run.rusage = usage
        return int(reply.get("exit", -1))

    def _lost(self, run: WarmRun) -> None:
        self.kill()
        run.error = run.error or "backend: the warm runner died"


@functools.cache
def _runner_source() -> bytes:
    return package_files.read(package_files.RUNNER, "warm.py")


def runner_argv(sandbox: Sandbox, fds: dict[str, int]) -> list[str]:
    """The cold sandbox's bwrap options, plus the capabilities the runner needs *inside* it."""
    return sandbox.argv(fds, caps=() if os.environ.get(BREAK_ENV) else RUNNER_CAPS)


async def _log_stderr(runner: WarmRunner) -> None:
    while line := await runner.proc.stderr.readline():
        runner.last_error = line.decode(errors="replace").rstrip()
        log.log(runner.log_level, "warm runner %d: %s", runner.proc.pid, runner.last_error)


async def _streams(stdin_w: int, stdout_r: int, stderr_r: int):
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin,
                                                        os.fdopen(stdin_w, "wb", 0))
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    readers = []
    for fd in (stdout_r, stderr_r):
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(lambda r=reader: asyncio.StreamReaderProtocol(r),
                                     os.fdopen(fd, "rb", 0))
        readers.append(reader)
    return writer, readers[0], readers[1]



class WarmPool:
    """``size`` warm runners; a job borrows the one idle longest (prepared first) and gives
    it back (or has it replaced)."""

    def __init__(self, sandbox: Sandbox, python: str, size: int, tmp_size_mb: int,
                 cgroups: CgroupManager, cgroup_defaults: tuple[int, float, int, int],
                 release_cgroup: Callable[[JobCgroup], None],
                 filters: tuple[bytes, bytes] | None = None) -> None:
        self.sandbox, self.python, self.size = sandbox, python, size
        self.filters = filters  # seccomp programs: see WarmRunner.start
        # job cgroups: taken from the manager with default limits (memory_mb, cpus, pids,
        # io_weight) while a runner is idle, reconfigured for the job, and handed back
        # through release_cgroup afterwards
        self.cgroups, self.cgroup_defaults = cgroups, cgroup_defaults
        self.release_cgroup = release_cgroup
        self.pids = cgroup_defaults[2]
        self.tmp_size = tmp_size_mb * 1024 * 1024
        self.idle: asyncio.Queue[WarmRunner | None] = asyncio.Queue()
        self.runners: set[WarmRunner] = set()
        self.disabled = False
        self.stopped = False  # set by stop(): no runner is started or handed out after it
        self.replaced = 0  # runners replaced after dying or misbehaving (for /healthz)
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        """Start every runner; raise WarmUnavailable (with the reason) if warm cannot work here."""
        first = await self._start_runner()
        self.runners.add(first)
        first.prepare(self)
        first.log_level = logging.DEBUG
        await self._probe(first)
        first.log_level = logging.WARNING
        rest = await asyncio.gather(*(self._start_runner() for _ in range(self.size - 1)),
                                    return_exceptions=True)
        for runner in rest:
            if isinstance(runner, BaseException):
                await self.stop()
                raise WarmUnavailable(str(runner))
            self.runners.add(runner)
            runner.prepare(self)
        for runner in self.runners:
            self.idle.put_nowait(runner)

    async def _start_runner(self) -> WarmRunner:
        return await WarmRunner.start(self.sandbox, self.python, self.tmp_size, self.filters)

    async def _probe(self, runner: WarmRunner) -> None:
        """Run one real job through every step (namespaces, mounts, capability drop)."""
        async def started() -> bool:
            return True
        spec = JobSpec(job_id=0, uid=0, language="python", input="",
                       code="import os; print(os.getpid(), sorted(os.listdir('/tmp')))",
                       timeout_s=30, memory_mb=64, cpus=1, io_weight=100, output_cap=65536)
        try:
            result = await runner.execute(spec, RunHooks(started, lambda *_: None), {},
                                          {"core": 0, "nofile": 256}, self)
            runner.prepare(self)
        except RunnerBroken as exc:
            await asyncio.sleep(0.1)  # let the runner's last words reach last_error
            await self.stop()
            raise WarmUnavailable(f"{exc} ({runner.last_error or 'no message'})") from exc
        if result["exit_code"] != 0 or result["stdout"] != "2 []\n":
            await asyncio.sleep(0.1)  # let the runner's last words reach last_error
            await self.stop()
            reason = (result["stderr"].strip().splitlines() or [runner.last_error or str(result)])[-1]
            raise WarmUnavailable(f"a test job failed: {reason}")

    async def stop(self) -> None:
        """Kill every runner, wake every job waiting for one (it gets None), and start none
        again; waits at most about STOP_WAIT_S for the runners to be gone."""
        self.stopped = True
        for _ in range(self.size):
            self.idle.put_nowait(None)
        for task in self._tasks:
            task.cancel()  # a replacement on its way (its start is cancel-safe)
        for runner in self.runners:
            runner.kill(self.release_cgroup)
        waits = [asyncio.ensure_future(r.proc.wait()) for r in self.runners] + list(self._tasks)
        if waits:
            await asyncio.wait(waits, timeout=STOP_WAIT_S)
        self.runners.clear()

    async def run(self, spec: JobSpec, hooks: RunHooks, runs: dict,
                  rlimits: dict) -> dict | None:
        """Run a job on a warm runner; None when it should run cold (no runner, or the
        runner broke before the job started)."""
        runner = await self._acquire()
        if runner is None:
            return None
        healthy = False
        try:
            result = await runner.execute(spec, hooks, runs, rlimits, self)
            healthy = runner.alive and not (result["error"] or "").startswith("backend:")
            return result
        except RunnerBroken as exc:
            if not self.stopped:
                log.warning("%s; replacing it and running the job cold", exc)
            return None
        finally:
            self._release(runner, healthy)

    async def _acquire(self) -> WarmRunner | None:
        while not self.disabled and not self.stopped:
            runner = await self.idle.get()
            if runner is None or self.stopped:
                return None
            if runner.alive:
                return runner
            log.warning("warm runner %d died while idle; replacing it", runner.proc.pid)
            self._release(runner, False)
        return None

    def _release(self, runner: WarmRunner, healthy: bool) -> None:
        if self.stopped:
            runner.kill(self.release_cgroup)
            return
        if healthy:
            runner.prepare(self)
            self.idle.put_nowait(runner)
            return
        runner.kill(self.release_cgroup)
        self.runners.discard(runner)
        self.replaced += 1
        task = asyncio.ensure_future(self._replace())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _replace(self) -> None:
        for attempt in range(3):
            try:
                runner = await self._start_runner()
            except WarmUnavailable as exc:
                log.warning("cannot replace a warm runner (attempt %d): %s", attempt + 1, exc)
                await asyncio.sleep(1 + attempt)
                continue
            if self.stopped:
                runner.kill()
                return
            self.runners.add(runner)
            runner.prepare(self)
            self.idle.put_nowait(runner)
            return
        log.warning("warm runners keep failing; python jobs run cold from now on")
        self.disabled = True
        for _ in range(self.size):
            self.idle.put_nowait(None)
