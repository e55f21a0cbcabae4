"""The server's own cgroup subtree and its reaper on cgroup v2 (backends/ownership.py).

The server tests run on whatever this host has (here: cgroup v1 controllers). Most
production hosts are pure v2, where the reaper uses cgroup.kill; this file runs the same
code on the v2 hierarchy, with a small process in the server's place: it claims a
subtree on the real cgroup2 file system and starts a child, then dies by SIGKILL.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from reliability_support import wait_gone

from server.backends import reaper
from server.backends.ownership import clean_leftovers

ROOT = Path("/sys/fs/cgroup")
V2 = ROOT if (ROOT / "cgroup.controllers").exists() else ROOT / "unified"
if not (V2 / "cgroup.kill").exists() and not (V2 / "cgroup.controllers").exists():
    pytest.skip("no cgroup v2 hierarchy here", allow_module_level=True)

SERVER = """
import subprocess, sys, time
from pathlib import Path
from server.backends.cgroups import CgroupManager
from server.backends.ownership import Ownership
root, instance = Path(sys.argv[1]), sys.argv[2]
cgroups = CgroupManager(root=root, instance=instance)
cgroups.version, cgroups.controllers = 2, {"unified": root / "orq" / instance}
owner = Ownership(cgroups)
owner.claim()
child = subprocess.Popen(["sleep", "300"])
print(child.pid, owner.reaper.pid, flush=True)
time.sleep(300)
"""


@pytest.fixture
def instance(tmp_path):
    name = f"test-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    try:
        (V2 / "orq" / name).mkdir(parents=True)
    except OSError as exc:
        pytest.skip(f"cannot make a cgroup here: {exc}")
    yield name
    leftovers = [V2 / "orq" / name]
    reaper.kill_tree(leftovers)
    reaper.remove_tree(leftovers)
    if V2.name == "unified":  # no server uses that one: leave nothing there
        try:
            (V2 / "orq").rmdir()
        except OSError:
            pass  # another test run's


def fake_server(instance: str) -> tuple[subprocess.Popen, int, int]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(V2), instance], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    child, reaper_pid = map(int, proc.stdout.readline().split())
    return proc, child, reaper_pid


def started(pid: int) -> dict:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return {(pid, int(fields[19])): "sleep"}


def test_a_child_is_born_in_the_servers_cgroup_and_reaped_after_kill9(instance):
    proc, child, _ = fake_server(instance)
    run = V2 / "orq" / instance / f"run-{proc.pid}"
    assert f"0::/{run.relative_to(V2)}/server\n" in Path(f"/proc/{child}/cgroup").read_text()
    sleeper = started(child)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not wait_gone(sleeper, 5)
    deadline = time.monotonic() + 5
    while run.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not run.exists()


def test_the_next_start_cleans_what_a_dead_server_and_reaper_left(instance, caplog):
    proc, child, reaper_pid = fake_server(instance)
    sleeper = started(child)
    os.kill(reaper_pid, signal.SIGKILL)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.3)
    assert wait_gone(sleeper, 0), "nothing should have cleaned up yet"
    with caplog.at_level(logging.WARNING, "orq.ownership"):
        clean_leftovers([V2 / "orq" / instance])
    assert not wait_gone(sleeper, 5)
    assert not [d for d in (V2 / "orq" / instance).iterdir() if d.is_dir()]
    assert f"killed 1 processes ({child})" in caplog.text
