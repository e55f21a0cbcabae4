"""ApiClient (sync HTTP over urllib) and EventStream (the /ws socket; reconnects, catches up)."""
from __future__ import annotations

import asyncio
import base64
import collections
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import tornado.httpclient
import tornado.websocket

FINAL = ("DONE", "ERROR", "CANCELLED")
EXIT_JOB_FAILED, EXIT_USAGE, EXIT_SERVER, EXIT_AUTH = 1, 2, 3, 4


class OrqError(Exception):
    """An error for the user: one line of text and the exit code that goes with it."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE, status: int | None = None):
        super().__init__(message)
        self.exit_code, self.status = exit_code, status


def exit_code_for(status: int) -> int:
    if status in (401, 403):
        return EXIT_AUTH
    if status >= 500 or status == 429:
        return EXIT_SERVER
    return EXIT_USAGE


class ApiClient:
    """The REST API; every failure becomes an OrqError carrying the CLI exit code."""

    def __init__(self, server: str, token: str | None = None, timeout: float = 30) -> None:
        self.server, self.token, self.timeout = server.rstrip("/"), token, timeout

    def request(self, method: str, path: str, body: Any = None, query: dict | None = None,
                basic: tuple[int, str] | None = None, timeout: float | None = None) -> Any:
        url = self.server + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if basic is not None:
            cred = base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
            req.add_header("Authorization", f"Basic {cred}")
        elif self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        return self._send(req, timeout or self.timeout)

    def _send(self, req: urllib.request.Request, timeout: float) -> Any:
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            raise self._http_error(err, req.full_url) from None
        except (TimeoutError, urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise OrqError(f"cannot reach the server at {self.server}: {reason}",
                           EXIT_SERVER) from None
        return json.loads(raw) if raw.strip() else None

    def _http_error(self, err: urllib.error.HTTPError, url: str) -> OrqError:
        try:
            message = json.loads(err.read())["error"]["message"]
        except (ValueError, KeyError, TypeError, OSError):
            message = err.reason or "request failed"
        if err.code == 401 and "/auth/token" not in url:
            message += " (run `orq login`)"
        retry = err.headers.get("Retry-After") if err.headers else None
        if retry:
            message += f" (retry after {retry}s)"
        return OrqError(f"{message} [HTTP {err.code}]", exit_code_for(err.code), err.code)

    # -- endpoints -------------------------------------------------------------------

    def health(self) -> dict:
        return self.request("GET", "/healthz", timeout=10)

    def register(self, uid: int, password: str) -> dict:
        return self.request("POST", "/users", {"uid": uid, "password": password})

    def login(self, uid: int, password: str) -> dict:
        return self.request("POST", "/auth/token", basic=(uid, password))

    def logout(self) -> None:
        self.request("DELETE", "/auth/token")

    def submit(self, job: dict) -> dict:
        return self.request("POST", "/jobs", job)

    def jobs(self, uid: int | None = None, status: str | None = None,
             limit: int | None = None) -> list[dict]:
        return self.request("GET", "/jobs", query={"uid": uid, "status": status, "limit": limit})

    def job(self, job_id: int) -> dict:
        return self.request("GET", f"/jobs/{job_id}")

    def cancel(self, job_id: int) -> dict:
        return self.request("DELETE", f"/jobs/{job_id}")

    def images(self) -> list[dict]:
        return self.request("GET", "/images")

    def runtimes(self) -> list[dict]:
        return self.request("GET", "/runtimes")


class EventStream:
    """Live events from /ws. Iterating yields server events plus local
    ``{"type": "connection", "state": "up"|"down", ...}`` notes; it reconnects
    with ``?since=<last id>`` so nothing is missed while the buffer reaches back."""

    def __init__(self, server: str, token: str | None = None,
                 subscribe: dict | None = None, replay_all: bool = False) -> None:
        self.server, self.token, self.subscribe = server.rstrip("/"), token, subscribe
        self.replay_all = replay_all  # ask for the whole buffer of the subscribed job
        self.last_id: int | None = None
        self.stopped = False
        self._seen: set[int] = set()
        self._order: collections.deque[int] = collections.deque()
        self._conn: tornado.websocket.WebSocketClientConnection | None = None

    def url(self) -> str:
        base = "ws" + self.server[len("http"):] if self.server.startswith("http") else self.server
        query = {}
        if self.token:
            query["token"] = self.token
        if self.last_id is not None:
            query["since"] = str(self.last_id)
        return base + "/ws" + ("?" + urllib.parse.urlencode(query) if query else "")

    async def connect(self) -> None:
        """One connection attempt; OrqError when refused (auth) or unreachable."""
        try:
            self._conn = await tornado.websocket.websocket_connect(
                self.url(), connect_timeout=10, ping_interval=20)
        except tornado.httpclient.HTTPClientError as err:
            raise OrqError(f"the event stream was refused: HTTP {err.code}",
                           exit_code_for(err.code), err.code) from None
        except OSError as err:
            raise OrqError(f"cannot reach the server at {self.server}: {err}",
                           EXIT_SERVER) from None
        message: dict[str, Any] = {}
        if self.subscribe:
            message["subscribe"] = self.subscribe
        if self.replay_all and not self._seen:
            message["since"] = 0
        if message:
            await self._conn.write_message(json.dumps(message))

    async def events(self) -> AsyncIterator[dict]:
        """Yield events until close(), reconnecting (backing off); raises on refused auth."""
        delay, announced_down = 0.2, False
        while not self.stopped:
            try:
                if self._conn is None:
                    await self.connect()
                    yield {"type": "connection", "state": "up"}
                    delay, announced_down = 0.2, False
                async for event in self._read():
                    yield event
            except OrqError as err:
                if err.exit_code == EXIT_AUTH:
                    raise
            if self.stopped:
                return
            if not announced_down:
                announced_down = True
                yield {"type": "connection", "state": "down"}
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)

    async def _read(self) -> AsyncIterator[dict]:
        conn = self._conn
        while conn is not None:
            raw = await conn.read_message()
            if raw is None:
                break
            event = json.loads(raw)
            event_id = event.get("id")
            if isinstance(event_id, int):
                if event_id in self._seen:
                    continue  # already seen (replayed after a reconnect)
                self._remember(event_id)
            elif event.get("type") == "hello" and event.get("last_id"):
                self.last_id = max(self.last_id or 0, event["last_id"])
            yield event
        self._conn = None

    def _remember(self, event_id: int) -> None:
        self._seen.add(event_id)
        self._order.append(event_id)
        if len(self._order) > 20000:
            self._seen.discard(self._order.popleft())
        self.last_id = max(self.last_id or 0, event_id)

    def close(self) -> None:
        self.stopped = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None
