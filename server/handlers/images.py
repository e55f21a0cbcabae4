"""GET /images and GET /runtimes: what jobs may run in, and with."""
from __future__ import annotations

from .base import BaseHandler


class ImagesHandler(BaseHandler):
    async def get(self) -> None:
        self.require_user()
        catalog = self.app.catalog
        await catalog.refresh()
        self.send_json(catalog.images())


class RuntimesHandler(BaseHandler):
    async def get(self) -> None:
        self.require_user()
        catalog = self.app.catalog
        await catalog.refresh()
        self.send_json([r.as_json() for r in catalog.index.runtimes])
