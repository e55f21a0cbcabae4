"""The document at /openapi.json: server/openapi.json filled in from the running server's Config."""
from __future__ import annotations

import functools
import json

from . import package_files
from .backends.base import Envelope
from .config import Config
from .runtimes import BY_LANGUAGE, Runtime

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# (JobRequest field, what it counts, the smallest value server/jobs.py resolve_limits takes,
# the Config fields of its default and of its maximum, the flag that sets that maximum)
LIMITS = (("timeout", "seconds", 0.1, "timeout_s", "max_timeout_s", "--max-timeout-s"),
          ("memory_mb", "MiB", 16, "memory_mb", "max_memory_mb", "--max-memory-mb"),
          ("cpus", "a share of CPUs", 0.05, "cpus", "max_cpus", "--max-cpus"))


def template() -> dict:
    """The document as shipped in the package: that of a server with the default settings."""
    return json.loads(package_files.read("server", "openapi.json"))


Pins = tuple[tuple[str, Envelope | None], ...]  # the backends a job may name, and their reach


def document(config: Config, runtimes: tuple[Runtime, ...] = (), pins: Pins = ()) -> dict:
    """The exact contract of a server running with ``config``, these runtimes, and these
    backends."""
    doc = template()
    if runtimes:
        _runtime_choice(doc, runtimes)
    if pins:
        _backend_choice(doc, config, runtimes, pins)
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


def _runtime_choice(doc: dict, runtimes: tuple[Runtime, ...]) -> None:
    """language, version and image as this server resolves them (SPEC section 9): each lists
    the values that exist now, and a ``not`` lists the combinations that do not resolve (a
    version of another language, an image without the language), which are 400s the
    document must not declare valid. (A ``not`` keeps JobRequest one plain object for client
    generators, where an ``anyOf`` of the valid combinations would make it a union.)"""
    props = doc["components"]["schemas"]["JobRequest"]["properties"]
    provided: dict[str, list[Runtime]] = {}
    for runtime in runtimes:
        provided.setdefault(runtime.language, []).append(runtime)
    images = sorted({r.image for r in runtimes})
    versions = sorted({p for r in runtimes for p in _prefixes(r.version)})
    props["language"]["enum"] = sorted(n for lang in provided for n in _names(lang)) + [None]
    props["image"]["enum"] = [*images, None]
    props["version"]["enum"] = [*versions, None]
    refused = []
    for language, have in sorted(provided.items()):
        lacking = [i for i in images if i not in {r.image for r in have}]
        refused.append(_combination(language, versions, have, image=None))
        if lacking:
            refused.append(_combination(language, None, [], image=lacking))
        for image in sorted({r.image for r in have}):
            refused.append(_combination(language, versions,
                                        [r for r in have if r.image == image], image=[image]))
    # the shipped document's "not" already refuses code and files together, or neither
    doc["components"]["schemas"]["JobRequest"]["not"]["anyOf"] += [
        c for c in refused if c is not None]


def _combination(language: str, versions: list[str] | None, have: list[Runtime],
                 image: list[str] | None) -> dict | None:
    """The requests for ``language`` (with ``image``: in one of those images; without: no
    image) whose version, if ``versions`` is given, none of ``have`` provides; None if none."""
    required, props = _asking_for(language)
    props["image"] = _choice(image or [None])
    if image:
        required.append("image")
    if versions is not None:
        bad = _unmatched(versions, [r.version for r in have])
        if not bad:
            return None
        props["version"] = _choice(bad)
        required.append("version")
    return {"required": required, "properties": props}


def _asking_for(language: str) -> tuple[list[str], dict]:
    """(required, properties) of the requests for ``language``: its name or an alias, or
    none at all for python (the default)."""
    if language == "python":
        return [], {"language": _choice([*_names(language), None])}
    return ["language"], {"language": _choice(_names(language))}


def _unmatched(versions: list[str], have: list[str]) -> list[str]:
    """The version prefixes that select none of ``have``."""
    good = {p for version in have for p in _prefixes(version)}
    return [v for v in versions if v not in good]


def _choice(values: list) -> dict:
    return {"type": "string", "nullable": True, "enum": values}


def _names(language: str) -> list[str]:
    return [language, *BY_LANGUAGE[language].aliases]


def _prefixes(version: str) -> list[str]:
    """The version prefixes that select ``version``: "3", "3.11", "3.11.2"."""
    parts = version.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _backend_choice(doc: dict, config: Config, runtimes: tuple[Runtime, ...],
                    pins: Pins) -> None:
    """``backend`` lists the backends this server runs, and the ``not`` the jobs one of them
    refuses when pinned to it (the Lambda function: another image, several files, a language
    or version it lacks, a timeout or memory beyond its configuration)."""
    request = doc["components"]["schemas"]["JobRequest"]
    request["properties"]["backend"]["enum"] = [name for name, _ in pins] + [None]
    refused = request["not"]["anyOf"]
    versions = sorted({p for r in runtimes for p in _prefixes(r.version)})
    for name, reach in pins:
        if reach is not None:
            refused += _refused_when_pinned({"backend": _choice([name])}, config, runtimes,
                                            versions, reach)


def _refused_when_pinned(pin: dict, config: Config, runtimes: tuple[Runtime, ...],
                         versions: list[str], reach: Envelope) -> list[dict]:
    has = dict(reach.languages)
    other_images = sorted({r.image for r in runtimes} - {"host"})
    lacking = sorted({r.language for r in runtimes} - set(has))
    out = [{"required": ["backend", "files"], "properties": {**pin, "files": {"type": "array"}}}]
    if other_images:
        out.append({"required": ["backend", "image"],
                    "properties": {**pin, "image": _choice(other_images)}})
    for language in lacking:
        required, props = _asking_for(language)
        out.append({"required": ["backend", *required], "properties": {**pin, **props}})
    for language, have in has.items():
        bad = _unmatched(versions, list(have))
        if bad and language in BY_LANGUAGE:
            required, props = _asking_for(language)
            out.append({"required": ["backend", "version", *required],
                        "properties": {**pin, **props, "version": _choice(bad)}})
    for field, most, default in (("timeout", reach.max_timeout_s, config.timeout_s),
                                 ("memory_mb", reach.max_memory_mb, config.memory_mb)):
        if most is None:
            continue
        kind = "integer" if field == "memory_mb" else "number"
        out.append({"required": ["backend", field], "properties": {
            **pin, field: {"type": kind, "minimum": most, "exclusiveMinimum": True}}})
        if default > most:  # left out or null: the default, which is too big for it
            out.append({"required": ["backend"], "properties": {
                **pin, field: {"type": kind, "nullable": True, "enum": [None]}}})
    return out


@functools.lru_cache(maxsize=8)
def served(config: Config, runtimes: tuple[Runtime, ...] = (), pins: Pins = ()) -> bytes:
    return json.dumps(document(config, runtimes, pins), indent=1).encode()
