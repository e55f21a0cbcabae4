"""Container images in: skopeo brings any of them into an OCI layout (verifying every blob),
umoci unpacks its layers into a root file system (whiteouts, hard links, owners)."""
from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

from .store import ImageError
from .tools import run_tool

REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,255}")
TAG = "orq"


def source_of(path: Path) -> tuple[str, str]:
    """(skopeo transport reference, format name) of an OCI layout directory, its tar, or a
    ``docker save`` archive."""
    if path.is_dir():
        if not (path / "oci-layout").is_file():
            raise ImageError(f"{path} is a directory but not an OCI image layout "
                             "(it has no oci-layout file)")
        return f"oci:{path}", "OCI layout"
    if not path.exists():
        raise ImageError(f"{path}: no such file or directory")
    try:
        with tarfile.open(path, "r:*") as tar:
            names = {name.lstrip("./") for name in tar.getnames()}
    except (tarfile.TarError, EOFError, OSError) as exc:
        why = str(exc).splitlines()[0].rstrip(":") or type(exc).__name__
        raise ImageError(f"{path} is not a readable tar archive ({why})") from None
    if "oci-layout" in names:
        return f"oci-archive:{path}", "OCI archive"
    if "manifest.json" in names:
        return f"docker-archive:{path}", "docker save archive"
    raise ImageError(f"{path} is a tar archive but not an OCI image or a docker save archive "
                     "(it has neither oci-layout nor manifest.json)")


def pull_source(ref: str) -> str:
    """A registry reference for skopeo: ``python:3.12-slim`` means ``docker://python:3.12-slim``."""
    bare = ref.removeprefix("docker://")
    if "://" in bare or not REF.fullmatch(bare):
        raise ImageError(f"bad image reference '{ref}' (e.g. docker://python:3.12-slim)")
    return "docker://" + bare


def unpack(source: str, work: Path, what: str, progress: bool = True,
           timeout: str = "15m") -> tuple[Path, dict[str, str]]:
    """Copy ``source`` into an OCI layout in ``work`` and unpack it; returns the root file
    system and the image's environment."""
    layout, bundle = work / "layout", work / "bundle"
    run_tool(["skopeo", "--command-timeout", timeout, "copy", "--retry-times", "2", source,
              f"oci:{layout}:{TAG}"], what, progress)
    run_tool(["umoci", "unpack", "--image", f"{layout}:{TAG}", str(bundle)], what, progress)
    return bundle / "rootfs", _env(bundle / "config.json")


def _env(config: Path) -> dict[str, str]:
    """The image's Env (as the OCI runtime config umoci wrote carries it)."""
    try:
        pairs = json.loads(config.read_text())["process"]["env"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if sep and key and key not in ("HOME", "TMPDIR", "HOSTNAME"):
            env[key] = value
    return env
