"""Running the image tools (mmdebstrap, skopeo, umoci): progress on stderr, one-line errors."""
from __future__ import annotations

import collections
import shutil
import subprocess
import sys

from .store import ImageError

PACKAGES = {"mmdebstrap": "mmdebstrap", "skopeo": "skopeo", "umoci": "umoci"}


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ImageError(f"{tool} is not installed (Debian/Ubuntu: apt-get install "
                         f"{PACKAGES.get(tool, tool)}, or run scripts/deploy.sh local)")
    return path


def run_tool(argv: list[str], what: str, progress: bool = True) -> None:
    """Run a tool to completion, passing its output on as progress (indented) when asked;
    raise ImageError with the line that best says why when it fails."""
    tail: collections.deque[str] = collections.deque(maxlen=40)
    try:
        proc = subprocess.Popen([need(argv[0]), *argv[1:]], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as exc:
        raise ImageError(f"{what}: cannot run {argv[0]}: {exc.strerror}") from exc
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip()
        if line:
            tail.append(line)
            if progress:
                print("    " + line, file=sys.stderr, flush=True)
    if proc.wait() != 0:
        raise ImageError(f"{what}: {reason(list(tail)) or f'{argv[0]} exited {proc.returncode}'}")


def reason(lines: list[str]) -> str:
    """The most telling line of a failed tool's output: apt's first "E:" error, else the last
    line that mentions an error, else the last line."""
    for line in lines:
        if line.startswith("E: ") and "mmdebstrap failed" not in line and "setup failed" not in line:
            return line[3:].strip()
    for line in reversed(lines):
        if "error" in line.lower() or "fatal" in line.lower():
            return line.split("level=fatal msg=")[-1].strip().strip('"').replace('\\"', '"')
    return lines[-1] if lines else ""
