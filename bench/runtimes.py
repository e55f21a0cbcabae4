"""Every runtime's hello world, end to end, against the same compile + run under plain bwrap;
and what the compile cache saves.

orq: one job at a time, ``POST /jobs?wait=true`` over a kept-alive connection, in the image
holding every runtime (the tests' cached mmdebstrap image), with a program never seen before
(a fresh comment in it), so compiled languages compile; then the same program again (a
compile cache hit).
Baseline: a bare loop that runs the recipe's compile command (if any) and then its run
command, each under plain bwrap with the same options, root file system, environment and
user as orq's sandbox, writing /build to a fresh directory; one at a time, reading the output.
The two alternate, so the machine's noise falls on both.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from statistics import median

from common import KeepAlive, image_data, orq_server
from images_support import LANGS, debian_template
from runtime_programs import HELLO, PROGRAMS

from server.backends.sandbox import (
    GROUP,
    NOBODY,
    PASSWD,
    Sandbox,
    as_nobody,
    find_bwrap,
    memfd,
)
from server.runtimes import BY_LANGUAGE, command, program

COMMENT = {"python": "#", "bash": "#", "sh": "#", "ruby": "#", "perl": "#"}  # else //


def fresh(language: str, n: int) -> str:
    """The language's hello world, made new by a comment (a compile cache miss)."""
    mark = COMMENT.get(language, "//")
    return f"{mark} run {n} {time.monotonic_ns()}\n" + PROGRAMS[language][HELLO]


async def sandboxed(root: str, env: dict, files: list, argv: list[str],
                    build: Path) -> bytes:
    fds = {f"/job/{name}": memfd("src", content.encode()) for name, content in files}
    fds.update(passwd=memfd("passwd", PASSWD.encode()), group=memfd("group", GROUP.encode()))
    bwrap = Sandbox(find_bwrap(), (), 64).argv(fds, env, root=root,
                                              binds=((str(build), "/build", True),))
    try:
        proc = await asyncio.create_subprocess_exec(
            *bwrap, *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, pass_fds=list(fds.values()), **as_nobody())
    finally:
        for fd in fds.values():
            os.close(fd)
    out, _ = await proc.communicate(b"world\n")
    assert proc.returncode == 0, out
    return out


async def bare(root: str, env: dict, language: str, code: str, tmp: Path) -> float:
    """Seconds for the recipe's compile (if any) and run of ``code`` under plain bwrap."""
    recipe = BY_LANGUAGE[language]
    files = program(recipe, code)
    env = {**env, **dict(recipe.env)}
    build = Path(tempfile.mkdtemp(dir=tmp))
    os.chown(build, NOBODY, NOBODY)
    start = time.monotonic()
    if recipe.compiled:
        await sandboxed(root, env, files, command(recipe.compile, files, recipe, 256), build)
    out = await sandboxed(root, env, files, command(recipe.run, files, recipe, 256), build)
    took = time.monotonic() - start
    assert out == b"hello world\n", out
    shutil.rmtree(build)
    return took


async def orq_job(conn: KeepAlive, language: str, code: str) -> tuple[float, dict]:
    took, status, job = await conn.wait_job({"uid": 1, "code": code, "input": "world\n",
                                             "language": language, "image": LANGS[0],
                                             "timeout": 30})
    assert status == 200 and job["result"] == "hello world\n", job
    return took, job


async def measure(url: str, root: str, env: dict, tmp: Path, reps: int) -> dict:
    conn, times = KeepAlive(url), {}
    try:
        for language in sorted(PROGRAMS):
            t = times[language] = {"bare": [], "orq": [], "cached": [], "compile_ms": []}
            await orq_job(conn, language, fresh(language, -1))  # warm-up: page cache
            await bare(root, env, language, fresh(language, -1), tmp)
            for n in range(reps):
                t["bare"].append(await bare(root, env, language, fresh(language, n), tmp))
                code = fresh(language, n)
                took, job = await orq_job(conn, language, code)
                t["orq"].append(took)
                if job["compile"]:
                    t["compile_ms"].append(job["compile"]["duration_ms"])
                    took, job = await orq_job(conn, language, code)
                    assert job["compile"]["cached"], job
                    t["cached"].append(took)
    finally:
        conn.close()
    return times


def run(reps: int = 7) -> list[dict]:
    image = image_data(debian_template(*LANGS), "orq-bench-runtimes-")
    with image as (data, root, env, tmp), \
            orq_server(data, "open", ["--slots", "1", "--max-timeout-s", "60"]).start() as orq:
        times = asyncio.run(measure(orq.url, root, env, tmp, reps))
    return [row for language, t in times.items() for row in rows(language, t, reps)]


def rows(language: str, t: dict, reps: int) -> list[dict]:
    ms = {k: 1000 * median(v) for k, v in t.items() if v and k != "compile_ms"}
    ratio = ms["orq"] / ms["bare"]
    out = [{"figure": f"{language}: hello world, submit->DONE p50 (new program)",
            "baseline": "compile + run under plain bwrap, bare loop",
            "baseline_value": f"{ms['bare']:.0f} ms", "value": f"{ms['orq']:.0f} ms",
            "ratio": ratio, "target": "report", "met": True,
            "detail": f"{reps} reps" + (f"; compile {median(t['compile_ms']):.0f} ms"
                                        if t["compile_ms"] else "")}]
    if "cached" in ms:
        cached = ms["cached"] / ms["orq"]
        target = language == "c"
        out.append({"figure": f"{language}: the same program again (compile cache hit)",
                    "baseline": "its first submission", "baseline_value": f"{ms['orq']:.0f} ms",
                    "value": f"{ms['cached']:.0f} ms", "ratio": cached,
                    "target": "<= 0.2x" if target else "report",
                    "met": cached <= 0.2 or not target, "detail": ""})
    return out


if __name__ == "__main__":
    for row in run(reps=3):
        print(json.dumps(row))
