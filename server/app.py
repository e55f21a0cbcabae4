"""make_app() and the orq-server command."""
from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import re
import signal
import sys
from dataclasses import dataclass

import tornado.httpserver
import tornado.web

from . import __version__
from . import config as config_mod
from .auth import Authenticator, AuthError
from .backends.base import Backend, BackendUnavailable
from .config import Config, ConfigError
from .events import EventBus
from .jobs import JobService
from .routes import routes
from .store import Database, JobStore, StoreError, TokenStore, UserStore

log = logging.getLogger("orq")
HARD_BODY_LIMIT = 8 * 1024 * 1024  # beyond this tornado drops the connection itself
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


def _log_request(handler: tornado.web.RequestHandler) -> None:
    status = handler.get_status()
    uri = _SECRET_QUERY.sub(r"\1=***", handler.request.uri or "")
    ms = 1000.0 * handler.request.request_time()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    logging.getLogger("tornado.access").log(level, "%d %s %s (%s) %.1fms", status,
                                            handler.request.method, uri,
                                            handler.request.remote_ip, ms)


def make_app(app: App) -> tornado.web.Application:
    return tornado.web.Application(
        routes(app), log_function=_log_request, websocket_ping_interval=20,
        websocket_ping_timeout=60, websocket_max_message_size=64 * 1024, compress_response=False)


def make_backend(config: Config) -> Backend:
    if config.backend == "lambda":
        from .backends.aws_lambda import LambdaBackend
        return LambdaBackend(config)
    from .backends.local import LocalBackend
    return LocalBackend(config)


def check_data_dir(config: Config) -> None:
    """Refuse, in one clear line, a data dir the database cannot be written in."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(config.data_dir, os.W_OK):
        raise StoreError(f"the data directory {config.data_dir} is not writable (read-only "
                         "file system or permissions); orq keeps its database there")


async def build(config: Config, backend: Backend | None = None) -> App:
    """Open the store, start the backend, recover unfinished jobs."""
    check_data_dir(config)
    db = Database(config.db_path)
    await db.open()
    store = JobStore(db)
    auth = Authenticator(UserStore(db), TokenStore(db), config.token_ttl_s)
    bus = EventBus()
    backend = backend or make_backend(config)
    try:
        await backend.start()
    except BaseException:
        await db.close()
        raise
    jobs = JobService(config, store, bus, backend)
    await jobs.recover()
    return App(config, db, store, auth, bus, backend, jobs)


async def serve(config: Config) -> int:
    app = await build(config)
    server = tornado.httpserver.HTTPServer(
        make_app(app), xheaders=True, max_body_size=HARD_BODY_LIMIT,
        idle_connection_timeout=config.idle_timeout_s, body_timeout=30)
    server.listen(config.port, config.host)
    log.info("orq %s listening on http://%s:%d (backend %s, auth %s, data %s)", __version__,
             config.host, config.port, config.backend, config.auth, config.data_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: no new connections; running jobs will run again after a restart")
    server.stop()
    await app.jobs.close()
    await server.close_all_connections()
    await app.db.close()
    return 0


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
    config_mod.add_arguments(parser)
    sub = parser.add_subparsers(dest="command")
    admin = sub.add_parser("create-admin", help="create an admin user (or reset one's password)")
    config_mod.add_arguments(admin)
    admin.add_argument("--uid", type=int, required=True)
    admin.add_argument("--password-stdin", action="store_true",
                       help="read the password from standard input")
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
        return asyncio.run(serve(config))
    except (BackendUnavailable, StoreError, ConfigError, AuthError, OSError) as exc:
        print(f"orq-server: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
