"""The dashboard: static files at /ui/, and browsers asking / are sent there."""
from __future__ import annotations

import tornado.web

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
