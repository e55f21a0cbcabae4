"""Helpers for the dashboard tests: the browser fixtures, signing in and running from the
form, a page that records console errors, and a reverse proxy that mounts orq under a path
prefix (HTTP and WebSocket), as deployments do."""
from __future__ import annotations

import asyncio
import random
import re
import threading
from pathlib import Path

import tornado.httpclient
import tornado.web
import tornado.websocket
from conftest import REPO, free_port
from playwright.sync_api import expect

ARTIFACTS = REPO / "test-artifacts" / "dashboard"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


class ConsoleLog:
    """Console errors and uncaught exceptions of one page."""

    def __init__(self, page) -> None:
        self.errors: list[str] = []
        page.on("console", lambda msg: msg.type == "error" and self.errors.append(msg.text))
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def unexpected(self, *allowed: str) -> list[str]:
        return [e for e in self.errors if not any(a in e for a in allowed)]


def screenshot(page, name: str, full_page: bool = False) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


# -- the browser, and what a person does in it ------------------------------------------

PASSWORD = "password-123"
WAIT = 45_000  # ms: a generous bound for a noisy shared 2-core machine
expect.set_options(timeout=WAIT)
# a page navigation watcher: records every status a row shows, and survives only if
# the page is never reloaded
WATCH_ROWS = """() => {
  window.__seen = [];
  new MutationObserver(() => {
    for (const tr of document.querySelectorAll('#jobs-body tr')) {
      const item = tr.dataset.jobId + ':' + tr.dataset.status;
      if (window.__seen[window.__seen.length - 1] !== item) window.__seen.push(item);
    }
  }).observe(document.getElementById('jobs-body'),
             {subtree: true, childList: true, attributes: true, characterData: true});
}"""


def fresh_uid() -> int:
    return random.randint(10**6, 10**9)


def sign_in(page, base_url: str, uid: int, password: str | None = PASSWORD,
            register: bool = False) -> None:
    page.goto(base_url)
    page.get_by_label("User ID").fill(str(uid))
    if password is not None:
        page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Create account" if register else "Sign in").click()
    expect(page.locator("#whoami-text")).to_contain_text(f"User {uid}")
    expect(page.locator("#conn")).to_have_text("Live")


def row_badge(page, job_id: int):
    return page.locator(f'#jobs-body tr[data-job-id="{job_id}"] .badge')


def opened_job_id(page) -> int:
    expect(page.locator("#job-view")).to_be_visible()
    expect(page.locator("#jv-title")).to_have_text(re.compile(r"Job #\d+"))
    return int(page.locator("#jv-title").inner_text().split("#")[1])


def run_from_form(page, code: str, stdin: str = "", language: str = "python") -> int:
    page.get_by_label("Code", exact=True).fill(code)
    page.get_by_label("Input", exact=True).fill(stdin)
    page.get_by_label("Language").select_option(language)
    page.get_by_role("button", name="Run").click()
    return opened_job_id(page)


# -- a path-prefix reverse proxy ------------------------------------------------------

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host",
               "upgrade", "content-encoding"}


class _HttpProxy(tornado.web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS")

    def initialize(self, proxy: PrefixProxy) -> None:
        self.proxy = proxy

    async def _forward(self, rest: str) -> None:
        self.proxy.seen.append(self.request.path)
        url = f"http://127.0.0.1:{self.proxy.upstream}/{rest}"
        if self.request.query:
            url += "?" + self.request.query
        headers = {k: v for k, v in self.request.headers.get_all() if k.lower() not in HOP_HEADERS}
        headers["X-Forwarded-Host"] = self.request.host
        body = self.request.body if self.request.method in ("POST", "PUT", "PATCH") else None
        resp = await tornado.httpclient.AsyncHTTPClient().fetch(
            url, method=self.request.method, headers=headers, body=body,
            follow_redirects=False, raise_error=False, allow_nonstandard_methods=True)
        self.set_status(resp.code, resp.reason)
        self._headers.clear()
        for name, value in resp.headers.get_all():
            if name.lower() not in HOP_HEADERS:
                self.add_header(name, value)
        if resp.body and resp.code not in (204, 304):
            self.write(resp.body)

    get = post = delete = put = patch = head = options = _forward


class _WsProxy(tornado.websocket.WebSocketHandler):
    def initialize(self, proxy: PrefixProxy) -> None:
        self.proxy = proxy
        self.upstream = None

    def check_origin(self, origin: str) -> bool:
        return True  # orq itself checks the Origin against X-Forwarded-Host

    async def open(self) -> None:
        self.proxy.seen.append(self.request.path)
        url = f"ws://127.0.0.1:{self.proxy.upstream}/ws"
        if self.request.query:
            url += "?" + self.request.query
        req = tornado.httpclient.HTTPRequest(url, headers={
            "Origin": self.request.headers.get("Origin", ""),
            "X-Forwarded-Host": self.request.host})
        try:
            self.upstream = await tornado.websocket.websocket_connect(req)
        except (OSError, tornado.httpclient.HTTPClientError, tornado.websocket.WebSocketError):
            self.close(1011, "upstream refused")
            return
        asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        while True:
            msg = await self.upstream.read_message()
            if msg is None:
                self.close()
                return
            try:
                await self.write_message(msg)
            except tornado.websocket.WebSocketClosedError:
                return

    def on_message(self, message) -> None:
        if self.upstream is not None:
            self.upstream.write_message(message)

    def on_close(self) -> None:
        if self.upstream is not None:
            self.upstream.close()


class _Stray(tornado.web.RequestHandler):
    """Anything outside the prefix: what a page using absolute URLs would hit."""

    def initialize(self, proxy: PrefixProxy) -> None:
        self.proxy = proxy

    def prepare(self) -> None:
        self.proxy.stray.append(self.request.path)
        raise tornado.web.HTTPError(404)


class PrefixProxy:
    """Serves orq at http://127.0.0.1:<port><prefix>/ from a thread of its own."""

    def __init__(self, upstream_port: int, prefix: str = "/tenant/orq") -> None:
        self.upstream, self.prefix = upstream_port, prefix
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{prefix}/"
        self.seen: list[str] = []
        self.stray: list[str] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        app = tornado.web.Application([
            (self.prefix + "/ws/?", _WsProxy, {"proxy": self}),
            (self.prefix + "/(.*)", _HttpProxy, {"proxy": self}),
            (r".*", _Stray, {"proxy": self}),
        ])
        server = app.listen(self.port, address="127.0.0.1")
        self._ready.set()
        self.loop.run_forever()
        server.stop()

    def start(self) -> PrefixProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
