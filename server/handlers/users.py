"""POST /users, /auth/token, /healthz, /metrics, /openapi.json and the JSON 404."""
from __future__ import annotations

from .. import metrics, openapi
from ..store import UserExists
from .base import ApiError, BaseHandler, body_uid


def _uid_and_password(body: dict) -> tuple[int, str]:
    uid, password = body_uid(body.get("uid")), body.get("password")
    if not isinstance(password, str):
        raise ApiError(400, "invalid_field", "'password' must be a string")
    return uid, password


class UsersHandler(BaseHandler):
    async def prepare(self) -> None:
        pass  # registering needs no credentials

    async def post(self) -> None:
        uid, password = _uid_and_password(self.json_body())
        try:
            await self.app.auth.register(uid, password)
        except UserExists:
            raise ApiError(409, "uid_taken", f"uid {uid} is already registered") from None
        self.send_json({"uid": uid}, 201)


class TokenHandler(BaseHandler):
    async def post(self) -> None:
        if self.request.body:  # a body is read (and must be valid) even next to Basic
            uid, password = _uid_and_password(self.json_body())
            if self.user is None:  # Basic credentials, already checked, come first
                self.user = await self.app.auth.login(uid, password, self.client_addr)
        elif self.user is None:
            raise ApiError(401, "unauthorized", "send HTTP Basic credentials or "
                           '{"uid": ..., "password": ...}',
                           {"WWW-Authenticate": 'Basic realm="orq"'})
        token, expires_at = await self.app.auth.issue_token(self.user)
        self.send_json({"token": token, "expires_at": expires_at, "uid": self.user.uid,
                        "is_admin": self.user.is_admin})

    async def delete(self) -> None:
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "send the token to revoke as a Bearer token")
        await self.app.auth.revoke(token.strip())
        self.set_status(204)
        self.finish()


class HealthHandler(BaseHandler):
    async def prepare(self) -> None:
        pass  # public, and cheap: no database round trip

    def get(self) -> None:
        self.send_json({"ok": True, "auth": self.app.config.auth, **self.app.jobs.health()})


class MetricsHandler(BaseHandler):
    def get(self) -> None:
        if not (self.open_mode or self.app.config.metrics_public):
            self.require_user()
            if not self.user.is_admin:
                raise ApiError(403, "forbidden", "metrics are for admins "
                               "(or start the server with --metrics-public true)")
        self.set_header("Content-Type", metrics.CONTENT_TYPE)
        self.finish(metrics.render())


class OpenApiHandler(BaseHandler):
    async def prepare(self) -> None:
        pass

    async def get(self) -> None:
        catalog = self.app.catalog
        await catalog.refresh()
        pins = tuple((name, b.envelope()) for name, b in self.app.jobs.backends.items())
        self.finish(openapi.served(self.app.config, tuple(catalog.index.runtimes), pins))


class NotFoundHandler(BaseHandler):
    async def prepare(self) -> None:
        raise ApiError(404, "not_found", f"no route for {self.request.method} {self.request.path}")
