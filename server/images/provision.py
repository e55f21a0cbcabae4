"""The images that runtimes need, built once: ``scripts/deploy.sh local --runtimes c,java``.

    python -m server.images.provision --runtimes c,cpp,java --data-dir DATA

Each language gets an image of its own name built from its recipe's Debian packages (``c``
from gcc and libc6-dev, ...). An image that exists and was built from the same packages is
kept, so a second run builds nothing; python, bash and sh need none (the host has them).
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from .. import config as config_mod
from ..backends import view
from ..runtimes import ALIASES, BY_LANGUAGE, HOST_LANGUAGES
from ..store import Database, ImageRows, StoreError
from . import cli
from .build import build_rootfs
from .store import ImageError, ImageFiles

SUITE = "bookworm"


def languages(spec: str) -> list[str]:
    """Canonical languages of a comma list (aliases allowed); ImageError for unknown ones."""
    wanted = []
    for word in (w.strip().lower() for w in spec.split(",")):
        if not word:
            continue
        if word not in ALIASES:
            raise ImageError(f"unknown runtime '{word}'; known: {', '.join(sorted(BY_LANGUAGE))}")
        if ALIASES[word] not in wanted:
            wanted.append(ALIASES[word])
    return wanted


async def provision(config, wanted: list[str]) -> int:
    db = Database(config.db_path)
    await db.open()
    try:
        rows, files = ImageRows(db), ImageFiles(config.data_dir)
        for language in wanted:
            recipe = BY_LANGUAGE[language]
            if language in HOST_LANGUAGES and not recipe.packages:
                continue
            packages = list(recipe.packages)
            image = await rows.get(language)
            if image and image["source"] == f"build: {SUITE} {','.join(packages)}":
                cli.say(f"image {language}: already built from {', '.join(packages)}")
                continue

            def build(work: Path, packages=packages):
                target = work / "rootfs"
                return target, {}, build_rootfs(target, packages, SUITE, None)
            await cli.add_image(rows, files, config, language, build)
    finally:
        await db.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.images.provision",
                                     description="Build the images these runtimes need.")
    parser.add_argument("--runtimes", required=True, help="comma list, e.g. c,cpp,java")
    config_mod.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config = config_mod.from_sources(args)
        wanted = languages(args.runtimes)
        view.expose(config.data_dir, "data")
        return asyncio.run(provision(config, wanted))
    except (ImageError, config_mod.ConfigError, StoreError, OSError) as exc:
        print(f"orq: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
