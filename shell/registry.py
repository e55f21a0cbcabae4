"""The command registry shared by `orq` and `orq shell`, the argument parser and the context."""
from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, TextIO

from . import output
from .client import EXIT_USAGE, ApiClient, OrqError
from .config import Config

Handler = Callable[[argparse.Namespace, "Context"], int | None]


@dataclass
class Command:
    name: str  # "submit" or "get jobs"
    help: str
    func: Handler
    arguments: tuple = ()


COMMANDS: dict[str, Command] = {}


def arg(*flags: str, **kwargs: Any) -> tuple:
    return flags, kwargs


def command(name: str, help: str, *arguments: tuple) -> Callable[[Handler], Handler]:
    """Register a command: ``@command("get jobs", "list jobs", arg("--uid", type=int))``."""
    def register(func: Handler) -> Handler:
        COMMANDS[name] = Command(name, help, func, arguments)
        return func
    return register


@dataclass
class Context:
    """What a command needs: config, server, output format, where to print, how to ask."""

    config: Config
    server_flag: str | None = None
    output: str = "table"
    interactive: bool = False  # inside `orq shell`
    stdout: TextIO | None = None  # None: whatever sys.stdout is now (the shell patches it)
    stderr: TextIO | None = None
    ask_password: Callable[[str], str] | None = None
    cancel: threading.Event | None = None
    on_auth_change: Callable[[], None] | None = None

    @property
    def server(self) -> str:
        return self.config.server(self.server_flag)

    @property
    def profile(self) -> dict:
        return self.config.profile(self.server)

    def client(self) -> ApiClient:
        return ApiClient(self.server, self.profile.get("token"))

    @property
    def out(self) -> TextIO:
        return self.stdout or sys.stdout

    @property
    def err(self) -> TextIO:
        return self.stderr or sys.stderr

    def print(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def show(self, data: Any, as_text: Callable[[Any], str]) -> None:
        """Print data as JSON with ``-o json``, else in its human form."""
        self.print(output.to_json(data) if self.output == "json" else as_text(data))

    def warn(self, text: str) -> None:
        print(text, file=self.err, flush=True)


class UsageError(OrqError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


class HelpShown(Exception):
    """--help inside the shell: the text was printed, nothing else to do."""


class Parser(argparse.ArgumentParser):
    """Errors as one line (an exception the shell can catch), not usage + exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        hint = f"{self.prog} --help".strip()
        raise UsageError(f"{message} (see `{hint}`)")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if message:
            print(message, file=sys.stderr, end="")
        raise HelpShown() if status == 0 else UsageError(message or "usage error")


def add_common(parser: argparse.ArgumentParser, top: bool) -> None:
    default = "table" if top else argparse.SUPPRESS
    parser.add_argument("--server", default=None if top else argparse.SUPPRESS,
                        help="server URL (else $ORQ_SERVER, the saved one, "
                             "http://127.0.0.1:8080)")
    parser.add_argument("-o", "--output", choices=("table", "json"), default=default,
                        help="output format for data")


def build_parser(prog: str = "orq") -> Parser:
    parser = Parser(prog=prog, description="orq: run short scripts on an orq server.")
    add_common(parser, top=True)
    parser.add_argument("--version", action="version", version=f"orq {metadata.version('orq')}")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    groups: dict[str, argparse._SubParsersAction] = {}
    for cmd in COMMANDS.values():
        head, _, tail = cmd.name.partition(" ")
        if tail:
            if head not in groups:
                group = subs.add_parser(head, help=f"{head} resources")
                groups[head] = group.add_subparsers(dest="sub", metavar="WHAT",
                                                    parser_class=Parser, required=True)
            sub = groups[head].add_parser(tail, help=cmd.help, description=cmd.help)
        else:
            sub = subs.add_parser(head, help=cmd.help, description=cmd.help)
        add_common(sub, top=False)
        for flags, kwargs in cmd.arguments:
            sub.add_argument(*flags, **kwargs)
        sub.set_defaults(handler=cmd)
    return parser


def apply_common(args: argparse.Namespace, ctx: Context) -> None:
    """The options every command takes: ``-o`` and ``--server``."""
    ctx.output = args.output
    if args.server:
        ctx.server_flag = args.server


def dispatch(argv: list[str], ctx: Context) -> int:
    """Parse ``argv`` and run its command; returns the exit code (raises OrqError)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except HelpShown:
        return 0
    cmd: Command | None = getattr(args, "handler", None)
    if cmd is None:
        parser.print_help(ctx.err)
        return EXIT_USAGE
    apply_common(args, ctx)
    return cmd.func(args, ctx) or 0
