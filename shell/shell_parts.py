"""The shell's pieces: live state + toolbar, completion of commands and job ids, key bindings."""
from __future__ import annotations

import asyncio
from collections.abc import Iterable

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.key_binding import KeyBindings

from .client import EventStream, OrqError
from .registry import COMMANDS, Context

TAKES_JOB_ID = ("get job", "logs", "cancel", "wait")
HELP_WORD, EXIT_WORDS = "help", ("exit", "quit")  # the shell's own words (completion: not "quit")
MAX_IDS = 200


class ShellState:
    """What the toolbar and the completer show: server, user, counts, connection, job ids."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.counts = {"waiting": "?", "running": "?"}
        self.connection = "connecting"
        self.user = "anonymous"
        self.job_ids: list[int] = []  # newest first

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
            return ["jobs", "job"]
        name = " ".join(done[:2]) if done[0] == "get" else done[0]
        cmd = COMMANDS.get(name)
        if cmd is None:
            return []
        if current.startswith("-"):
            flags = [f for flags, _ in cmd.arguments for f in flags if f.startswith("-")]
            return [*flags, "--output", "--server"]
        if name in TAKES_JOB_ID and len(done) == len(name.split()):
            return [str(i) for i in self.state.job_ids]
        return []


def key_bindings() -> KeyBindings:
    """Code entry: Enter adds a line (the default of multiline); Esc Enter / Alt+Enter accept.
    Ctrl+Space also accepts, for terminals that eat Alt."""
    bindings = KeyBindings()

    @bindings.add("c-@")
    def _(event) -> None:
        event.current_buffer.validate_and_handle()
    return bindings
