"""Server configuration: one frozen dataclass; flags, ORQ_* environment, defaults in one place."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import package_files


def _default_slots() -> int:
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("./data")
    backend: str = "local"  # local | lambda
    burst: str = "none"  # none | lambda | local: where jobs go when the backend is full
    auth: str = "required"  # required | open
    slots: int = field(default_factory=_default_slots)  # concurrent local jobs
    # job limits: defaults and the maxima a job may ask for
    timeout_s: float = 10.0
    max_timeout_s: float = 60.0
    memory_mb: int = 256
    max_memory_mb: int = 2048
    cpus: float = 1.0
    max_cpus: float = 4.0
    io_weight: int = 500
    output_cap: int = 1024 * 1024  # bytes, per stream
    tmp_size_mb: int = 64  # the private /tmp of each job
    max_pids: int = 64  # per job, against fork bombs
    python: str = "/usr/bin/python3"  # interpreter for python jobs, inside the sandbox
    bash: str = "/bin/bash"
    warm: bool = True  # warm sandboxed runners (falls back to cold when unsupported)
    compile_timeout_s: float = 10.0  # wall limit of a compiled language's compile step
    compile_cache_mb: int = 1024  # compile results kept under the data dir (LRU beyond)
    seccomp: bool = True  # the seccomp filter on every job (off only to measure its cost)
    # users and quotas
    max_unfinished_per_user: int = 1000
    token_ttl_s: int = 7 * 24 * 3600
    metrics_public: bool = False  # /metrics readable without admin credentials
    # lambda backend
    lambda_function: str = "orq-runner"
    lambda_concurrency: int = 100
    lambda_region: str | None = None
    lambda_refresh_s: float = 60.0  # re-read the function's memory and timeout this often
    # web
    static_dir: Path = field(default_factory=lambda: package_files.directory(package_files.DASHBOARD))
    allowed_origins: tuple[str, ...] = ()  # extra browser origins allowed on /ws
    trust_proxy: bool = False  # take the client address and scheme from X-Forwarded-* headers
    max_body_bytes: int = 2 * 1024 * 1024
    idle_timeout_s: float = 60.0
    log_level: str = "info"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "orq.db"


# flag name -> (type, help); the env variable is ORQ_<NAME upper>
_OPTIONS: dict[str, tuple[type, str]] = {
    "host": (str, "address to listen on"),
    "port": (int, "port to listen on"),
    "data_dir": (Path, "where the database lives"),
    "backend": (str, "local or lambda"),
    "burst": (str, "none, or the backend that takes jobs while --backend is full (lambda)"),
    "auth": (str, "required or open"),
    "slots": (int, "jobs run at once by the local backend (default: CPU count)"),
    "timeout_s": (float, "default job timeout in seconds"),
    "max_timeout_s": (float, "largest timeout a job may ask for"),
    "memory_mb": (int, "default memory limit of a job"),
    "max_memory_mb": (int, "largest memory limit a job may ask for"),
    "cpus": (float, "default CPU share of a job"),
    "max_cpus": (float, "largest CPU share a job may ask for"),
    "io_weight": (int, "default block-IO weight (10-1000)"),
    "output_cap": (int, "bytes kept of stdout and of stderr, each"),
    "tmp_size_mb": (int, "size of each job's private /tmp"),
    "max_pids": (int, "processes a job may have at once"),
    "python": (str, "python interpreter used for jobs"),
    "bash": (str, "bash used for jobs"),
    "warm": (bool, "warm runners for python jobs, sandboxes started ahead in images"),
    "compile_timeout_s": (float, "wall limit of a compile step in seconds"),
    "compile_cache_mb": (int, "size of the compile cache under the data dir"),
    "seccomp": (bool, "a seccomp filter on every job (turn it off only to measure it)"),
    "max_unfinished_per_user": (int, "quota of unfinished jobs per user"),
    "token_ttl_s": (int, "lifetime of login tokens"),
    "metrics_public": (bool, "serve /metrics without admin credentials"),
    "lambda_function": (str, "AWS Lambda function name"),
    "lambda_concurrency": (int, "Lambda invocations at once"),
    "lambda_region": (str, "AWS region of the Lambda function"),
    "lambda_refresh_s": (float, "seconds between reads of the function's configuration"),
    "allowed_origins": (str, "comma-separated extra browser origins for /ws"),
    "trust_proxy": (bool, "behind a reverse proxy: use X-Forwarded-For/-Proto (and X-Real-Ip)"),
    "max_body_bytes": (int, "largest request body"),
    "idle_timeout_s": (float, "close idle HTTP connections after this many seconds"),
    "log_level": (str, "debug, info, warning or error"),
}
_CHOICES = {"backend": ("local", "lambda"), "burst": ("none", "local", "lambda"),
            "auth": ("required", "open")}


class ConfigError(ValueError):
    """A setting has a value the server cannot use."""


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"not a boolean: {text!r}")


def _convert(name: str, raw: str):
    kind = _OPTIONS[name][0]
    try:
        if kind is bool:
            return _parse_bool(raw)
        if name == "allowed_origins":
            return tuple(o.strip() for o in raw.split(",") if o.strip())
        return kind(raw)
    except ValueError as exc:
        raise ConfigError(f"bad value for {name} / ORQ_{name.upper()}: {raw!r}") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one --flag per setting (defaults come from env, then the dataclass)."""
    for name, (_, help_text) in _OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        # SUPPRESS: a subcommand's parser must not reset what was given before the subcommand
        parser.add_argument(flag, dest=name, default=argparse.SUPPRESS,
                            help=f"{help_text} (ORQ_{name.upper()})",
                            choices=_CHOICES.get(name))


def from_sources(args: argparse.Namespace | None = None, env: dict | None = None,
                 **overrides) -> Config:
    """Build a Config: explicit overrides > flags > ORQ_* env > defaults."""
    env = os.environ if env is None else env
    values: dict = {}
    for name in _OPTIONS:
        raw = env.get(f"ORQ_{name.upper()}")
        if raw not in (None, ""):
            values[name] = _convert(name, raw)
        flag = getattr(args, name, None) if args is not None else None
        if flag is not None:
            values[name] = _convert(name, flag)
    values.update(overrides)
    cfg = Config(**values)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    for name, choices in _CHOICES.items():
        if getattr(cfg, name) not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}")
    if not 0 < cfg.port < 65536:
        raise ConfigError("port must be between 1 and 65535")
    if cfg.burst == cfg.backend:
        raise ConfigError(f"burst must differ from the backend ({cfg.backend}), or be none")
    if cfg.lambda_refresh_s <= 0:
        raise ConfigError("lambda_refresh_s must be positive")
    if cfg.slots < 1:
        raise ConfigError("slots must be at least 1")
    if cfg.compile_timeout_s <= 0 or cfg.compile_cache_mb < 0:
        raise ConfigError("compile_timeout_s must be positive and compile_cache_mb >= 0")
    if not 10 <= cfg.io_weight <= 1000:
        raise ConfigError("io_weight must be between 10 and 1000")
