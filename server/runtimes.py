"""The runtime recipes (one table: a language's files, commands and version probe) and how a
job's language, version and image are resolved against what the images provide."""
from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass

HOST = "host"


@dataclass(frozen=True)
class Recipe:
    """How orq compiles and runs one language.

    In commands, ``{main}`` is the entry file's path in the sandbox, ``{sources}`` stands for
    every file of the program with one of ``compiles`` extensions (in the order sent),
    ``{main_class}`` for Java's main class, ``{memory_mb}`` for the job's memory limit. The
    program's files are in ``/job`` (read-only); a compile writes to ``/build``, which the run
    then sees read-only.
    """
    language: str
    aliases: tuple[str, ...]
    source: str  # the file name of a one-file program (``code``)
    extensions: tuple[str, ...]  # how the CLI recognises a file of this language
    run: tuple[str, ...]
    probe: tuple[str, ...]  # prints the version; run inside an image when it is added
    compile: tuple[str, ...] = ()  # empty: interpreted
    compiles: tuple[str, ...] = ()  # the extensions {sources} takes
    env: tuple[tuple[str, str], ...] = ()  # added to the image's environment
    packages: tuple[str, ...] = ()  # the Debian packages that provide it

    @property
    def compiled(self) -> bool:
        return bool(self.compile)


# JVM flags for small sandboxes: sized from the job's memory limit (the JVM cannot see the
# cgroup from inside the sandbox), one GC thread, the quick JIT tier only
JVM = ("-XX:MaxRAM={memory_mb}m", "-XX:MaxRAMPercentage=50", "-XX:+UseSerialGC",
       "-XX:TieredStopAtLevel=1", "-Xshare:auto")

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
    Recipe("c", ("gcc",), "main.c", (".c", ".h"),
           compile=("gcc", "-O2", "-std=gnu17", "-pipe", "-o", "/build/main", "{sources}",
                    "-lm"),
           compiles=(".c",), run=("/build/main",),
           probe=("gcc", "-dumpfullversion"), packages=("gcc", "libc6-dev")),
    Recipe("cpp", ("c++", "g++", "cxx"), "main.cpp", (".cpp", ".cc", ".cxx", ".hpp", ".hh"),
           compile=("g++", "-O2", "-std=gnu++17", "-pipe", "-o", "/build/main", "{sources}"),
           compiles=(".cpp", ".cc", ".cxx"), run=("/build/main",),
           probe=("g++", "-dumpfullversion"), packages=("g++",)),
    Recipe("java", ("jdk",), "Main.java", (".java",),
           compile=("javac", *(f"-J{flag}" for flag in JVM), "-encoding", "UTF-8",
                    "-d", "/build", "{sources}"),
           compiles=(".java",), run=("java", *JVM, "-cp", "/build", "{main_class}"),
           probe=("javac", "-version"), packages=("openjdk-17-jdk-headless",)),
    Recipe("javascript", ("js", "node", "nodejs"), "main.js", (".js", ".mjs", ".cjs"),
           run=("node", "{main}"),
           probe=("node", "--version"), packages=("nodejs",)),
    Recipe("go", ("golang",), "main.go", (".go",),
           compile=("go", "build", "-o", "/build/main", "{sources}"),
           compiles=(".go",), run=("/build/main",),
           # no module needed for a program of plain files; caches in the private /tmp
           env=(("GOCACHE", "/tmp/go-cache"), ("GOPATH", "/tmp/go"), ("GOTMPDIR", "/tmp"),
                ("GO111MODULE", "off"), ("CGO_ENABLED", "0")),
           probe=("go", "version"), packages=("golang-go",)),
    Recipe("rust", ("rs",), "main.rs", (".rs",),
           compile=("rustc", "--edition", "2021", "-O", "-o", "/build/main", "{main}"),
           run=("/build/main",),  # other files are modules the entry file declares
           probe=("rustc", "--version"), packages=("rustc",)),
    Recipe("ruby", ("rb",), "main.rb", (".rb",),
           run=("ruby", "{main}"),
           probe=("ruby", "-e", "print RUBY_VERSION"), packages=("ruby",)),
    Recipe("perl", ("pl",), "main.pl", (".pl",),
           run=("perl", "{main}"),
           probe=("perl", "-e", "print $^V"), packages=("perl-base",)),
)
BY_LANGUAGE = {r.language: r for r in RECIPES}
# what an image's recorded runtimes depend on: when it changes, images are probed again
PROBES_KEY = hashlib.sha256(repr([(r.language, r.probe) for r in RECIPES]).encode()
                            ).hexdigest()[:16]
ALIASES = {name: r.language for r in RECIPES for name in (r.language, *r.aliases)}
HOST_LANGUAGES = ("python", "bash", "sh")  # exactly what the host image provides (SPEC 9)


def program(recipe: Recipe, code: str | None,
            files: list[tuple[str, str]] | tuple = ()) -> list[tuple[str, str]]:
    """The job's files, entry point first: ``files`` as sent, or ``code`` under the recipe's
    file name (for Java, under its public class's name, as javac requires)."""
    if files:
        return list(files)
    name = recipe.source
    if recipe.language == "java":
        public = re.search(r"\bpublic\s+(?:final\s+|abstract\s+)*class\s+(\w+)", code or "")
        if public:
            name = public.group(1) + ".java"
    return [(name, code or "")]


def java_main_class(entry_name: str, entry_code: str) -> str:
    """The entry file's class with a main method (its public class, else the first class
    declaring ``main``, else the file's name), qualified by its package."""
    package = re.search(r"^\s*package\s+([\w.]+)\s*;", entry_code, re.MULTILINE)
    classes = [(m.group(1), m.start()) for m in
               re.finditer(r"\bclass\s+(\w+)", entry_code)]
    name = entry_name.rsplit("/", 1)[-1].removesuffix(".java")
    for i, (cls, start) in enumerate(classes):
        end = classes[i + 1][1] if i + 1 < len(classes) else len(entry_code)
        if re.search(r"\bstatic\s+void\s+main\s*\(", entry_code[start:end]):
            name = cls
            break
    return f"{package.group(1)}.{name}" if package else name


def command(template: tuple[str, ...], files: list[tuple[str, str]], recipe: Recipe,
            memory_mb: int) -> list[str]:
    """A recipe's command for this program (see Recipe for the placeholders)."""
    entry, code = files[0]
    values = {"main": f"/job/{entry}", "memory_mb": memory_mb}
    if "{main_class}" in template:
        values["main_class"] = java_main_class(entry, code)
    argv: list[str] = []
    for arg in template:
        if arg == "{sources}":
            argv += [f"/job/{name}" for name, _ in files if name.endswith(recipe.compiles)]
        else:
            argv.append(arg.format(**values))
    return argv


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
                "compiled": recipe.compiled}


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
