"""The document at /openapi.json: server/openapi.json filled in from the running server's Config."""
from __future__ import annotations

import functools
import json

from . import package_files
from .config import Config

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# (JobRequest field, what it counts, the smallest value server/jobs.py resolve_limits takes,
# the Config fields of its default and of its maximum, the flag that sets that maximum)
LIMITS = (("timeout", "seconds", 0.1, "timeout_s", "max_timeout_s", "--max-timeout-s"),
          ("memory_mb", "MiB", 16, "memory_mb", "max_memory_mb", "--max-memory-mb"),
          ("cpus", "a share of CPUs", 0.05, "cpus", "max_cpus", "--max-cpus"))


def template() -> dict:
    """The document as shipped in the package: that of a server with the default settings."""
    return json.loads(package_files.read("server", "openapi.json"))


def document(config: Config) -> dict:
    """The exact contract of a server running with ``config``."""
    doc = template()
    props = doc["components"]["schemas"]["JobRequest"]["properties"]
    for name, unit, floor, default, top, flag in LIMITS:
        most, usual = getattr(config, top), getattr(config, default)
        props[name].update(minimum=floor, maximum=most, default=usual,
                           description=f"{unit}; at most {most:g} on this server ({flag})")
        if not floor <= usual <= most:  # generated clients send defaults: only a valid one
            del props[name]["default"]
    props["io_weight"]["default"] = config.io_weight
    if config.auth == "open":
        doc["security"].append({})
        _optional_credentials(doc, doc["paths"])
    elif config.metrics_public:
        _optional_credentials(doc, ["/metrics"])
    return doc


def _optional_credentials(doc: dict, paths) -> None:
    """Anonymous requests work there too (credentials that are sent are still checked)."""
    for path in paths:
        for method, op in doc["paths"][path].items():
            security = op.setdefault("security", list(doc["security"])) \
                if method in METHODS else [{}]
            if {} not in security:
                security.append({})


@functools.cache
def served(config: Config) -> bytes:
    return json.dumps(document(config), indent=1).encode()
