"""GET /ws: live job events, filtered to what the caller may read."""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import urllib.parse

import tornado.websocket

from .. import jsonenc, metrics
from ..auth import AuthError, User
from .base import ApiError, BaseHandler

log = logging.getLogger("orq.ws")
MAX_BACKLOG = 8 * 1024 * 1024  # bytes written but not yet taken by one client; then 1013


class EventsHandler(BaseHandler, tornado.websocket.WebSocketHandler):
    """One socket = one listener on the bus; events are written at once, and a client that
    leaves more than MAX_BACKLOG bytes unread is closed, so it never holds the server up."""

    def initialize(self, app) -> None:
        super().initialize(app)
        self.backlog = 0  # bytes handed to the socket and not yet flushed
        self.listening = False
        self.job_ids: set[int] = set()
        self.uids: set[int] = set()

    def set_default_headers(self) -> None:
        pass  # the 101 answer carries no JSON content type

    async def prepare(self) -> None:
        token = self.get_query_argument("token", None)
        try:
            if token:
                self.user = await self.app.auth.from_token(token)
            else:
                await self.authenticate()
        except AuthError as exc:
            raise ApiError(exc.status, exc.code, str(exc)) from None
        self.require_user()

    async def get(self, *args, **kwargs) -> None:
        """Refuse a plain GET (or a foreign origin) with a JSON error, not Tornado's text."""
        headers = self.request.headers
        connection = {part.strip().lower() for part in headers.get("Connection", "").split(",")}
        if headers.get("Upgrade", "").lower() != "websocket" or "upgrade" not in connection:
            raise ApiError(400, "websocket_required",
                           "GET /ws is a WebSocket: send Upgrade: websocket, Connection: Upgrade")
        origin = headers.get("Origin")
        if origin and not self.check_origin(origin):
            raise ApiError(403, "origin_not_allowed", f"WebSockets from {origin} are not allowed")
        await super().get(*args, **kwargs)

    def check_origin(self, origin: str) -> bool:
        """Browsers may connect from this server's own origin or a configured one."""
        parsed = urllib.parse.urlparse(origin)
        host = self.request.headers.get("X-Forwarded-Host", self.request.host)
        return parsed.netloc == host or origin in self.app.config.allowed_origins

    def may_see(self, event: dict) -> bool:
        job = event.get("job")
        uid = job["uid"] if job else event.get("uid")
        job_id = job["job_id"] if job else event.get("job_id")
        if not self.may_read_uid(uid):
            return False
        if self.job_ids or self.uids:
            return job_id in self.job_ids or uid in self.uids
        return True

    async def open(self) -> None:
        since = self.get_query_argument("since", None)
        self.enqueue({"type": "hello", "last_id": self.app.bus.last_id,
                      "user": _describe(self.user), "auth": self.app.config.auth})
        self.app.bus.subscribe(self.on_event)
        self.listening = True
        if since is not None and since.isdigit():
            self.replay(int(since))
        metrics.WS_CLIENTS.inc()

    def replay(self, since: int) -> None:
        events, complete = self.app.bus.since(since)
        if not complete:  # the buffer no longer reaches back: the client must re-list
            self.enqueue({"type": "resync", "last_id": self.app.bus.last_id})
        for event in events:
            if self.may_see(event):
                self.enqueue(event)

    def on_event(self, event: dict) -> None:
        if self.may_see(event) and self.enqueue(event) and "_t" in event:
            # live events only: a replayed one is as old as the client's absence
            metrics.WS_DELIVERY.observe(time.monotonic() - event["_t"])

    def enqueue(self, event: dict) -> bool:
        """Write the event now; the bytes count against this client until flushed. False
        when the socket is closed (or was closed for falling behind)."""
        text = wire(event)
        if self.backlog and self.backlog + len(text) > MAX_BACKLOG:
            log.info("closing a WebSocket that left %d bytes unread", self.backlog)
            self.app.bus.unsubscribe(self.on_event)
            self.close(1013, "too far behind; reconnect with ?since=<last id>")
            return False
        try:
            done = self.write_message(text)
        except tornado.websocket.WebSocketClosedError:
            return False
        self.backlog += len(text)
        done.add_done_callback(functools.partial(self._flushed, len(text)))
        return True

    def _flushed(self, size: int, future: asyncio.Future) -> None:
        self.backlog -= size
        if not future.cancelled():
            future.exception()  # a closed socket: on_close cleans up; nothing to log

    def on_message(self, message: str | bytes) -> None:
        try:
            msg = json.loads(message)
            sub = msg.get("subscribe") or {}
            unsub = msg.get("unsubscribe") or {}
        except (ValueError, AttributeError):
            self.enqueue({"type": "error", "message": "send JSON like {\"subscribe\": {\"job_id\": 1}}"})
            return
        for target, change in ((sub, set.add), (unsub, set.discard)):
            for key, bucket in (("job_id", self.job_ids), ("uid", self.uids)):
                value = target.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    change(bucket, value)
        if "since" in msg and isinstance(msg["since"], int):
            self.replay(msg["since"])
        if sub or unsub:
            self.enqueue({"type": "subscribed", "job_ids": sorted(self.job_ids),
                          "uids": sorted(self.uids)})

    def on_close(self) -> None:
        self.app.bus.unsubscribe(self.on_event)
        if self.listening:
            self.listening = False
            metrics.WS_CLIENTS.dec()


def wire(event: dict) -> bytes:
    """The event as sent (UTF-8 JSON), encoded once however many sockets receive it. Keys
    starting with "_" are internal; output events carry the uid only for filtering."""
    data = event.get("_wire")
    if data is None:
        output = event.get("type") == "output"
        public = {k: v for k, v in event.items()
                  if not k.startswith("_") and not (output and k == "uid")}
        data = jsonenc.dumps(public)
        event["_wire"] = data
    return data


def _describe(user: User | None) -> dict | None:
    return {"uid": user.uid, "is_admin": user.is_admin} if user else None
