"""The backend interface: something that runs one job and reports how it ended."""
from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class JobSpec:
    job_id: int
    uid: int
    language: str
    code: str
    input: str
    timeout_s: float
    memory_mb: int
    cpus: float
    io_weight: int
    output_cap: int
    # SPEC section 9: the runtime version resolved at submit, the image (and the digest the
    # job runs on), and a multi-file program ((name, content) pairs, entry point first;
    # empty when ``code`` is the whole program)
    version: str | None = None
    image: str = "host"
    image_digest: str = "host"
    files: tuple[tuple[str, str], ...] = ()
    # where the sandbox finds the image's root file system (None: the host's system) and the
    # environment a job sees there: the image's and its recipe's (empty: the host's default)
    root: str | None = None
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Needs:
    """What a job asks of the place it runs in: the job service asks each backend whether it
    can run such a job (``Backend.refuses``) when it decides where a job goes."""
    language: str
    timeout_s: float
    memory_mb: int
    image: str = "host"
    multi_file: bool = False  # a ``files`` program rather than one ``code`` file
    version: str | None = None  # the version (prefix) the job asked for, if any


@dataclass(frozen=True)
class Envelope:
    """What a backend can run, where that is narrower than what the server offers (for the
    OpenAPI document, which must not declare a job it would refuse): its languages with
    their versions, and the largest timeout and memory it takes (None: no limit of its own)."""
    languages: tuple[tuple[str, tuple[str, ...]], ...]
    max_timeout_s: float | None = None
    max_memory_mb: int | None = None


@dataclass
class RunHooks:
    """What a backend calls while it runs a job.

    ``started`` must be awaited once the job really runs (the job becomes RUNNING); when
    it returns False the job was cancelled meanwhile and the backend should stop it.
    ``output`` may be called with live chunks of stdout/stderr.
    """
    started: Callable[[], Awaitable[bool]]
    output: Callable[[str, str], None]


class Retry(Exception):
    """The infrastructure is not ready (throttled, function updating): try again later.

    Raised only before ``hooks.started`` was called; the job stays WAITING. ``delay_s`` is
    the backend's first wait for this kind of refusal; the job service backs off from it.
    """

    def __init__(self, reason: str, delay_s: float) -> None:
        super().__init__(reason)
        self.delay_s = delay_s


class BackendError(Exception):
    """The backend failed to run the job; it ends ERROR with ``error: "backend: <message>"``."""


class BackendUnavailable(Exception):
    """The backend cannot start at all (e.g. no working sandbox); the message says how to fix it."""


class Backend(abc.ABC):
    name: str = "?"
    # what the host image provides on this backend ([{"language", "version"}], set by start)
    runtimes: list[dict] = []  # noqa: RUF012 - replaced, never mutated
    # the job service's: to be called when what ``refuses`` answers may have changed
    on_change: Callable[[], None] | None = None

    @property
    @abc.abstractmethod
    def capacity(self) -> int:
        """How many jobs may run at once."""

    async def start(self) -> None:
        """Check the backend works; raise BackendUnavailable with a fix otherwise."""

    async def stop(self) -> None:
        """Stop everything still running (server shutdown)."""

    @abc.abstractmethod
    async def run(self, spec: JobSpec, hooks: RunHooks) -> dict:
        """Run one job; return the runner's result dict (stdout, stderr, exit_code, error,
        duration_ms, truncated, usage). Raise Retry or BackendError as documented above."""

    @abc.abstractmethod
    async def cancel(self, job_id: int) -> None:
        """Stop a running job now (its run() then returns whatever it has)."""

    def refuses(self, needs: Needs) -> str | None:
        """Why this backend cannot run such a job (a sentence), or None when it can."""
        return None

    def envelope(self) -> Envelope | None:
        """The jobs ``refuses`` lets through, as data; None: whatever the server offers."""
        return None

    def info(self) -> dict:
        """A few facts for /healthz."""
        return {"backend": self.name, "capacity": self.capacity}
