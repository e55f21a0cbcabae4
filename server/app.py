"""make_app() and the orq-server command."""
from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass

import tornado.httpserver
import tornado.iostream
import tornado.web
from tornado import httputil

from . import __version__, timeutil
from . import config as config_mod
from .auth import Authenticator, AuthError
from .backends import view
from .backends.base import Backend, BackendUnavailable
from .config import Config, ConfigError
from .events import EventBus
from .handlers.base import body_too_large
from .images import cli as images_cli
from .images.catalog import ImageCatalog, reprobe
from .images.store import ImageError, ImageFiles
from .jobs import JobService
from .lock import DataDirError, DataDirLock
from .routes import routes
from .store import Database, ImageRows, JobStore, StoreError, TokenStore, UserStore

log = logging.getLogger("orq")
HARD_BODY_LIMIT = 8 * 1024 * 1024  # beyond this tornado drops the connection itself
# from the first SIGTERM/SIGINT to the exit, whatever the jobs are doing (systemd's and
# Kubernetes' default kill timeouts are 90 s and 30 s: a stop must never run into them)
STOP_DEADLINE_S = 4.0
STEP_S = 1.0  # each of the last steps (connections, database) gets at most this
_SECRET_QUERY = re.compile(r"(token|password)=[^&]*", re.IGNORECASE)


@dataclass
class App:
    """Everything a handler may reach, built once at start-up."""
    config: Config
    db: Database
    store: JobStore
    auth: Authenticator
    bus: EventBus
    backend: Backend
    jobs: JobService
    catalog: ImageCatalog


def _log_request(handler: tornado.web.RequestHandler) -> None:
    status = handler.get_status()
    uri = _SECRET_QUERY.sub(r"\1=***", handler.request.uri or "")
    ms = 1000.0 * handler.request.request_time()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    logging.getLogger("tornado.access").log(level, "%d %s %s (%s) %.1fms", status,
                                            handler.request.method, uri,
                                            handler.request.remote_ip, ms)


class _BodyLimit(httputil.HTTPMessageDelegate):
    """413 from the headers alone: a body announced too large is never read or buffered."""

    def __init__(self, inner: httputil.HTTPMessageDelegate, conn, limit: int) -> None:
        self.inner, self.conn, self.limit, self.refused = inner, conn, limit, False

    def headers_received(self, start_line, headers):
        length = headers.get("Content-Length", "").strip()
        if length.isdigit() and int(length) > self.limit:
            self.refused = True
            _refuse_body(self.conn.detach(), self.limit)
            return None
        return self.inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes):
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        self.inner.finish()

    def on_connection_close(self) -> None:
        if not self.refused:
            self.inner.on_connection_close()


def _refuse_body(stream, limit: int) -> None:
    err = body_too_large(limit)
    body = json.dumps({"error": {"code": err.code, "message": err.message}})
    stream.write(("HTTP/1.1 413 Payload Too Large\r\n"
                  "Content-Type: application/json; charset=utf-8\r\n"
                  f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}").encode())
    task = asyncio.ensure_future(_linger(stream))
    _LINGERING.add(task)
    task.add_done_callback(_LINGERING.discard)


_LINGERING: set[asyncio.Task] = set()


async def _linger(stream, seconds: float = 2.0, most: int = 64 * 1024 * 1024) -> None:
    """Drop (never keep) what the client still sends for a moment, so that closing does not
    reset the connection before the client has read the answer (a "lingering close")."""
    deadline, dropped = time.monotonic() + seconds, 0
    try:
        while dropped < most and (left := deadline - time.monotonic()) > 0:
            chunk = await asyncio.wait_for(stream.read_bytes(65536, partial=True), left)
            dropped += len(chunk)
    except (tornado.iostream.StreamClosedError, TimeoutError):
        pass
    finally:
        stream.close()


class HTTPServer(tornado.httpserver.HTTPServer):
    """Tornado's server plus an early 413 (Tornado itself answers a bare 400 and closes)."""
    body_limit = HARD_BODY_LIMIT

    def start_request(self, server_conn, request_conn) -> httputil.HTTPMessageDelegate:
        inner = super().start_request(server_conn, request_conn)
        return _BodyLimit(inner, request_conn, self.body_limit)


def make_app(app: App) -> tornado.web.Application:
    return tornado.web.Application(
        routes(app), log_function=_log_request, websocket_ping_interval=20,
        websocket_ping_timeout=60, websocket_max_message_size=64 * 1024, compress_response=False)


def make_backend(config: Config, name: str | None = None) -> Backend:
    """The backend called ``name`` (default: --backend)."""
    if (name or config.backend) == "lambda":
        from .backends.aws_lambda import LambdaBackend
        return LambdaBackend(config)
    from .backends.local import LocalBackend
    return LocalBackend(config)


async def build(config: Config, backend: Backend | None = None) -> App:
    """Open the store, start the backends, recover unfinished jobs."""
    db = Database(config.db_path)
    await db.open()
    store = JobStore(db)
    tokens = TokenStore(db)
    await tokens.purge_expired(timeutil.now())
    auth = Authenticator(UserStore(db), tokens, config.token_ttl_s)
    bus = EventBus()
    backend = backend or make_backend(config)
    burst = make_backend(config, config.burst) if config.burst != "none" else None
    started: list[Backend] = []
    try:  # a start that fails half way stops what it started (warm runners, sandboxes...)
        for each in (backend, burst):
            if each is not None:
                await each.start()
                started.append(each)
        catalog = await open_catalog(config, db, backend)
        jobs = JobService(config, store, bus, backend, burst, catalog)
        await jobs.recover()
    except BaseException:
        for each in started:
            await each.stop()
        await db.close()
        raise
    return App(config, db, store, auth, bus, backend, jobs, catalog)


async def open_catalog(config: Config, db: Database, backend: Backend) -> ImageCatalog:
    """The images this server runs jobs in; what a dead image command or a removed name left
    in the store is cleaned first."""
    files, rows = ImageFiles(config.data_dir), ImageRows(db)
    with_images = backend.name == "local"
    if with_images:
        files.ensure()
        for path in files.clean_tmp():
            log.info("removed an unfinished image build: %s", path)
        with files.locked():
            for digest in files.collect(await rows.digests_in_use()):
                log.info("removed image %s: no name or unfinished job uses it", digest)
            await reprobe(rows, files, view.shared_dir(config.data_dir), backend.sandbox)
    catalog = ImageCatalog(rows, files, view.shared_dir(config.data_dir), backend.runtimes,
                           timeutil.now(), with_images)
    await catalog.refresh()
    return catalog


async def serve(config: Config) -> int:
    DataDirLock.acquire(config.data_dir)  # held until the process ends
    stop = _watch_signals()  # from here on, also while the backend starts
    app = await build(config)
    server = HTTPServer(
        make_app(app), xheaders=config.trust_proxy, max_body_size=HARD_BODY_LIMIT,
        idle_connection_timeout=config.idle_timeout_s,
        body_timeout=min(30.0, config.idle_timeout_s))  # a slow body is idle time too
    server.body_limit = config.max_body_bytes
    server.listen(config.port, config.host)
    log.info("orq %s listening on http://%s:%d (backend %s, burst %s, auth %s, data %s)",
             __version__, config.host, config.port, config.backend, config.burst, config.auth,
             config.data_dir)
    await stop.wait()
    log.info("stopping: no new connections; running jobs will run again after a restart")
    server.stop()
    await app.jobs.close()
    await _bounded(server.close_all_connections(), "closing connections")
    await _bounded(app.db.close(), "closing the database")
    await _end_other_tasks()
    return 0


def _watch_signals() -> asyncio.Event:
    """An event set by the first SIGTERM or SIGINT, which also starts the deadline of the
    stop (STOP_DEADLINE_S); a second signal exits at once."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def first() -> None:
        stop.set()
        _exit_after(STOP_DEADLINE_S)
        for again in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(again, _exit_now, again)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, first)
    return stop


def _exit_now(sig: int, why: str = "a second signal") -> None:
    """Exit without waiting for anything: the sandboxes die with the server (the reaper
    kills what does not, see backends/ownership.py), their jobs run again after a
    restart, and the database is safe (WAL: a commit is durable)."""
    log.warning("%s: exiting now", why)
    logging.shutdown()
    os._exit(128 + sig)


def _exit_after(seconds: float) -> None:
    """The bound of a stop: whatever still runs then (a thread stuck in a system call,
    a task that ignores cancellation), the process exits."""
    timer = threading.Timer(seconds, _exit_now, (signal.SIGTERM,
                                                 f"still stopping after {seconds:g} s"))
    timer.daemon = True  # it must not itself keep the process alive
    timer.start()


async def _bounded(aw, what: str) -> None:
    try:
        await asyncio.wait_for(aw, STEP_S)
    except TimeoutError:
        log.warning("stopping: gave up %s after %g s", what, STEP_S)


async def _end_other_tasks() -> None:
    """Cancel what is left (WebSocket handlers, requests waiting for a job) and wait for
    it here, with a bound, rather than in asyncio.run, which waits without one."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=STEP_S)


async def create_admin(config: Config, uid: int, password: str) -> None:
    db = Database(config.db_path)
    await db.open()
    try:
        auth = Authenticator(UserStore(db), TokenStore(db), config.token_ttl_s)
        await auth.set_password(uid, password, is_admin=True)
    finally:
        await db.close()


def _read_password(from_stdin: bool) -> str:
    if from_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise SystemExit("orq-server: the passwords differ")
    return first


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="orq-server", description="Run the orq job server.")
    parser.add_argument("--version", action="version", version=f"orq-server {__version__}")
    config_mod.add_arguments(parser)
    sub = parser.add_subparsers(dest="command")
    admin = sub.add_parser("create-admin", help="create an admin user (or reset one's password)")
    config_mod.add_arguments(admin)
    admin.add_argument("--uid", type=int, required=True)
    admin.add_argument("--password-stdin", action="store_true",
                       help="read the password from standard input")
    image = sub.add_parser("image", help="build, import, pull, list or remove images")
    images_cli.add_parsers(image, config_mod.add_arguments)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = config_mod.from_sources(args)
    except ConfigError as exc:
        print(f"orq-server: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "create-admin":
            if args.uid < 0:
                raise ConfigError("--uid must be >= 0")
            asyncio.run(create_admin(config, args.uid, _read_password(args.password_stdin)))
            print(f"admin uid {args.uid} is ready")
            return 0
        if args.command == "image" or config.backend == "local":
            view.expose(config.data_dir, "data")  # while the process is single-threaded
        if args.command == "image":
            return asyncio.run(images_cli.run(args, config))
        return asyncio.run(serve(config))
    except (BackendUnavailable, StoreError, ConfigError, AuthError, DataDirError, ImageError,
            OSError) as exc:
        print(f"orq-server: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
