"""Files shipped inside the orq package, found through importlib.resources (wheel or checkout)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

DASHBOARD = "server.static"  # static/ in a checkout (setup.py maps it)
RUNNER = "server.runner"


def directory(package: str) -> Path:
    """A package's folder on disk: tornado serves the dashboard from a real directory."""
    root = resources.files(package)
    if not isinstance(root, Path):  # a zip import: pip always installs a wheel unpacked
        raise OSError(f"{package} is not on the file system ({root}); install orq with pip")
    return root


def read(package: str, name: str) -> bytes:
    """The bytes of one file that ships in ``package`` (e.g. a runner source for a zip)."""
    return resources.files(package).joinpath(name).read_bytes()
