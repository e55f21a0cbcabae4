"""`orq shell`: the commands at a prompt, with completion, history, a toolbar and live updates."""
from __future__ import annotations

import asyncio
import shlex
import signal
import threading
from typing import Any

from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory, InMemoryHistory
from prompt_toolkit.lexers import PygmentsLexer
from prompt_toolkit.patch_stdout import patch_stdout
from pygments.lexers import get_lexer_by_name
from pygments.lexers.python import PythonLexer
from pygments.util import ClassNotFound

from . import commands, output
from .client import EXIT_AUTH, OrqError
from .config import ensure_private_dir, history_path
from .registry import Context, HelpShown, apply_common, build_parser
from .shell_parts import EXIT_WORDS, HELP_WORD, ShellCompleter, ShellState, key_bindings

INTRO = ("orq shell on {server}. Commands as for `orq` (try `get jobs`, `submit`, "
         "`logs ID -f`); `help`, `exit`. Code entry: Esc then Enter submits.")


class Shell:
    def __init__(self, ctx: Context, input: Any = None, output: Any = None,
                 history: bool = True) -> None:
        self.ctx, self.parser = ctx, build_parser(prog="")
        self.state = ShellState(ctx)
        ctx.interactive, ctx.cancel = True, threading.Event()
        ctx.on_auth_change = self.restart_events
        ctx.ask_password = self.ask_password
        hist = self.history() if history else InMemoryHistory()
        self.session: PromptSession = PromptSession(
            "orq> ", history=hist, completer=ShellCompleter(self.state),
            complete_while_typing=True, bottom_toolbar=self.state.toolbar,
            input=input, output=output)
        self.code_session: PromptSession = PromptSession(
            multiline=True, input=input, output=output, key_bindings=key_bindings(),
            bottom_toolbar=lambda: " code: Esc Enter (or Alt+Enter) submits, Ctrl+C drops it",
            prompt_continuation=lambda width, *_: "." * (width - 1) + " ")
        self.loop: asyncio.AbstractEventLoop | None = None
        self.events_task: asyncio.Task | None = None
        self.counts_task: asyncio.Task | None = None

    def history(self) -> FileHistory | InMemoryHistory:
        try:
            ensure_private_dir(history_path().parent)
            return FileHistory(str(history_path()))
        except OSError:
            return InMemoryHistory()

    def ask_password(self, message: str) -> str:
        """Called from a command's worker thread: prompt on the shell's own loop."""
        prompt = self.code_session.prompt_async(message, is_password=True, multiline=False,
                                                bottom_toolbar=None)
        return asyncio.run_coroutine_threadsafe(prompt, self.loop).result()

    # -- live events ---------------------------------------------------------------

    def restart_events(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._restart_events)

    def _restart_events(self) -> None:
        if self.events_task is not None:
            self.events_task.cancel()
        self.events_task = asyncio.ensure_future(self.read_events())

    async def read_events(self) -> None:
        """Print job changes above the prompt; the stream reconnects and catches up."""
        self.state.refresh_user()
        stream = self.state.stream()
        try:
            async for event in stream.events():
                self.on_event(event)
        except OrqError as err:
            self.state.connection = "signed out" if err.exit_code == EXIT_AUTH else "offline"
            self.invalidate()
        finally:
            stream.close()

    def on_event(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "connection":
            self.state.connection = "live" if event["state"] == "up" else "reconnecting"
            if event["state"] == "up":  # (again): the server may have restarted with changes
                asyncio.ensure_future(self.state.refresh_counts())
                asyncio.ensure_future(self.state.refresh_catalogue())
        elif kind == "job":
            self.state.job_seen(event["job"])
            self.ctx.print(output.event_line(event))
            self.refresh_counts_soon()
        elif kind == "resync":
            self.ctx.print(output.event_line(event))
        self.invalidate()

    def refresh_counts_soon(self) -> None:
        """Update the toolbar's counts now, unless a refresh is already on its way."""
        if self.counts_task is None or self.counts_task.done():
            self.counts_task = asyncio.ensure_future(self.state.refresh_counts())

    async def poll_counts(self) -> None:
        """The toolbar's counts every 3 s; what the server runs, for completion, now and then."""
        while True:
            await self.state.refresh_counts()
            self.invalidate()
            if self.state.catalogue_stale():
                await self.state.refresh_catalogue()
            await asyncio.sleep(3)

    def invalidate(self) -> None:
        app = self.session.app
        if app.is_running:
            app.invalidate()

    # -- commands ------------------------------------------------------------------

    async def run(self) -> int:
        self.loop = asyncio.get_running_loop()
        self.ctx.print(INTRO.format(server=self.ctx.server))
        self._restart_events()
        asyncio.ensure_future(self.state.refresh_job_ids())
        poller = asyncio.ensure_future(self.poll_counts())
        try:
            while True:
                try:
                    line = await self.session.prompt_async()
                except KeyboardInterrupt:
                    continue
                except EOFError:
                    break
                if await self.execute(line.strip()) is False:
                    break
        finally:
            poller.cancel()
            if self.events_task is not None:
                self.events_task.cancel()
        return 0

    async def execute(self, line: str) -> bool:
        """Run one line; False to leave the shell."""
        if not line:
            return True
        if line in EXIT_WORDS:
            return False
        if line == HELP_WORD or line.startswith(HELP_WORD + " "):
            self.ctx.print(self.parser.format_help())
            return True
        try:
            argv = shlex.split(line)
            args = self.parser.parse_args(argv)
            code = await self.code_for(args)
            await self.in_thread(self.call, args, code)
        except OrqError as err:
            self.ctx.warn(f"orq: {err}")
        except HelpShown:
            pass
        except ValueError as err:  # shlex: no closing quotation
            self.ctx.warn(f"orq: {err}")
        except (KeyboardInterrupt, asyncio.CancelledError):
            self.ctx.warn("interrupted")
        return True

    async def code_for(self, args: Any) -> str | None:
        """`submit` and `submit FILE` open a multi-line editor (FILE's text to start with)."""
        cmd = getattr(args, "handler", None)
        paths = getattr(args, "file", None) or []
        if cmd is None or cmd.name != "submit" or len(paths) > 1 or "-" in paths:
            return None  # several files or stdin: submitted as they are
        text = commands.read_source(paths[0]) if paths else ""
        language = args.language or commands.guess_language(paths[0] if paths else None, text)
        # an alias (jdk, rs, ...) highlights as the language the server knows it for
        lexer = PygmentsLexer(type(lexer_for(self.state.language_of(language) or language)))
        code = await self.code_session.prompt_async(
            f"{language} code:\n", default=text, lexer=lexer)
        if not code.strip():
            raise OrqError("nothing to submit")
        return code

    def call(self, args: Any, code: str | None) -> None:
        cmd = args.handler
        apply_common(args, self.ctx)
        self.state.refresh_user()
        if cmd.name == "submit" and code is not None:
            commands.submit(args, self.ctx, code=code)
        else:
            cmd.func(args, self.ctx)  # `shell` refuses by itself: ctx.interactive

    async def in_thread(self, func: Any, *args: Any) -> None:
        """Commands block (HTTP, waits): run them off the loop; Ctrl+C sets ctx.cancel."""
        cancel = self.ctx.cancel
        cancel.clear()
        try:
            self.loop.add_signal_handler(signal.SIGINT, cancel.set)
        except (RuntimeError, ValueError):  # not the main thread (tests)
            pass
        try:
            await asyncio.to_thread(func, *args)
        finally:
            try:
                self.loop.remove_signal_handler(signal.SIGINT)
            except (RuntimeError, ValueError):
                pass


def run_shell(ctx: Context) -> int:
    """Entry point for `orq shell`."""
    async def main() -> int:
        with patch_stdout(raw=True):
            return await Shell(ctx).run()
    return asyncio.run(main())


def lexer_for(language: str):
    """Pygments' lexer for a runtime's language (python's when it has none)."""
    try:
        return get_lexer_by_name(language)
    except ClassNotFound:
        return PythonLexer()
