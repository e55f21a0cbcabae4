"""Shared handler behaviour: JSON errors, body parsing, the current user."""
from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any

import tornado.web

from .. import jsonenc, metrics
from ..auth import AuthError, User
from ..jobs import JobError
from ..store import StoreError

log = logging.getLogger("orq.http")
REASONS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
           405: "method_not_allowed", 409: "conflict", 413: "too_large",
           415: "unsupported_media_type", 429: "too_many_requests", 503: "unavailable"}

# Bodies are JSON. As a courtesy (not in the OpenAPI document) JSON is also read from bodies
# labelled the way curl -d and plain clients label them; a real form or text body there is 415.
JSON_TYPES = ("", "application/json")
COURTESY_TYPES = ("text/plain", "application/x-www-form-urlencoded")
MAX_INT = 2**63 - 1  # SQLite's INTEGER: larger ids and uids are a 400, not a 500


def body_uid(value: Any) -> int:
    """A uid from a JSON body: an integer (not a bool) that SQLite can hold, or the 400."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise ApiError(400, "invalid_field", "'uid' must be an integer >= 0")
    return value


def body_too_large(limit: int) -> ApiError:
    """The 413, whether it is found from Content-Length before the body is read (app.py)
    or after a chunked body was read."""
    return ApiError(413, "body_too_large", f"the body is larger than {limit // 1024} KiB")


class ApiError(tornado.web.HTTPError):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(status, reason=None)
        self.code, self.message, self.headers = code, message, headers or {}


def parse_flag(value: str, name: str) -> bool:
    """?wait=true and friends, an OpenAPI boolean (any case; 1 and 0 as HTML forms and many
    clients send them): a typo, or anything else, is a 400, never silently the other meaning."""
    text = value.strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ApiError(400, "invalid_parameter", f"{name} must be true or false")


def parse_int(value: str, name: str, low: int = 0, high: int | None = None) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer") from None
    if number < low or number > (MAX_INT if high is None else high):
        bound = f"between {low} and {MAX_INT if high is None else high}"
        raise ApiError(400, "invalid_parameter", f"{name} must be {bound}")
    return number


class BaseHandler(tornado.web.RequestHandler):
    """Answers JSON only; ``self.user`` is the caller (None when anonymous)."""

    def initialize(self, app) -> None:
        self.app = app
        self.user: User | None = None

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")

    @property
    def open_mode(self) -> bool:
        return self.app.config.auth == "open"

    async def prepare(self) -> None:
        self.check_body_size()
        await self.authenticate()

    def check_body_size(self) -> None:
        if len(self.request.body or b"") > self.app.config.max_body_bytes:
            raise body_too_large(self.app.config.max_body_bytes)

    def on_finish(self) -> None:
        metrics.HTTP_REQUESTS.labels(str(self.get_status())).inc()

    # -- errors ---------------------------------------------------------------------

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        code, message = REASONS.get(status_code, "error"), self._reason
        if isinstance(exc, ApiError):
            code, message = exc.code, exc.message
            for name, value in exc.headers.items():
                self.set_header(name, value)
        elif status_code >= 500:
            code, message = "internal_error", "the server failed to handle this request"
        if status_code == 405:  # RFC 9110: a 405 lists the methods that do work
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"error": {"code": code, "message": message}}))

    def allowed_methods(self) -> list[str]:
        base = tornado.web.RequestHandler
        return [m for m in self.SUPPORTED_METHODS
                if getattr(type(self), m.lower(), None) is not getattr(base, m.lower(), None)]

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, ApiError):
            return
        super().log_exception(typ, value, tb)

    def _handle_request_exception(self, e: BaseException) -> None:
        """Map the domain's exceptions (auth, jobs, store) onto API errors in one place."""
        converted = _to_api_error(e)
        if converted is e:
            return super()._handle_request_exception(e)
        if not self._finished:
            self.send_error(converted.status_code, exc_info=(type(converted), converted, None))

    def send_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(jsonenc.dumps(data))

    # -- bodies ---------------------------------------------------------------------

    def json_body(self) -> dict:
        ctype = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        labelled_json = ctype in JSON_TYPES or ctype.endswith("+json")
        if not labelled_json and ctype not in COURTESY_TYPES:
            raise ApiError(415, "unsupported_media_type", "send the body as application/json")
        try:
            body = json.loads(self.request.body or b"null")
        except (ValueError, UnicodeDecodeError):
            if not labelled_json:
                raise ApiError(415, "unsupported_media_type",
                               f"send the body as application/json ({ctype} is not read)") from None
            raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_json", "the body must be a JSON object")
        try:  # "\ud800" parses, but no UTF-8 store or hash can take a lone surrogate
            jsonenc.dumps(body)
        except UnicodeEncodeError:
            raise ApiError(400, "invalid_json", "the body has an unpaired UTF-16 surrogate") from None
        return body

    # -- users ----------------------------------------------------------------------

    @property
    def client_addr(self) -> str:
        return self.request.remote_ip or "?"

    async def authenticate(self) -> None:
        header = self.request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            self.user = await self.app.auth.from_token(value.strip())
        elif scheme.lower() == "basic":
            uid, password = _parse_basic(value)
            self.user = await self.app.auth.login(uid, password, self.client_addr)
        elif header:
            raise ApiError(401, "bad_credentials", "use HTTP Basic or a Bearer token",
                           {"WWW-Authenticate": 'Basic realm="orq", Bearer'})

    def require_user(self) -> User | None:
        """The caller; 401 when auth is required and nobody signed in (None in open mode)."""
        if self.user is None and not self.open_mode:
            raise ApiError(401, "unauthorized", "sign in with HTTP Basic or a Bearer token",
                           {"WWW-Authenticate": 'Basic realm="orq", Bearer'})
        return self.user

    def may_read_uid(self, uid: int) -> bool:
        user = self.user
        return self.open_mode or (user is not None and (user.is_admin or user.uid == uid))

    def check_owner(self, uid: int) -> None:
        self.require_user()
        if not self.may_read_uid(uid):
            raise ApiError(403, "forbidden", "this belongs to another user")


def _parse_basic(value: str) -> tuple[int, str]:
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
        uid_text, sep, password = decoded.partition(":")
        if not sep or not 0 <= int(uid_text) <= MAX_INT:
            raise ValueError
        return int(uid_text), password
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiError(401, "bad_credentials", "malformed HTTP Basic credentials (uid:password)",
                       {"WWW-Authenticate": 'Basic realm="orq", Bearer'}) from None


def _to_api_error(e: BaseException) -> BaseException:
    if isinstance(e, (AuthError, JobError)):
        headers = {"Retry-After": str(e.retry_after)} if e.retry_after else {}
        if e.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="orq", Bearer'
        return ApiError(e.status, e.code, str(e), headers)
    if isinstance(e, StoreError):
        log.error("store failure: %s", e)
        return ApiError(503, "store_unavailable",
                        "the job store cannot take writes right now; nothing was saved")
    return e
