"""Which runtimes a root file system (an image, or the host) provides: each recipe's version
probe, run in the sandbox."""
from __future__ import annotations

import logging
import os
import subprocess

from ..runtimes import RECIPES, Recipe, parse_version
from .sandbox import GROUP, PASSWD, Sandbox, memfd, unprivileged

log = logging.getLogger("orq.images")
PROBE_TIMEOUT_S = 60.0  # a JVM's first start on a cold page cache takes a while


def run_in(sandbox: Sandbox, root: str | None, argv: list[str], env: dict[str, str],
           timeout: float = PROBE_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run a trusted command (a probe) in a fresh sandbox on ``root`` (None: the host)."""
    fds = {"passwd": memfd("passwd", PASSWD.encode()), "group": memfd("group", GROUP.encode())}
    try:
        argv, launch = unprivileged(sandbox.argv(fds, env, root=root) + argv)
        return subprocess.run(argv, capture_output=True, timeout=timeout,
                              pass_fds=list(fds.values()), start_new_session=True, check=False,
                              **launch)
    finally:
        for fd in fds.values():
            os.close(fd)


def probe(sandbox: Sandbox, root: str | None, env: dict[str, str],
          recipes: tuple[Recipe, ...] = RECIPES) -> list[dict]:
    """[{"language", "version"}] of every recipe whose probe succeeds in the root."""
    found = []
    for recipe in recipes:
        try:
            proc = run_in(sandbox, root, list(recipe.probe), env)
        except subprocess.TimeoutExpired:
            log.warning("the %s probe timed out", recipe.language)
            continue
        version = parse_version(proc.stdout.decode(errors="replace")) \
            if proc.returncode == 0 else None
        if version is not None:
            found.append({"language": recipe.language, "version": version})
    return found
