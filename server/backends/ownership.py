"""What the server owns on the host, so that nothing it started outlives it for long.

Layout, in every cgroup hierarchy the local backend uses (per v1 controller, or v2's one):

    orq/<instance>/              one per data dir (``local.instance_name``)
        run-<pid>/               this server's subtree, removed when the server is gone
            server/              the server process itself, in one hierarchy (v1: pids;
                                 v2: the only one): every process it starts is born there,
                                 in a cgroup the server owns, before it can fork anything
            slot-<n>/            job cgroups (a job's processes are moved in)

``claim`` runs before the server starts any process: it kills and removes whatever a dead
predecessor left under ``orq/<instance>`` (the data-dir lock, ``server/lock.py``, makes
sure that predecessor is dead), creates ``run-<pid>``, starts the reaper (``reaper.py``)
from where the server is now, outside its subtree, and moves the server in. The reaper
waits for the server to be gone, however it ends, then kills and removes ``run-<pid>``:
a sandbox caught starting by a ``kill -9`` (bubblewrap arms ``--die-with-parent`` only
after the sandbox's init exists, see MACHINE-NOTES) is gone within a second or so. If the
reaper is killed too, the next start cleans up. At a normal stop, ``release`` moves the
server back where it came from and has the reaper do the same clean-up while it waits.

On v1 only the pids hierarchy holds the server (it is enough to find every process), so
the server stays in the memory and CPU cgroups it was started in.
"""
from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

from . import reaper
from .cgroups import CgroupManager

log = logging.getLogger("orq.ownership")
LEAF = "server"
REAPER_WAIT_S = 1.5  # at stop: the reaper's clean-up of an already stopped subtree


class Ownership:
    """The server's cgroup subtree (``run-<pid>`` in each hierarchy) and its reaper."""

    def __init__(self, cgroups: CgroupManager) -> None:
        self.cgroups = cgroups
        self.runs: list[Path] = []  # run-<pid> per hierarchy, once claimed
        self.reaper: subprocess.Popen | None = None
        self._lifeline = -1  # the write end of the reaper's stdin
        self._origin: Path | None = None  # the server's cgroup before it moved in

    def claim(self) -> None:
        """Clean up after a dead predecessor, then own a subtree and live in it (call it
        after ``cgroups.detect()`` and before starting any process)."""
        if self.cgroups.version is None:
            log.warning("without cgroups, a server killed with kill -9 may leave sandbox "
                        "processes behind (bubblewrap's --die-with-parent ends most, not "
                        "one caught while its sandbox starts), and the next start cannot "
                        "find them")
            return
        clean_leftovers(list(self.cgroups.controllers.values()))
        runs = {ctrl: parent / f"run-{os.getpid()}"
                for ctrl, parent in self.cgroups.controllers.items()}
        track = "pids" if "pids" in runs else next(iter(runs))  # v2: "unified"
        try:
            try:
                self._make(runs, track)
            except FileNotFoundError:  # a dead predecessor's reaper removed orq/<instance>
                self.cgroups.detect()  # just now: make (and delegate) it again
                self._make(runs, track)
        except OSError as exc:
            log.warning("cannot make this server's cgroup subtree (%s); a crash may leave "
                        "sandbox processes behind until the next start", exc)
            reaper.remove_tree(list(runs.values()))
            return
        self.runs = list(runs.values())
        self.cgroups.controllers = runs  # job cgroups go into run-<pid>
        self._start_reaper()
        self._origin = own_cgroup(self.cgroups.root, track)
        if not _move(runs[track] / LEAF):
            self._origin = None

    def _make(self, runs: dict[str, Path], track: str) -> None:
        for run in runs.values():
            run.mkdir(exist_ok=True)  # exist_ok: this may be the second attempt
        (runs[track] / LEAF).mkdir(exist_ok=True)
        if self.cgroups.version == 2:  # the controllers pass on to the job cgroups
            enabled = (runs[track].parent / "cgroup.subtree_control").read_text().split()
            (runs[track] / "cgroup.subtree_control").write_text(
                " ".join("+" + c for c in enabled))

    def _start_reaper(self) -> None:
        read, self._lifeline = os.pipe()  # not inheritable: no sandbox holds it open
        try:
            self.reaper = subprocess.Popen(
                [sys.executable, "-I", "-S", reaper.__file__, *map(str, self.runs)],
                stdin=read, stdout=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            log.warning("cannot start the reaper (%s): after a crash, the next start "
                        "cleans up", exc)
        finally:
            os.close(read)

    async def release(self) -> None:
        """At stop, once jobs and runners are stopped: leave the subtree and have the
        reaper kill whatever is left in it (a sandbox that was starting) and remove it."""
        if self._origin is None or not _move(self._origin):
            # still inside: the reaper would kill us; it cleans up once we have exited
            reaper.kill_tree(self.runs, keep=frozenset({os.getpid()}))
            return
        os.close(self._lifeline)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REAPER_WAIT_S
        while self.reaper is not None and self.reaper.poll() is None \
                and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for parent in {run.parent for run in self.runs}:  # orq/<instance>, if now empty
            try:  # (only here: we hold the data-dir lock, no other server is making it)
                parent.rmdir()
            except OSError:
                pass


def own_cgroup(root: Path, hierarchy: str) -> Path | None:
    """This process's cgroup directory in one hierarchy (a v1 controller, or "unified")."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, names, path = line.split(":", 2)
        if (hierarchy == "unified" and names == "") or hierarchy in names.split(","):
            base = root if hierarchy == "unified" else root / hierarchy
            return base / path.lstrip("/")
    return None


def _move(cgroup: Path) -> bool:
    try:
        with open(cgroup / "cgroup.procs", "w") as f:
            f.write(str(os.getpid()))  # the whole process, every thread
        return True
    except OSError as exc:
        log.warning("cannot move the server into %s (%s): a sandbox caught starting by a "
                    "crash may outlive it until the next start", cgroup, exc)
        return False


def clean_leftovers(parents: list[Path]) -> None:
    """Kill and remove everything under ``orq/<instance>``: while we hold the data-dir
    lock, all of it was left by servers that are gone (or by older versions' layout)."""
    leftovers = [child for parent in parents if parent.is_dir()
                 for child in parent.iterdir() if child.is_dir()]
    if not leftovers:
        return
    killed = reaper.kill_tree(leftovers)
    removed = reaper.remove_tree(leftovers)
    left = [str(d) for d in leftovers if d.exists()]
    log.warning("cleaned up after an earlier server on this data dir: killed %d processes%s, "
                "removed %d cgroups%s", len(killed),
                f" ({' '.join(map(str, sorted(killed)))})" if killed else "", removed,
                f"; could not remove {', '.join(left)}" if left else "")
