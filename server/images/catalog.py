"""The running server's view of its images and runtimes, reloaded whenever an image command
(another process) changed the store."""
from __future__ import annotations

import asyncio
import functools
import logging
from pathlib import Path

from ..backends.probe import probe
from ..backends.sandbox import Sandbox, image_env
from ..runtimes import BY_LANGUAGE, HOST, PROBES_KEY, Runtime, RuntimeIndex
from ..store import ImageRows
from .store import ImageFiles

log = logging.getLogger("orq.images")


def public(image: dict) -> dict:
    """An image as GET /images shows it."""
    return {k: v for k, v in image.items() if k != "probed"}


async def reprobe(rows: ImageRows, files: ImageFiles, shared: Path, sandbox: Sandbox) -> None:
    """Probe again the images whose runtimes were found with other recipes (an older orq)."""
    loop = asyncio.get_running_loop()
    for image in await rows.all():
        if image["probed"] == PROBES_KEY:
            continue
        root = ImageFiles(shared).path(image["digest"]) / "rootfs"
        runtimes = await loop.run_in_executor(None, probe, sandbox, str(root),
                                              image_env(files.env(image["digest"])))
        await rows.set_runtimes(image["name"], image["digest"], runtimes, PROBES_KEY)
        log.info("image %s: runtimes probed again for this version's recipes: %s",
                 image["name"], ", ".join(f"{r['language']} {r['version']}" for r in runtimes))
    files.changed()


class ImageCatalog:
    """``host`` (built in, with the runtimes the backend provides there) and the stored images.

    ``shared`` is where the sandbox user reaches the data dir's image store (see
    backends/view.py); ``with_images`` is False where the backend cannot run images (Lambda).
    """

    def __init__(self, rows: ImageRows, files: ImageFiles, shared: Path,
                 host_runtimes: list[dict], started_at: str, with_images: bool = True) -> None:
        self.rows, self.files = rows, files
        self.reachable = ImageFiles(shared)  # the same store, as the sandbox reaches it
        self.host = {"name": HOST, "digest": HOST, "size_bytes": 0, "created_at": started_at,
                     "source": "the server's own system", "runtimes": host_runtimes}
        self.with_images = with_images
        self._images: dict[str, dict] = {}
        self._generation: tuple | None = None
        self._reloading = asyncio.Lock()  # callers during a reload wait for its result
        self.index = self._index()

    async def refresh(self) -> None:
        """Reload the catalogue if an image was added or removed since the last look (one
        stat when nothing changed)."""
        if not self.with_images or self.files.generation() == self._generation:
            return
        async with self._reloading:
            generation = self.files.generation()  # before the read: a change during it
            if generation == self._generation:  # reloads again
                return
            self._images = {image["name"]: image for image in await self.rows.all()}
            self._generation = generation  # after it: a failed read is tried again
            self.index = self._index()

    def _index(self) -> RuntimeIndex:
        runtimes = [Runtime(r["language"], r["version"], image["name"], image["digest"],
                            image["created_at"])
                    for image in self.images() for r in image["runtimes"]]
        return RuntimeIndex(runtimes, {image["name"] for image in self.images()})

    def images(self) -> list[dict]:
        """GET /images: host first, then by name."""
        return [self.host, *(public(i) for i in sorted(self._images.values(),
                                                       key=lambda i: i["name"]))]

    def rootfs(self, digest: str) -> str | None:
        """The root file system a job on ``digest`` sees, as the sandbox reaches it (None:
        the host's system); raises FileNotFoundError if that digest is gone."""
        if digest == HOST:
            return None
        path = self.reachable.path(digest) / "rootfs"
        if not path.is_dir():
            raise FileNotFoundError(f"image {digest} is no longer stored")
        return str(path)

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one catalogue per process; digests never change
    def env(self, digest: str, language: str) -> dict[str, str]:
        """The environment of a job in that image: the image's, then its recipe's (e.g. Go's
        caches in /tmp)."""
        return {**image_env(self.files.env(digest)), **dict(BY_LANGUAGE[language].env)}
