"""The whole URL table. Paths accept an optional trailing slash; a JSON 404 catches the rest."""
from __future__ import annotations

import tornado.web

from .handlers.events import EventsHandler
from .handlers.images import ImagesHandler, RuntimesHandler
from .handlers.jobs import JobHandler, JobsHandler, UserJobsHandler
from .handlers.ui import RootHandler, UiHandler
from .handlers.users import (
    HealthHandler,
    MetricsHandler,
    NotFoundHandler,
    OpenApiHandler,
    TokenHandler,
    UsersHandler,
)


def routes(app) -> list[tuple]:
    api = [
        (r"/", RootHandler),
        (r"/jobs/?", JobsHandler),
        (r"/jobs/([^/]+)/?", JobHandler),
        (r"/users/?", UsersHandler),
        (r"/users/([^/]+)/?", UserJobsHandler),
        (r"/auth/token/?", TokenHandler),
        (r"/images/?", ImagesHandler),
        (r"/runtimes/?", RuntimesHandler),
        (r"/ws/?", EventsHandler),
        (r"/healthz/?", HealthHandler),
        (r"/metrics/?", MetricsHandler),
        (r"/openapi.json", OpenApiHandler),
    ]
    table = [(path, handler, {"app": app}) for path, handler in api]
    table.append((r"/ui", tornado.web.RedirectHandler, {"url": "ui/"}))
    table.append((r"/ui/(.*)", UiHandler, {"path": str(app.config.static_dir),
                                          "default_filename": "index.html"}))
    table.append((r".*", NotFoundHandler, {"app": app}))
    return table
