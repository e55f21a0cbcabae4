"""The runtime recipes (one table: a language's files, commands and version probe) and how a
job's language, version and image are resolved against what the images provide."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

HOST = "host"


@dataclass(frozen=True)
class Recipe:
    """How orq runs one language. In commands, ``{main}`` is the entry file's path."""
    language: str
    aliases: tuple[str, ...]
    source: str  # the file name of a one-file program (``code``)
    extensions: tuple[str, ...]  # how the CLI recognises a file of this language
    run: tuple[str, ...]
    probe: tuple[str, ...]  # prints the version; run inside an image when it is added
    packages: tuple[str, ...] = ()  # the Debian packages that provide it


RECIPES: tuple[Recipe, ...] = (
    Recipe("python", ("python3", "py"), "main.py", (".py",),
           run=("python3", "-u", "{main}"),
           probe=("python3", "-c", "import platform; print(platform.python_version())"),
           packages=("python3",)),
    Recipe("bash", (), "main.sh", (".sh", ".bash"),
           run=("bash", "{main}"),
           probe=("bash", "-c", 'echo "$BASH_VERSION"'),
           packages=("bash",)),
    Recipe("sh", ("posix",), "main.sh", (),
           run=("sh", "{main}"),
           probe=("sh", "-c", "echo posix")),  # no portable version: "posix"
)
BY_LANGUAGE = {r.language: r for r in RECIPES}
ALIASES = {name: r.language for r in RECIPES for name in (r.language, *r.aliases)}
HOST_LANGUAGES = ("python", "bash", "sh")  # exactly what the host image provides (SPEC 9)


def host_recipes(python: str, bash: str) -> tuple[Recipe, ...]:
    """The host image's recipes: python and bash as configured (--python, --bash), and sh."""
    swap = {"python3": python, "bash": bash}
    return tuple(dataclasses.replace(r, probe=(swap.get(r.probe[0], r.probe[0]), *r.probe[1:]))
                 for r in RECIPES if r.language in HOST_LANGUAGES)


def parse_version(probe_output: str) -> str | None:
    """The version a probe printed: its first dotted number ("5.2.15(1)-release" -> "5.2.15"),
    or a lone word such as "posix"; None when it printed nothing usable."""
    text = probe_output.strip()
    match = re.search(r"\d+(?:\.\d+)*", text)
    if match:
        return match.group(0)
    return text if re.fullmatch(r"[a-z][a-z0-9.+-]{0,31}", text) else None


def version_key(version: str) -> tuple:
    """Sorts versions numerically ("3.9" < "3.11")."""
    return tuple(int(p) if p.isdigit() else -1 for p in re.split(r"[.+-]", version))


def version_matches(version: str, prefix: str) -> bool:
    """A prefix matches whole components: "3.11" matches "3.11.2", "3.1" does not."""
    return version == prefix or version.startswith(prefix + ".")


class ResolveError(ValueError):
    """The job asked for a runtime or image this server does not have (a 400)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Runtime:
    """One language at one version in one image (an entry of GET /runtimes)."""
    language: str
    version: str
    image: str
    digest: str
    created_at: str  # the image's

    def as_json(self) -> dict:
        recipe = BY_LANGUAGE[self.language]
        return {"language": self.language, "version": self.version,
                "aliases": list(recipe.aliases), "image": self.image,
                "compiled": False}


class RuntimeIndex:
    """Every runtime of every image, and the rules of SPEC section 9 to pick one."""

    def __init__(self, runtimes: list[Runtime], images: set[str]) -> None:
        self.runtimes, self.images = runtimes, images

    def languages(self) -> list[str]:
        return sorted({r.language for r in self.runtimes})

    def resolve(self, language: str, version: str | None = None,
                image: str | None = None) -> Runtime:
        canonical = ALIASES.get(language.lower())
        provided = [r for r in self.runtimes if r.language == canonical]
        if canonical is None or not provided:
            raise ResolveError("unknown_language", f"unknown language '{language}'; this server "
                               f"runs: {', '.join(self.languages()) or 'nothing'}")
        if image is not None:
            if image not in self.images:
                raise ResolveError("unknown_image", f"there is no image '{image}'; see GET /images")
            provided = [r for r in provided if r.image == image]
            if not provided:
                raise ResolveError("runtime_not_in_image",
                                   f"image '{image}' does not provide {canonical}")
        if version is not None:
            matching = [r for r in provided if version_matches(r.version, version)]
            if not matching:
                have = sorted({r.version for r in provided}, key=version_key)
                raise ResolveError("unknown_version", f"no {canonical} version '{version}'; "
                                   f"available: {', '.join(have)}")
            provided = matching
        return _preferred(provided, host_first=image is None)


def _preferred(candidates: list[Runtime], host_first: bool) -> Runtime:
    """The host's runtime where it qualifies (python, bash and sh run there by default),
    else the newest version, in the newest image."""
    if host_first:
        for runtime in candidates:
            if runtime.image == HOST:
                return runtime
    return max(candidates, key=lambda r: (version_key(r.version), r.created_at))
