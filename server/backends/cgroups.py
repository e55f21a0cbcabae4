"""Per-job cgroups, v1 (hybrid hosts like ours) or v2 (most production hosts).

Detected once at start-up; where neither is writable the sandbox falls back to
rlimits alone and says so in one log line.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger("orq.cgroups")
ROOT = Path("/sys/fs/cgroup")
PARENT = "orq"


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
        return True
    except OSError:
        return False


class JobCgroup:
    """The cgroup(s) of one job: limits in, pids in, everything killed and removed at the end."""

    def __init__(self, dirs: list[Path], version: int) -> None:
        self.dirs = dirs
        self.version = version

    def add(self, pid: int) -> None:
        for d in self.dirs:
            (d / "cgroup.procs").write_text(str(pid))

    def oom_killed(self) -> bool:
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        for d in self.dirs:
            try:
                for line in (d / name).read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and int(value) > 0:
                        return True
            except (OSError, ValueError):
                continue
        return False

    def pids(self) -> list[int]:
        found: set[int] = set()
        for d in self.dirs:
            try:
                found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                pass
        return sorted(found)

    def kill_all(self) -> None:
        """SIGKILL every process in the group, until none is left."""
        if self.version == 2 and _write(self.dirs[0] / "cgroup.kill", "1"):
            pass
        for _ in range(100):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.005)

    def remove(self) -> None:
        self.kill_all()
        for d in self.dirs:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)


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

    def detect(self) -> int | None:
        if (self.root / "cgroup.controllers").exists():
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
        for ctrl in ("memory", "pids", "cpu", "blkio"):
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

    def create(self, name: str, memory_mb: int, cpus: float, pids: int,
               io_weight: int) -> JobCgroup | None:
        if self.version is None:
            return None
        try:
            return self._create_v2(name, memory_mb, cpus, pids, io_weight) if self.version == 2 \
                else self._create_v1(name, memory_mb, cpus, pids, io_weight)
        except OSError as exc:
            log.warning("could not create cgroup %s: %s", name, exc)
            return None

    def _create_v1(self, name, memory_mb, cpus, pids, io_weight) -> JobCgroup:
        dirs = {ctrl: parent / name for ctrl, parent in self.controllers.items()}
        for d in dirs.values():
            d.mkdir(exist_ok=True)
        mem = str(memory_mb * 1024 * 1024)
        (dirs["memory"] / "memory.limit_in_bytes").write_text(mem)
        _write(dirs["memory"] / "memory.memsw.limit_in_bytes", mem)  # no escape into swap
        (dirs["pids"] / "pids.max").write_text(str(pids))
        if "cpu" in dirs:
            _write(dirs["cpu"] / "cpu.cfs_period_us", "100000")
            _write(dirs["cpu"] / "cpu.cfs_quota_us", str(int(cpus * 100000)))
        if "blkio" in dirs:
            _write(dirs["blkio"] / "blkio.weight", str(io_weight)) or \
                _write(dirs["blkio"] / "blkio.bfq.weight", str(io_weight))
        return JobCgroup(list(dirs.values()), 1)

    def _create_v2(self, name, memory_mb, cpus, pids, io_weight) -> JobCgroup:
        d = self.controllers["unified"] / name
        d.mkdir(exist_ok=True)
        (d / "memory.max").write_text(str(memory_mb * 1024 * 1024))
        _write(d / "memory.swap.max", "0")
        (d / "pids.max").write_text(str(pids))
        _write(d / "cpu.max", f"{int(cpus * 100000)} 100000")
        _write(d / "io.weight", f"default {io_weight}")
        return JobCgroup([d], 2)

    def cleanup_stale(self) -> None:
        """Remove job cgroups left by a previous run of the server (after a crash)."""
        for parent in self.controllers.values():
            for child in parent.iterdir() if parent.exists() else ():
                if child.is_dir():
                    JobCgroup([child], self.version or 1).remove()
