"""Killing what a server left in its cgroups: used at start-up, at stop, and by the reaper.

The reaper is this file run as a script (``python3 -I -S reaper.py CGROUP_DIR...``, see
``ownership.py``): the server starts it before it moves itself into its own cgroup
subtree, with the read end of a pipe on its standard input whose write end only the
server holds. End of file there means the server is gone, however it ended (``kill -9``
included); the reaper then kills every process left in the server's subtree and removes
the subtree's directories (and its parent, ``orq/<instance>``, when nothing else is in
it), and exits. Standard library only, no imports from orq, so it
runs with ``-I -S`` (no environment, no site packages) from wherever orq is installed.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path


def pids_in(roots: Iterable[Path]) -> set[int]:
    """Every process in these cgroups and their descendants."""
    found: set[int] = set()
    for root in roots:
        for dirpath, _, _ in os.walk(root):
            try:
                with open(os.path.join(dirpath, "cgroup.procs")) as f:
                    found.update(int(pid) for pid in f.read().split())
            except (OSError, ValueError):
                pass  # removed meanwhile
    return found


def kill_tree(roots: list[Path], keep: frozenset[int] = frozenset(),
              wait_s: float = 2.0) -> set[int]:
    """SIGKILL every process in these subtrees but ``keep`` until none is left (or ``wait_s``
    passed); returns the pids it found. v2's cgroup.kill, where there is one and nothing
    is kept, kills a whole subtree at once, so nothing there can fork away meanwhile."""
    spared = keep | {os.getpid(), 1}  # whatever got in there, never the caller or init
    killed = pids_in(roots) - spared  # read first: after cgroup.kill they are gone
    if not keep:  # (only when nothing is kept: cgroup.kill spares nobody)
        for root in roots:
            try:
                with open(root / "cgroup.kill", "w") as f:
                    f.write("1")
            except OSError:
                pass  # cgroup v1, or a kernel older than 5.14: the loop below does it
    deadline = time.monotonic() + wait_s
    while (pids := pids_in(roots) - spared) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        killed |= pids
        time.sleep(0.01)
    return killed


def remove_tree(roots: list[Path]) -> int:
    """rmdir these cgroups, deepest first (a cgroup whose last process is still exiting
    is busy for a moment); returns how many were removed."""
    removed = 0
    for root in roots:
        for dirpath, _, _ in os.walk(root, topdown=False):
            for _ in range(100):
                try:
                    os.rmdir(dirpath)
                    removed += 1
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
    return removed


def main(argv: list[str]) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # a Ctrl+C or a stop is for the server, not me
    roots = [Path(arg) for arg in argv]
    while os.read(0, 4096):
        pass  # nothing is ever written: this returns when the server is gone
    killed = kill_tree(roots)
    removed = remove_tree(roots)
    for parent in {root.parent for root in roots}:  # orq/<instance>, unless a new server
        try:                                         # on the data dir is using it
            os.rmdir(parent)
        except OSError:
            pass
    if killed:
        print(f"orq reaper: the server is gone; killed {len(killed)} processes it left "
              f"({' '.join(map(str, sorted(killed)))}), removed {removed} cgroups",
              file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
