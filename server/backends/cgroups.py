"""Per-job cgroups, v1 (hybrid hosts like ours) or v2 (most production hosts).

Detected once at start-up; where neither is writable the sandbox falls back to
rlimits alone and says so in one log line.
"""
from __future__ import annotations

import collections
import itertools
import logging
import os
from pathlib import Path

from . import reaper

log = logging.getLogger("orq.cgroups")
REUSE_LOOKS = 4  # released cgroups checked for a settled one before a new one is made
KILL_WAIT_S = 0.5  # a job's processes get this long to be gone after SIGKILL (as before)
ROOT = Path("/sys/fs/cgroup")
PARENT = "orq"
WITHOUT_ENV = "_ORQ_WITHOUT_CGROUPS"  # test hook: run as where cgroups are not writable


def _write(path: Path, value: str) -> bool:
    try:
        _put(path, value)
        return True
    except OSError:
        return False


def _put(path: Path, value: str) -> None:
    """One write(2) to a cgroup file (pathlib's write_text costs several times more)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def read_small(path: Path | str) -> str:
    """One read(2) of a small kernel file (cgroup, /proc): pathlib costs several times more."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 65536).decode()
    finally:
        os.close(fd)


def _read_or_none(read) -> int | None:
    try:
        return read()
    except (OSError, ValueError, KeyError):
        return None


class JobCgroup:
    """One reusable cgroup (one directory per v1 controller): limits in, a job's pids in,
    everything killed at the end. ``configure`` rewrites only limits that changed."""

    def __init__(self, dirs: dict[str, Path], version: int) -> None:
        self.by_ctrl = dirs
        self.dirs = list(dict.fromkeys(dirs.values()))
        self.version = version
        self.limits: tuple | None = None
        self._oom_base = 0  # the OOM kill count when the cgroup was last handed out clean
        self.usage_base: tuple[int | None, int] = (None, 0)  # CPU ns, memory bytes, when clean
        self._peak_fd: int | None = None  # v2: memory.peak, reset through this descriptor

    def configure(self, memory_mb: int, cpus: float, pids: int, io_weight: int) -> None:
        """Apply a job's limits (raises OSError if the kernel refuses them)."""
        wanted = (memory_mb, cpus, pids, io_weight)
        if wanted != self.limits:
            self.limits = None  # half-applied limits must never be trusted
            (self._limits_v2 if self.version == 2 else self._limits_v1)(*wanted)
            self.limits = wanted

    def _limits_v1(self, memory_mb, cpus, pids, io_weight) -> None:
        mem, d = str(memory_mb * 1024 * 1024), self.by_ctrl
        # memsw (memory + swap) must never be below the memory limit: order the two writes
        raising = self.limits is None or memory_mb >= self.limits[0]
        for name in (("memory.memsw.limit_in_bytes", "memory.limit_in_bytes") if raising
                     else ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes")):
            if name == "memory.limit_in_bytes":
                _put(d["memory"] / name, mem)
            else:
                _write(d["memory"] / name, mem)  # no escape into swap, where accounted
        _put(d["pids"] / "pids.max", str(pids))
        if "cpu" in d:
            _write(d["cpu"] / "cpu.cfs_period_us", "100000")
            _write(d["cpu"] / "cpu.cfs_quota_us", str(int(cpus * 100000)))
        if "blkio" in d:
            _write(d["blkio"] / "blkio.weight", str(io_weight)) or \
                _write(d["blkio"] / "blkio.bfq.weight", str(io_weight))

    def _limits_v2(self, memory_mb, cpus, pids, io_weight) -> None:
        d = self.dirs[0]
        _put(d / "memory.max", str(memory_mb * 1024 * 1024))
        _write(d / "memory.swap.max", "0")
        _put(d / "pids.max", str(pids))
        _write(d / "cpu.max", f"{int(cpus * 100000)} 100000")
        _write(d / "io.weight", f"default {io_weight}")

    def add(self, pid: int) -> None:
        for d in self.dirs:
            _put(d / "cgroup.procs", str(pid))

    def _oom_count(self) -> int:
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        d = self.by_ctrl.get("memory", self.dirs[0])
        try:
            for line in read_small(d / name).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def reset_oom(self) -> None:
        """Take the current OOM kill count as the base of the next job (the manager calls
        this when it makes the cgroup and when it gets it back empty: off a job's path)."""
        self._oom_base = self._oom_count()

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer struck since the cgroup was handed out."""
        return self._oom_count() > self._oom_base

    def reset_usage(self) -> None:
        """Take the clean cgroup's CPU time as the next job's base and restart its memory
        peak from what it holds now (page cache of earlier jobs stays charged to it)."""
        if self.version == 2:
            self._reset_peak_v2()
        elif "memory" in self.by_ctrl:
            _write(self.by_ctrl["memory"] / "memory.max_usage_in_bytes", "0")
        self.usage_base = (_read_or_none(self._cpu_ns), _read_or_none(self._memory_now) or 0)

    def _reset_peak_v2(self) -> None:
        """memory.peak restarts per open descriptor (Linux 6.12+); older kernels have no
        per-job peak for a reused cgroup (then the peak comes from the job's rusage)."""
        if self._peak_fd is None:
            try:
                self._peak_fd = os.open(self.dirs[0] / "memory.peak", os.O_RDWR)
            except OSError:
                return
        try:
            os.write(self._peak_fd, b"reset\n")
        except OSError:
            os.close(self._peak_fd)
            self._peak_fd = None

    def _cpu_ns(self) -> int | None:
        if self.version == 2:
            for line in read_small(self.dirs[0] / "cpu.stat").splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) * 1000
            return None
        acct = self.by_ctrl.get("cpuacct")
        return int(read_small(acct / "cpuacct.usage")) if acct is not None else None

    def _memory_now(self) -> int:
        if self.version == 2:
            return int(read_small(self.dirs[0] / "memory.current"))
        return int(read_small(self.by_ctrl["memory"] / "memory.usage_in_bytes"))

    def _memory_peak(self) -> int | None:
        if self.version == 2:
            if self._peak_fd is None:
                return None
            return int(os.pread(self._peak_fd, 64, 0))
        return int(read_small(self.by_ctrl["memory"] / "memory.max_usage_in_bytes"))

    @property
    def measures_usage(self) -> bool:
        """Whether ``usage`` knows both figures (else the job reports its rusage too)."""
        return self.usage_base[0] is not None and (self.version == 1 or
                                                   self._peak_fd is not None)

    def usage(self) -> dict[str, int | None]:
        """The CPU time and memory peak of what ran here since ``reset_usage`` (None where
        this cgroup cannot tell). The peak is of all the job's processes together, less
        what the clean cgroup already held."""
        cpu_base, mem_base = self.usage_base
        cpu, peak = _read_or_none(self._cpu_ns), _read_or_none(self._memory_peak)
        return {"cpu_ms": None if cpu is None or cpu_base is None
                else round((cpu - cpu_base) / 1e6),
                "max_rss_kb": None if peak is None else max(0, peak - mem_base) // 1024}

    def pids(self) -> list[int]:
        found: set[int] = set()
        for d in self.dirs:
            try:
                found.update(int(p) for p in read_small(d / "cgroup.procs").split())
            except (OSError, ValueError):
                pass
        return sorted(found)

    def lingering(self) -> int:
        """Tasks of earlier jobs the pids controller still counts. A killed task leaves
        cgroup.procs when it exits, but stays in pids.current until it is reaped and an RCU
        grace period has passed (seconds, on some VMs): handed to the next job at once, the
        cgroup would refuse that job's forks early (bwrap: "Can't fork for pid 1")."""
        try:
            return int(read_small(self.by_ctrl.get("pids", self.dirs[0]) / "pids.current"))
        except (OSError, ValueError):
            return 0

    def kill_all(self) -> bool:
        """SIGKILL every process in the group until none is left (the same loop the start-up
        clean-up and the reaper use, for at most KILL_WAIT_S: a job's kill may run on the
        event loop); False if some stay."""
        reaper.kill_tree(self.dirs, wait_s=KILL_WAIT_S)
        return not self.pids()

    def remove(self) -> None:
        self.kill_all()
        if self._peak_fd is not None:
            os.close(self._peak_fd)
            self._peak_fd = None
        reaper.remove_tree(self.dirs)


class CgroupManager:
    """Creates per-job cgroups under ``<root>/orq``; ``version`` is 1, 2 or None (unavailable)."""

    def __init__(self, root: Path = ROOT, instance: str = "default") -> None:
        """``instance`` names this server's subtree (orq/<instance>), so several servers on
        one host never touch each other's jobs, and a restarted one finds its own leftovers."""
        self.root = root
        self.instance = instance
        self.version: int | None = None
        self.controllers: dict[str, Path] = {}
        self.reason = ""
        self._free: collections.deque[JobCgroup] = collections.deque()  # clean, reusable
        self._names = itertools.count(1)

    def detect(self) -> int | None:
        if os.environ.get(WITHOUT_ENV):
            self.reason = f"{WITHOUT_ENV} is set"
        elif (self.root / "cgroup.controllers").exists():
            self._setup_v2()
        elif (self.root / "memory").is_dir():
            self._setup_v1()
        else:
            self.reason = f"no cgroup hierarchy at {self.root}"
        if self.version is None:
            log.warning("cgroup limits unavailable (%s); jobs are limited by rlimits only",
                        self.reason)
        return self.version

    def _setup_v1(self) -> None:
        for ctrl in ("memory", "pids", "cpu", "cpuacct", "blkio"):
            parent = self.root / ctrl / PARENT / self.instance
            try:
                parent.mkdir(parents=True, exist_ok=True)
                self.controllers[ctrl] = parent
            except OSError as exc:
                if ctrl in ("memory", "pids"):
                    self.reason = f"cannot create {parent}: {exc.strerror}"
                    self.controllers.clear()
                    return
        self.version = 1

    def _setup_v2(self) -> None:
        top, parent = self.root / PARENT, self.root / PARENT / self.instance
        try:
            available = (self.root / "cgroup.controllers").read_text().split()
            wanted = [c for c in ("memory", "pids", "cpu", "io") if c in available]
            parent.mkdir(parents=True, exist_ok=True)
            for level in (self.root, top, parent):
                (level / "cgroup.subtree_control").write_text(" ".join("+" + c for c in wanted))
        except OSError as exc:
            self.reason = f"cannot delegate controllers under {parent}: {exc.strerror}"
            return
        if "memory" not in wanted or "pids" not in wanted:
            self.reason = "the memory or pids controller is missing"
            return
        self.controllers = {"unified": parent}
        self.version = 2

    def acquire(self, memory_mb: int, cpus: float, pids: int,
                io_weight: int) -> JobCgroup | None:
        """A clean cgroup with these limits: a released one reused (mkdir/rmdir of cgroups
        costs more than the rest of the bookkeeping), else a new one."""
        if self.version is None:
            return None
        for _ in range(min(len(self._free), REUSE_LOOKS)):
            cgroup = self._free.popleft()  # the one released longest ago first
            if cgroup.lingering():
                self._free.append(cgroup)  # not yet: another, or a new one
                continue
            try:
                cgroup.configure(memory_mb, cpus, pids, io_weight)
                return cgroup
            except OSError:  # e.g. v1 cannot lower a limit below what is still charged
                cgroup.remove()
        name = f"slot-{next(self._names)}"
        try:
            cgroup = self._make(name)
            cgroup.configure(memory_mb, cpus, pids, io_weight)
            return cgroup
        except OSError as exc:
            log.warning("could not create cgroup %s: %s", name, exc)
            return None

    def release(self, cgroup: JobCgroup) -> None:
        """Back to the pool once empty (blocking: call it off the event loop)."""
        if cgroup.kill_all():
            cgroup.reset_oom()
            cgroup.reset_usage()
            self._free.append(cgroup)
        else:
            cgroup.remove()

    def _make(self, name: str) -> JobCgroup:
        dirs = {ctrl: parent / name for ctrl, parent in self.controllers.items()}
        for d in dirs.values():
            d.mkdir(exist_ok=True)
        cgroup = JobCgroup(dirs, self.version)
        cgroup.reset_oom()  # 0 unless the directory was left over
        cgroup.reset_usage()
        return cgroup
