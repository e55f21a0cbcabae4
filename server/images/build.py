"""Root file systems from Debian packages, made by mmdebstrap from the machine's Debian mirror."""
from __future__ import annotations

import re
from pathlib import Path

from .store import ImageError
from .tools import run_tool

PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+(?:=[A-Za-z0-9.+~:-]+)?")
SUITE = re.compile(r"[a-z][a-z0-9-]{1,40}")
SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# smaller images: no docs, man pages or translations (openjdk's postinst still needs the
# man1 directory to exist, hence the hook)
SLIM = ("--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-include=/usr/share/locale/locale.alias",
        "--essential-hook=mkdir -p \"$1/usr/share/man/man1\"")


def check_packages(packages: list[str]) -> list[str]:
    if not packages:
        raise ImageError("--packages needs at least one package")
    for pkg in packages:
        if not PACKAGE.fullmatch(pkg):
            raise ImageError(f"bad package name '{pkg}'")
    return packages


def host_sources(suite: str, sources: tuple[Path, ...] = SOURCES) -> list[str]:
    """The machine's own Debian sources for ``suite`` (and its -updates/-security), as
    one-line entries; the mirror of its main archive for another suite."""
    entries = list(_read_sources(sources))
    same = [f"deb {uri} {s} {' '.join(comps)}" for uri, s, comps in entries
            if s == suite or s.startswith(suite + "-")]
    if same:
        return same
    main = [uri for uri, s, _ in entries if "-" not in s]
    return [f"deb {main[0] if main else DEFAULT_MIRROR} {suite} main"]


def _read_sources(paths: tuple[Path, ...]):
    """(uri, suite, components) of every Debian "deb" source, one-line or deb822 format."""
    files = []
    for path in paths:
        files += sorted(path.glob("*.list")) + sorted(path.glob("*.sources")) \
            if path.is_dir() else [path]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        parse = _deb822 if path.suffix == ".sources" else _one_line
        for uri, suite, comps in parse(text):
            if "debian" in uri:
                yield uri.rstrip("/"), suite, comps or ["main"]


def _one_line(text: str):
    for line in text.splitlines():
        parts = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
        if len(parts) >= 3 and parts[0] == "deb":
            yield parts[1], parts[2], parts[3:]


def _deb822(text: str):
    for stanza in re.split(r"\n\s*\n", text):
        fields = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith((" ", "#")):
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.split()
        if "deb" in fields.get("types", []) and fields.get("enabled", ["yes"]) != ["no"]:
            for uri in fields.get("uris", []):
                for suite in fields.get("suites", []):
                    yield uri, suite, fields.get("components", [])


def build_rootfs(target: Path, packages: list[str], suite: str, mirror: str | None,
                 progress: bool = True) -> str:
    """Make a Debian root file system at ``target``; returns the source description."""
    if not SUITE.fullmatch(suite):
        raise ImageError(f"bad suite name '{suite}'")
    mirrors = [f"deb {mirror} {suite} main"] if mirror else host_sources(suite)
    argv = ["mmdebstrap", "--variant=essential", "--include=" + ",".join(packages),
            "--aptopt=Acquire::Retries \"3\"", *SLIM, suite, str(target), *mirrors]
    run_tool(argv, "mmdebstrap failed", progress)
    return f"build: {suite} {','.join(packages)}"
