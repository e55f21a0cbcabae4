"""The shell's pieces: live state + toolbar, completion of commands, job ids, languages, images
and versions, key bindings."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.key_binding import KeyBindings

from server.runtimes import version_key, version_matches

from .client import EventStream, OrqError
from .commands import guess_language
from .registry import COMMANDS, Command, Context

TAKES_JOB_ID = ("get job", "logs", "cancel", "wait")
HELP_WORD, EXIT_WORDS = "help", ("exit", "quit")  # the shell's own words (completion: not "quit")
MAX_IDS = 200
LANGUAGE_FLAGS = ("--language", "-l")


class ShellState:
    """What the toolbar and the completer show: server, user, counts, connection, job ids."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.counts = {"waiting": "?", "running": "?"}
        self.connection = "connecting"
        self.user = "anonymous"
        self.job_ids: list[int] = []  # newest first
        self.runtimes: list[dict] = []  # GET /runtimes, for completion
        self.images: list[str] = []  # GET /images' names
        self.catalogue_at: float | None = None  # time.monotonic() it was last asked for
        self.catalogue_ttl = 60.0  # seconds before it is asked again

    def refresh_user(self) -> None:
        uid = self.ctx.profile.get("uid")
        signed_in = bool(self.ctx.profile.get("token"))
        self.user = f"uid {uid}" if uid is not None and signed_in else "anonymous"

    def stream(self) -> EventStream:
        return EventStream(self.ctx.server, self.ctx.profile.get("token"))

    def job_seen(self, job: dict) -> None:
        job_id = job.get("job_id")
        if isinstance(job_id, int) and job_id not in self.job_ids:
            self.job_ids = sorted([job_id, *self.job_ids], reverse=True)[:MAX_IDS]

    async def refresh_counts(self) -> None:
        try:
            health = await asyncio.to_thread(self.ctx.client().health)
            self.counts = {k: health.get(k, "?") for k in ("waiting", "running")}
        except OrqError:
            self.counts = {"waiting": "?", "running": "?"}

    async def refresh_job_ids(self) -> None:
        try:
            jobs = await asyncio.to_thread(self.ctx.client().jobs, None, None, MAX_IDS)
        except OrqError:
            return
        for job in jobs:
            self.job_seen(job)

    def catalogue_stale(self) -> bool:
        return self.catalogue_at is None or time.monotonic() - self.catalogue_at > self.catalogue_ttl

    async def refresh_catalogue(self) -> None:
        """What the server runs (its images, runtimes): completion reads it from here."""
        client = self.ctx.client()
        self.catalogue_at = time.monotonic()  # asked: a failure too waits for the next turn
        try:
            runtimes, images = await asyncio.gather(asyncio.to_thread(client.runtimes),
                                                    asyncio.to_thread(client.images))
        except OrqError:
            return
        self.runtimes = [r for r in runtimes if isinstance(r, dict) and "language" in r]
        self.images = [i["name"] for i in images if isinstance(i, dict) and "name" in i]

    def language_of(self, name: str) -> str | None:
        """The runtime a language name or alias means (case as the server ignores it)."""
        for runtime in self.runtimes:
            if name.lower() in (runtime["language"], *runtime.get("aliases", ())):
                return runtime["language"]
        return None

    def toolbar(self) -> str:
        return (f" {self.ctx.server} | {self.user} | waiting {self.counts['waiting']}"
                f" running {self.counts['running']} | {self.connection}")


class ShellCompleter(Completer):
    """Command names, `get` targets, options of the command, and known job ids."""

    def __init__(self, state: ShellState) -> None:
        self.state = state

    def get_completions(self, document: Document, event: CompleteEvent
                        ) -> Iterable[Completion]:
        text = document.text_before_cursor
        words = text.split()
        current = "" if text.endswith(" ") or not words else words[-1]
        done = words if text.endswith(" ") else words[:-1]
        for choice in self.choices(done, current):
            if choice.startswith(current):
                yield Completion(choice, start_position=-len(current))

    def choices(self, done: list[str], current: str) -> list[str]:
        heads = sorted({name.split()[0] for name in COMMANDS} | {HELP_WORD, EXIT_WORDS[0]})
        if not done:
            return heads
        if done == ["get"]:
            return [name.split()[1] for name in COMMANDS if name.startswith("get ")]
        name = " ".join(done[:2]) if done[0] == "get" else done[0]
        cmd = COMMANDS.get(name)
        if cmd is None:
            return []
        if name == "submit" and done[-1] in (*LANGUAGE_FLAGS, "--image", "--version"):
            return self.runtime_choices(cmd, done)
        if current.startswith("-"):
            flags = [f for flags, _ in cmd.arguments for f in flags if f.startswith("-")]
            return [*flags, "--output", "--server"]
        if name in TAKES_JOB_ID and len(done) == len(name.split()):
            return [str(i) for i in self.state.job_ids]
        return []

    def runtime_choices(self, cmd: Command, done: list[str]) -> list[str]:
        """Values of submit's --language, --image and --version, each narrowed by the
        others given on the line (the language also guessed from the FILE, as submit does)."""
        options, files = parsed(cmd, done[1:-1])
        image = options.get("--image")
        in_image = [r for r in self.state.runtimes if image is None or r["image"] == image]
        flag = done[-1]
        if flag in LANGUAGE_FLAGS:
            return sorted({n for r in in_image for n in (r["language"], *r.get("aliases", ()))})
        given = next((options[f] for f in LANGUAGE_FLAGS if f in options), None)
        language = self.state.language_of(given or guess_language(files[0] if files else None, ""))
        if flag == "--image":
            if not (given or files):  # --language may come next: every image
                return list(self.state.images)
            version = options.get("--version")
            return [name for name in self.state.images if any(
                r["image"] == name and r["language"] == language
                and (version is None or version_matches(r["version"], version))
                for r in self.state.runtimes)]
        versions = {r["version"] for r in in_image if r["language"] == language}
        return sorted(versions, key=version_key, reverse=True)


def parsed(cmd: Command, words: list[str]) -> tuple[dict[str, str], list[str]]:
    """A command line's option values (by the flag as typed) and its positional words."""
    takes_value = {flag for flags, kwargs in cmd.arguments if kwargs.get("action") is None
                   for flag in flags if flag.startswith("-")} | {"--server", "-o", "--output"}
    options: dict[str, str] = {}
    positional: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word in takes_value and i + 1 < len(words):
            options[word] = words[i + 1]
            i += 2
            continue
        if not word.startswith("-"):
            positional.append(word)
        i += 1
    return options, positional


def key_bindings() -> KeyBindings:
    """Code entry: Enter adds a line (the default of multiline); Esc Enter / Alt+Enter accept.
    Ctrl+Space also accepts, for terminals that eat Alt."""
    bindings = KeyBindings()

    @bindings.add("c-@")
    def _(event) -> None:
        event.current_buffer.validate_and_handle()
    return bindings
