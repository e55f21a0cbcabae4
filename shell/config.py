"""XDG locations and the saved client config (server, uid and token; never a password)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DEFAULT_SERVER = "http://127.0.0.1:8080"


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "orq"


def data_dir() -> Path:
    """Where the shell keeps its history: $XDG_DATA_HOME/orq, else the config dir."""
    base = os.environ.get("XDG_DATA_HOME")
    return Path(base) / "orq" if base else config_dir()


def config_path() -> Path:
    return config_dir() / "config.json"


def history_path() -> Path:
    return data_dir() / "history"


def ensure_private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


class Config:
    """``{"server": url, "profiles": {url: {"uid", "token", "expires_at", "is_admin"}}}``."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data = data or {}
        self.data.setdefault("profiles", {})

    @classmethod
    def load(cls) -> Config:
        try:
            data = json.loads(config_path().read_text())
        except (OSError, ValueError):
            data = {}
        return cls(data if isinstance(data, dict) else {})

    def save(self) -> None:
        ensure_private_dir(config_dir())
        path = config_path()
        tmp = path.with_suffix(".tmp")
        # created 0600 from the start, so the token is never readable by others
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self.data, fh, indent=2)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    def server(self, flag: str | None = None) -> str:
        """--server, then ORQ_SERVER, then the saved server, then the default."""
        url = flag or os.environ.get("ORQ_SERVER") or self.data.get("server") or DEFAULT_SERVER
        return url.rstrip("/")

    def profile(self, server: str) -> dict[str, Any]:
        return dict(self.data["profiles"].get(server) or {})

    def remember(self, server: str, **fields: Any) -> None:
        self.data["server"] = server
        self.data["profiles"][server] = {**self.profile(server), **fields}

    def forget_token(self, server: str) -> None:
        profile = self.profile(server)
        for key in ("token", "expires_at", "is_admin"):
            profile.pop(key, None)
        self.data["profiles"][server] = profile
