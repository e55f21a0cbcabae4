"""The dashboard: static files at /ui/, and browsers asking / are sent there."""
from __future__ import annotations

import json
import os

import tornado.web

from .base import REASONS
from .jobs import JobsHandler


def wants_html(accept: str) -> bool:
    """A browser navigation asks for text/html first; API clients ask for JSON or */*."""
    first = accept.split(",")[0].split(";")[0].strip().lower()
    return first == "text/html"


class RootHandler(JobsHandler):
    async def prepare(self) -> None:
        if self.request.method == "GET" and wants_html(self.request.headers.get("Accept", "")):
            self.redirect("ui/", status=302)  # relative: works under a proxy's path prefix
            return
        await super().prepare()


class UiHandler(tornado.web.StaticFileHandler):
    def set_extra_headers(self, path: str) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("Content-Security-Policy",
                        "default-src 'self'; connect-src 'self' ws: wss:; "
                        "style-src 'self' 'unsafe-inline'; img-src 'self' data:")

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        # the folder is also the package server.static: its __init__.py is not a page
        if any(part.startswith("__") for part in os.path.relpath(absolute_path, root).split("/")):
            raise tornado.web.HTTPError(404)
        return super().validate_absolute_path(root, absolute_path)

    def write_error(self, status_code: int, **kwargs) -> None:
        """JSON, like every other error of the server (never an HTML page)."""
        self.set_header("Content-Type", "application/json; charset=utf-8")
        message = f"no file {self.request.path}" if status_code == 404 else self._reason
        self.finish(json.dumps({"error": {"code": REASONS.get(status_code, "error"),
                                          "message": message}}))
