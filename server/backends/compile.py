"""Compiling a job's program, once: the compile step in the job's sandbox, and a cache of its
results under the data dir (size-capped, least recently used first out, read-only to jobs).

A result is keyed by everything that decides it: the image digest, the runtime version, the
recipe's compile command and environment, and every file's name and content. Concurrent jobs
with the same key compile once; the others wait for that compile and reuse it. Only
successful compiles are kept (a failure may be a timeout or memory limit on a busy machine).

    <data dir>/cache/compile/<key>/build/   what the compiler wrote (the run's /build)
    <data dir>/cache/compile/<key>/meta.json  {"output", "duration_ms", "size"}
    <data dir>/cache/tmp/c-<random>/build/  a compile in progress (owned by uid 65534)
    <data dir>/cache/tmp/job-<random>/      a sandbox started ahead's /job (prestart.py)
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from ..runner import core
from ..runtimes import Recipe, command
from .base import JobSpec, RunHooks
from .sandbox import NOBODY

log = logging.getLogger("orq.compile")
OUTPUT_CAP = 64 * 1024  # bytes of compiler messages kept (stdout and stderr, each)
COMPILE_ERROR = "compile"
# runs one command in a sandbox: (spec, hooks, files, argv, binds) -> result dict
Runner = Callable[..., Awaitable[dict]]


@dataclass
class Build:
    """The outcome of the compile step for one job."""
    info: dict  # the job's "compile" field
    key: str = ""
    build_dir: str | None = None  # where the sandbox finds the result (None: it failed)
    error: str | None = None  # compile, cancelled, interrupted, backend: ...

    def result(self) -> dict:
        """The job's result when nothing ran."""
        return {"stdout": "", "stderr": "", "exit_code": None, "duration_ms": None,
                "truncated": False, "error": self.error, "compile": self.info}


class CompileCache:
    """The compile results on disk, with an in-memory LRU index (rebuilt at start)."""

    def __init__(self, root: Path, reachable: Path, cap_bytes: int) -> None:
        self.dir, self.tmp = root / "compile", root / "tmp"
        self.reachable = reachable / "compile"  # the same directory as the sandbox reaches it
        self.cap = cap_bytes
        self.index: collections.OrderedDict[str, int] = collections.OrderedDict()  # key -> size
        self.pins: collections.Counter[str] = collections.Counter()  # keys in use by a run

    def open(self) -> None:
        """Forget compiles a dead server left half done; index what is stored, oldest first."""
        for path in (self.dir, self.tmp):
            path.mkdir(mode=0o755, parents=True, exist_ok=True)
        for entry in self.tmp.iterdir():
            shutil.rmtree(entry, ignore_errors=True)
        entries = []
        for entry in self.dir.iterdir():
            try:
                meta = entry / "meta.json"
                entries.append((meta.stat().st_mtime, entry.name,
                                json.loads(meta.read_text())["size"]))
            except (OSError, ValueError, KeyError):
                shutil.rmtree(entry, ignore_errors=True)
        for _, key, size in sorted(entries):
            self.index[key] = size

    def get(self, key: str) -> dict | None:
        """A stored result's meta (pinned until unpin), or None."""
        if key not in self.index:
            return None
        try:
            meta = json.loads((self.dir / key / "meta.json").read_text())
        except (OSError, ValueError):
            self._drop(key)
            return None
        self.index.move_to_end(key)
        self.pins[key] += 1
        return meta

    def unpin(self, key: str) -> None:
        self.pins[key] -= 1
        if self.pins[key] <= 0:
            del self.pins[key]

    def scratch(self, prefix: str) -> Path:
        """A fresh directory under the cache's tmp/ (emptied at start), readable by the
        sandbox user."""
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=self.tmp))
        os.chmod(path, 0o755)
        return path

    def workspace(self) -> Path:
        """A fresh directory whose ``build/`` the compiler (uid 65534) may write."""
        work = self.scratch("c-")
        (work / "build").mkdir()
        os.chown(work / "build", NOBODY, NOBODY)
        return work

    def reach(self, path: Path) -> str:
        """``path`` (under the cache) as the sandbox reaches it."""
        return str(self.reachable.parent / path.relative_to(self.dir.parent))

    def store(self, key: str, work: Path, output: str, duration_ms: int) -> dict:
        """Move a successful compile into the cache, read-only from now on (blocking: call it
        off the event loop, then ``add``)."""
        meta = {"output": output, "duration_ms": duration_ms, "size": _seal(work / "build")}
        (work / "meta.json").write_text(json.dumps(meta))
        target = self.dir / key
        if target.exists():  # compiled again after its entry was lost from the index
            shutil.rmtree(target)
        work.rename(target)
        return meta

    def add(self, key: str, size: int) -> None:
        """Index a stored result, pinned for the job that made it; evict the least recently
        used results beyond the size cap."""
        self.index[key] = size
        self.index.move_to_end(key)
        self.pins[key] += 1
        self._evict()

    def _evict(self) -> None:
        total = sum(self.index.values())
        for key in list(self.index):
            if total <= self.cap:
                break
            if self.pins[key] or key == next(reversed(self.index)):
                continue  # in use by a running job, or the one just stored
            total -= self.index[key]
            self._drop(key)
            log.info("compile cache: evicted %s", key[:16])

    def _drop(self, key: str) -> None:
        self.index.pop(key, None)
        shutil.rmtree(self.dir / key, ignore_errors=True)


def _seal(build: Path) -> int:
    """Give what the compiler wrote to root, read-only; returns its size in bytes."""
    size = 0
    for dirpath, dirnames, filenames in os.walk(build):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            os.lchown(path, 0, 0)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode & 0o555)
                size += os.stat(path).st_size if name in filenames else 0
    os.chown(build, 0, 0)
    os.chmod(build, 0o555)
    return size


def cache_key(spec: JobSpec, recipe: Recipe, files: list[tuple[str, str]]) -> str:
    digest = hashlib.sha256(json.dumps(
        [spec.image_digest, recipe.language, spec.version, recipe.compile, recipe.env,
         [name for name, _ in files]]).encode())
    for _, content in files:
        data = content.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


class Compiler:
    """The compile step of compiled languages, through the cache (one compile per key)."""

    def __init__(self, cache: CompileCache, run: Runner, timeout_s: float) -> None:
        self.cache, self.run, self.timeout_s = cache, run, timeout_s
        self.inflight: dict[str, asyncio.Future] = {}

    async def build(self, spec: JobSpec, recipe: Recipe, files: list[tuple[str, str]],
                    hooks: RunHooks) -> Build:
        """Compile (or find) the program of a job that is already RUNNING (``hooks.started``
        only says whether it was cancelled since). On success the result stays pinned until
        ``release``."""
        key = cache_key(spec, recipe, files)
        while True:
            meta = self.cache.get(key)
            if meta is not None:
                return self._found(key, meta, cached=True)
            pending = self.inflight.get(key)
            if pending is None:
                break
            outcome: Build = await asyncio.shield(pending)
            if outcome.error == COMPILE_ERROR:
                return dataclasses.replace(outcome, info={**outcome.info, "cached": True})
            # compiled (now in the cache) or stopped for its own job: look again
        self.inflight[key] = asyncio.get_running_loop().create_future()
        outcome = Build({}, error="backend: the compile did not finish")
        try:
            outcome = await self._compile(key, spec, recipe, files, hooks)
            return outcome
        finally:
            self.inflight.pop(key).set_result(outcome)

    def release(self, build: Build) -> None:
        if build.key:
            self.cache.unpin(build.key)

    def _found(self, key: str, meta: dict, cached: bool) -> Build:
        info = {"exit_code": 0, "output": meta["output"], "duration_ms": meta["duration_ms"],
                "cached": cached}
        return Build(info, key, self.cache.reach(self.cache.dir / key / "build"))

    async def _compile(self, key: str, spec: JobSpec, recipe: Recipe,
                       files: list[tuple[str, str]], hooks: RunHooks) -> Build:
        work = self.cache.workspace()
        try:
            step = dataclasses.replace(spec, timeout_s=self.timeout_s, input="",
                                       output_cap=OUTPUT_CAP)
            argv = command(recipe.compile, files, recipe, spec.memory_mb)
            quiet = RunHooks(started=hooks.started, output=lambda *_: None)  # no live output
            result = await self.run(step, quiet, files, argv,
                                    ((self.cache.reach(work / "build"), "/build", True),))
            output = (result.get("stdout") or "") + (result.get("stderr") or "")
            info = {"exit_code": result.get("exit_code"), "output": output,
                    "duration_ms": result.get("duration_ms") or 0, "cached": False}
            error = result.get("error")
            if error in (core.CANCELLED, core.INTERRUPTED) or (error or "").startswith("backend"):
                return Build(info, error=error)
            if error is not None or result.get("exit_code") != 0:
                if error == core.TIMEOUT:
                    info["output"] += f"\n[orq: the compile took longer than {self.timeout_s:g} s]"
                elif error == core.MEMORY:
                    info["output"] += f"\n[orq: the compile ran out of memory ({spec.memory_mb} MB)]"
                return Build(info, error=COMPILE_ERROR)
            meta = await asyncio.get_running_loop().run_in_executor(
                None, self.cache.store, key, work, output, info["duration_ms"])
            self.cache.add(key, meta["size"])
            return self._found(key, meta, cached=False)
        finally:
            if work.exists():
                await asyncio.get_running_loop().run_in_executor(
                    None, shutil.rmtree, work, True)
