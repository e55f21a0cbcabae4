"""``orq-server image build|import|pull|list|rm``: the operator's commands for the image store."""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from .. import timeutil
from ..backends.probe import probe
from ..backends.sandbox import Sandbox, SandboxUnavailable, find_bwrap, image_env
from ..backends.view import shared_dir
from ..runtimes import PROBES_KEY
from ..store import Database, ImageRows
from .build import build_rootfs, check_packages
from .catalog import public
from .oci import pull_source, source_of, unpack
from .store import ImageError, ImageFiles, check_name, normalize, tree_digest

# makes a root file system in a work dir: (rootfs, environment, source description)
Maker = Callable[[Path], tuple[Path, dict[str, str], str]]


def add_parsers(image: argparse.ArgumentParser, add_config: Callable) -> None:
    """The image subcommands; ``add_config`` adds the server's settings (--data-dir...)."""
    sub = image.add_subparsers(dest="image_command", required=True, metavar="COMMAND")
    build = sub.add_parser("build", help="a Debian root file system with these packages")
    build.add_argument("name")
    build.add_argument("--packages", required=True, action="append",
                       help="comma-separated Debian packages (repeatable)")
    build.add_argument("--suite", default="bookworm", help="Debian suite (default bookworm)")
    build.add_argument("--mirror", help="Debian mirror URL (default: this machine's apt sources)")
    imp = sub.add_parser("import", help="an OCI layout (dir or tar) or a docker save archive")
    imp.add_argument("name")
    imp.add_argument("path", type=Path)
    pull = sub.add_parser("pull", help="from a container registry, e.g. docker://python:3.12-slim")
    pull.add_argument("name")
    pull.add_argument("ref")
    listing = sub.add_parser("list", help="the stored images")
    listing.add_argument("-o", "--output", choices=("table", "json"), default="table")
    rm = sub.add_parser("rm", help="remove an image (refused while unfinished jobs use it)")
    rm.add_argument("name")
    for parser in (build, imp, pull, listing, rm):
        add_config(parser)


async def run(args: argparse.Namespace, config) -> int:
    files = ImageFiles(config.data_dir)
    db = Database(config.db_path)
    await db.open()
    try:
        rows = ImageRows(db)
        command = args.image_command
        if command == "list":
            return _list(await rows.all(), args.output)
        if command == "rm":
            return await _remove(rows, files, check_name(args.name))
        return await add_image(rows, files, config, check_name(args.name), _maker(args))
    finally:
        await db.close()


def _maker(args: argparse.Namespace) -> Maker:
    if args.image_command == "build":
        packages = check_packages([p.strip() for arg in args.packages for p in arg.split(",")
                                   if p.strip()])

        def build(work: Path):
            target = work / "rootfs"
            return target, {}, build_rootfs(target, packages, args.suite, args.mirror)
        return build
    if args.image_command == "import":
        path = args.path.resolve()
        source, kind = source_of(path)

        def imported(work: Path):
            rootfs, env = unpack(source, work, f"cannot import {path}")
            return rootfs, env, f"import: {path} ({kind})"
        return imported
    source = pull_source(args.ref)

    def pulled(work: Path):
        rootfs, env = unpack(source, work, f"cannot pull {source}")
        return rootfs, env, f"pull: {source}"
    return pulled


async def add_image(rows: ImageRows, files: ImageFiles, config, name: str, make: Maker) -> int:
    with files.workspace() as work:
        say(f"image {name}: making the root file system")
        rootfs, env, source = make(work)
        normalize(rootfs)
        for parent in rootfs.relative_to(work).parents:  # umoci's bundle dir is private
            os.chmod(work / parent, 0o755)
        say(f"image {name}: probing its runtimes")
        try:
            sandbox = Sandbox(find_bwrap(), (), config.tmp_size_mb)
        except SandboxUnavailable as exc:
            raise ImageError(str(exc)) from exc
        reachable = shared_dir(config.data_dir) / rootfs.relative_to(files.root.parent)
        runtimes = probe(sandbox, str(reachable), image_env(env))
        say(f"image {name}: hashing and storing it")
        digest, size = tree_digest(rootfs, env)  # unlocked: a starting server need not wait
        with files.locked():
            files.commit(work, rootfs, env, digest)
            await rows.put({"name": name, "digest": digest, "size_bytes": size,
                            "created_at": timeutil.now(), "source": source,
                            "runtimes": runtimes, "probed": PROBES_KEY})
            files.collect(await rows.digests_in_use())
            files.changed()
    found = ", ".join(f"{r['language']} {r['version']}" for r in runtimes) or "none"
    print(f"{name} {digest} {size / 1e6:.0f} MB; runtimes: {found}")
    return 0


async def _remove(rows: ImageRows, files: ImageFiles, name: str) -> int:
    with files.locked():
        image = await rows.get(name)
        if image is None:
            raise ImageError(f"there is no image '{name}'")
        busy = await rows.unfinished_jobs(name, image["digest"])
        if busy:
            shown = ", ".join(map(str, busy[:10])) + (", ..." if len(busy) > 10 else "")
            raise ImageError(f"image '{name}' is used by {len(busy)} unfinished job(s) "
                             f"({shown}); cancel them or let them finish first")
        await rows.delete(name)
        files.collect(await rows.digests_in_use())
        files.changed()
    print(f"removed {name}")
    return 0


def _list(images: list[dict], output: str) -> int:
    images = [public(i) for i in images]
    if output == "json":
        print(json.dumps(images, indent=2))
        return 0
    table = [("NAME", "DIGEST", "SIZE", "CREATED", "RUNTIMES", "SOURCE")]
    for i in images:
        table.append((i["name"], i["digest"][:19], f"{i['size_bytes'] / 1e6:.0f}MB",
                      i["created_at"][:19].replace("T", " "),
                      ",".join(f"{r['language']}-{r['version']}" for r in i["runtimes"]),
                      i["source"]))
    widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)
