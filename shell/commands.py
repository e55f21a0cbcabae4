"""The `orq` commands (also the shell's): each one a small function in the registry."""
from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from server.runtimes import RECIPES

from . import output
from .client import EXIT_AUTH, EXIT_JOB_FAILED, OrqError
from .registry import Context, UsageError, arg, command
from .waiting import follow_job, run_async, wait_with_spinner, watch_events

STATUSES = ("WAITING", "RUNNING", "DONE", "ERROR", "CANCELLED")
UID = arg("--uid", type=int, help="user id (default: the logged-in user)")
PASSWORD_STDIN = arg("--password-stdin", action="store_true",
                     help="read the password from the first line of stdin")


def read_password(args: argparse.Namespace, ctx: Context, confirm: bool = False) -> str:
    """--password-stdin, then $ORQ_PASSWORD, then a prompt on a terminal."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif os.environ.get("ORQ_PASSWORD"):
        password = os.environ["ORQ_PASSWORD"]
    elif ctx.ask_password is not None:
        password = ctx.ask_password("Password: ")
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Repeat password: ") != password:
            raise UsageError("the passwords do not match")
    else:
        raise UsageError("no password: use --password-stdin or set ORQ_PASSWORD")
    if not password:
        raise UsageError("the password is empty")
    return password


def pick_uid(args: argparse.Namespace, ctx: Context, what: str) -> int:
    uid = args.uid if args.uid is not None else ctx.profile.get("uid")
    if uid is None:
        raise UsageError(f"{what} needs a user id: pass --uid N")
    return int(uid)


def save_auth(ctx: Context) -> None:
    """Keep the changed token, and tell the shell (its event stream uses the token)."""
    ctx.config.save()
    if ctx.on_auth_change:
        ctx.on_auth_change()


def save_login(ctx: Context, answer: dict) -> None:
    ctx.config.remember(ctx.server, uid=answer["uid"], token=answer["token"],
                        expires_at=answer.get("expires_at"), is_admin=answer.get("is_admin"))
    save_auth(ctx)


@command("register", "create a user on the server, then log in", UID, PASSWORD_STDIN)
def register(args: argparse.Namespace, ctx: Context) -> int:
    uid = pick_uid(args, ctx, "register")
    password = read_password(args, ctx, confirm=True)
    client = ctx.client()
    client.register(uid, password)
    save_login(ctx, client.login(uid, password))
    ctx.warn(f"registered uid {uid} on {ctx.server} and logged in")
    return 0


@command("login", "get a token and keep it (never the password)", UID, PASSWORD_STDIN)
def login(args: argparse.Namespace, ctx: Context) -> int:
    uid = pick_uid(args, ctx, "login")
    answer = ctx.client().login(uid, read_password(args, ctx))
    save_login(ctx, answer)
    ctx.warn(f"logged in to {ctx.server} as uid {uid} (token expires {answer['expires_at']})")
    return 0


@command("logout", "revoke the saved token and forget it")
def logout(args: argparse.Namespace, ctx: Context) -> int:
    client = ctx.client()
    if not client.token:
        ctx.warn(f"not logged in to {ctx.server}")
        return 0
    try:
        client.logout()
    except OrqError as err:
        if err.exit_code != EXIT_AUTH:  # an expired token is as good as revoked
            raise
    ctx.config.forget_token(ctx.server)
    save_auth(ctx)
    ctx.warn(f"logged out of {ctx.server}")
    return 0


def read_source(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None


def guess_language(path: str | None, code: str) -> str:
    """The language of a file, from its extension (the server's recipe table), else its #!
    line; python when nothing says otherwise."""
    suffix = Path(path or "").suffix.lower()
    for recipe in RECIPES:
        if suffix and suffix in recipe.extensions:
            return recipe.language
    if code.startswith(("#!/bin/bash", "#!/bin/sh", "#!/usr/bin/env bash")):
        return "bash"
    return "python"


def read_program(paths: list[str]) -> tuple[str | None, list[dict] | None]:
    """(code, None) for one file or -, (None, files) for several (named by their base names;
    the first is the entry point)."""
    if not paths:
        raise UsageError("submit needs a FILE (or - to read the code from stdin)")
    if len(paths) == 1:
        return read_source(paths[0]), None
    if "-" in paths:
        raise UsageError("- (the code from stdin) cannot be combined with other files")
    names = [Path(p).name for p in paths]
    if len(set(names)) != len(names):
        raise UsageError("two files have the same name; a job's files need distinct names")
    return None, [{"name": n, "content": read_source(p)} for n, p in zip(names, paths)]


def job_request(args: argparse.Namespace, ctx: Context, code: str | None,
                files: list[dict] | None = None) -> dict:
    if args.input is not None and args.input_file is not None:
        raise UsageError("use --input or --input-file, not both")
    paths = args.file or []
    if args.input_file == "-" and "-" in paths:
        raise UsageError("stdin cannot be both the code and the input")
    text = args.input if args.input is not None else (
        read_source(args.input_file) if args.input_file is not None else "")
    uid = args.uid if args.uid is not None else ctx.profile.get("uid", 0)
    first = code if files is None else files[0]["content"]
    body = {"uid": uid, "input": text,
            "language": args.language or guess_language(paths[0] if paths else None, first)}
    if files is None:
        body["code"] = code
    else:
        body["files"] = files
    for field in ("version", "image", "timeout"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    return body


SUBMIT_ARGS = (
    arg("file", metavar="FILE", nargs="*", default=None,
        help="the program: a file, or several (the first is the entry point, e.g. main.c "
             "util.h), or - for stdin (in the shell: omit it to type the code)"),
    arg("--input", "-i", default=None, help="text for the script's stdin"),
    arg("--input-file", default=None, metavar="F", help="file for the script's stdin"),
    arg("--language", "-l", default=None,
        help="a language of `get runtimes` (default: guessed from the file's extension or "
             "#! line, else python)"),
    arg("--version", default=None, help="the language's version, or a prefix (default newest)"),
    arg("--image", default=None, help="the image to run in (see `get images`)"),
    arg("--timeout", type=float, default=None, help="seconds before the job is killed"),
    arg("--wait", "-w", action="store_true", help="wait and print the job's output"),
    UID,
)


@command("submit", "submit a program (FILE..., or - for stdin)", *SUBMIT_ARGS)
def submit(args: argparse.Namespace, ctx: Context, code: str | None = None) -> int:
    files = None
    if code is None:
        code, files = read_program(args.file or [])
    client = ctx.client()
    job_id = client.submit(job_request(args, ctx, code, files))["job_id"]
    if not args.wait:
        if ctx.output == "json":
            ctx.print(output.to_json({"job_id": job_id}))
        else:
            ctx.print(f"job {job_id} submitted")
        return 0
    if ctx.output != "json" and ctx.interactive:
        ctx.print(f"job {job_id} submitted; waiting")
    return finish_wait(ctx, job_id, show_output=True)


def finish_wait(ctx: Context, job_id: int, show_output: bool) -> int:
    spinner = not ctx.interactive and sys.stderr.isatty()
    job = run_async(wait_with_spinner(ctx.client(), job_id, spinner), ctx.cancel)
    if ctx.output == "json":
        ctx.print(output.to_json(job))
    elif show_output:
        print_logs(ctx, job)
        if job["status"] != "DONE":
            ctx.warn(output.job_status_line(job))
    else:
        ctx.print(output.job_status_line(job))
    return 0 if job["status"] == "DONE" else EXIT_JOB_FAILED


def print_logs(ctx: Context, job: dict) -> None:
    ctx.out.write(job.get("result") or "")
    ctx.out.flush()
    if job.get("stderr"):
        ctx.err.write(job["stderr"])
        ctx.err.flush()


@command("get jobs", "list jobs, newest first", UID,
         arg("--status", type=str.upper, choices=STATUSES, default=None),
         arg("--limit", type=int, default=50, help="at most this many (default 50)"))
def get_jobs(args: argparse.Namespace, ctx: Context) -> int:
    jobs = ctx.client().jobs(uid=args.uid, status=args.status, limit=args.limit)
    ctx.show(jobs, output.jobs_table)
    return 0


@command("get images", "list the images jobs can run in")
def get_images(args: argparse.Namespace, ctx: Context) -> int:
    ctx.show(ctx.client().images(), output.images_table)
    return 0


@command("get runtimes", "list the languages (and versions, images) jobs can use")
def get_runtimes(args: argparse.Namespace, ctx: Context) -> int:
    ctx.show(ctx.client().runtimes(), output.runtimes_table)
    return 0


JOB_ID = arg("job_id", type=int, metavar="ID")


@command("get job", "show one job (code, input, output, timings)", JOB_ID)
def get_job(args: argparse.Namespace, ctx: Context) -> int:
    job = ctx.client().job(args.job_id)
    ctx.show(job, output.job_detail)
    return 0


@command("logs", "print a job's stdout (stderr to stderr)", JOB_ID,
         arg("-f", "--follow", action="store_true", help="stream live output until the end"))
def logs(args: argparse.Namespace, ctx: Context) -> int:
    client = ctx.client()
    if not args.follow:
        print_logs(ctx, client.job(args.job_id))
        return 0
    streamed = {"stdout": "", "stderr": ""}

    def on_output(stream: str, data: str) -> None:
        streamed[stream] += data
        target = ctx.err if stream == "stderr" else ctx.out
        target.write(data)
        target.flush()
    job = run_async(follow_job(client, args.job_id, on_output=on_output), ctx.cancel)
    # whatever the live stream did not carry (it started late, or the backend cannot stream)
    for key, stream, target in (("result", "stdout", ctx.out), ("stderr", "stderr", ctx.err)):
        full = job.get(key) or ""
        if full.startswith(streamed[stream]):
            target.write(full[len(streamed[stream]):])
            target.flush()
    return 0


@command("cancel", "cancel a waiting or running job", JOB_ID)
def cancel(args: argparse.Namespace, ctx: Context) -> int:
    job = ctx.client().cancel(args.job_id)
    ctx.show(job, output.job_status_line)
    return 0


@command("wait", "wait until a job is final (exit 1 if it ended ERROR/CANCELLED)", JOB_ID)
def wait(args: argparse.Namespace, ctx: Context) -> int:
    return finish_wait(ctx, args.job_id, show_output=False)


@command("watch", "print live events, one line each (Ctrl+C to stop)",
         arg("--job", type=int, default=None, metavar="ID", help="only this job"),
         arg("--uid", type=int, default=None, help="only this user's jobs"))
def watch(args: argparse.Namespace, ctx: Context) -> int:
    subscribe = {k: v for k, v in (("job_id", args.job), ("uid", args.uid)) if v is not None}

    def emit(event: dict) -> None:
        if event.get("type") == "job" and subscribe.get("job_id") not in (
                None, event["job"].get("job_id")):
            return
        if ctx.output == "json":
            ctx.print(output.json.dumps(event, ensure_ascii=False))
        elif (line := output.event_line(event)) is not None:
            ctx.print(line)
    run_async(watch_events(ctx.client(), subscribe or None, emit), ctx.cancel)
    return 0


@command("shell", "the interactive shell (completion, history, live job updates)")
def shell(args: argparse.Namespace, ctx: Context) -> int:
    if ctx.interactive:
        raise UsageError("you are already in the shell")
    from .repl import run_shell
    return run_shell(ctx)


__all__ = ["submit"]
