"""Users, passwords (bcrypt, off the loop), tokens (random, stored hashed) and throttling."""
from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import bcrypt

from . import timeutil
from .store import TokenStore, UserStore

BCRYPT_COST = 12
MIN_PASSWORD = 8
MAX_PASSWORD = 72  # characters, as the OpenAPI document counts them
BCRYPT_BYTES = 72  # bcrypt reads no further (and bcrypt >= 4.1 raises beyond it)
CACHE_TTL_S = 60.0
FAIL_WINDOW_S = 60.0
FAIL_LIMIT_UID = 5  # failures per uid per window before 429
FAIL_LIMIT_ADDR = 20  # failures per client address per window before 429


@dataclass(frozen=True)
class User:
    uid: int
    is_admin: bool = False


class AuthError(Exception):
    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.code, self.retry_after = status, code, retry_after


def _bcrypt_input(password: str) -> bytes:
    """Its UTF-8 bytes; beyond what bcrypt reads, their SHA-256 behind a 0xff byte, which no
    UTF-8 text holds, so no typed password equals it (and hashes made before are unchanged)."""
    raw = password.encode()
    if len(raw) <= BCRYPT_BYTES:
        return raw
    return b"\xff" + base64.b64encode(hashlib.sha256(raw).digest())


def _hash_password(password: str) -> str:
    return bcrypt.hashpw(_bcrypt_input(password), bcrypt.gensalt(BCRYPT_COST)).decode()


def _check_password(password: str, hashed: str) -> bool:
    if len(password) > MAX_PASSWORD:
        return False  # no such password can have been registered
    return bcrypt.checkpw(_bcrypt_input(password), hashed.encode())


def check_password_rules(password) -> None:
    if not isinstance(password, str):
        raise AuthError(400, "invalid_password", "password must be a string")
    if len(password) < MIN_PASSWORD:
        raise AuthError(400, "invalid_password",
                        f"password must be at least {MIN_PASSWORD} characters long")
    if len(password) > MAX_PASSWORD:
        raise AuthError(400, "invalid_password",
                        f"password must be at most {MAX_PASSWORD} characters long")


class Throttle:
    """Counts recent failures per key; too many within the window means 429."""

    def __init__(self, limit: int, window_s: float = FAIL_WINDOW_S) -> None:
        self.limit, self.window_s = limit, window_s
        self._fails: dict[object, collections.deque[float]] = {}

    def _recent(self, key, now: float) -> collections.deque[float]:
        fails = self._fails.get(key)
        if fails is None:
            return collections.deque()
        while fails and fails[0] <= now - self.window_s:
            fails.popleft()
        if not fails:
            del self._fails[key]
        return fails

    def retry_after(self, key) -> int | None:
        now = time.monotonic()
        fails = self._recent(key, now)
        if len(fails) >= self.limit:
            return max(1, int(fails[0] + self.window_s - now) + 1)
        return None

    def fail(self, key) -> None:
        self._fails.setdefault(key, collections.deque()).append(time.monotonic())

    def forget(self, key) -> None:
        self._fails.pop(key, None)


class Authenticator:
    def __init__(self, users: UserStore, tokens: TokenStore, token_ttl_s: int) -> None:
        self.users, self.tokens, self.token_ttl_s = users, tokens, token_ttl_s
        self._key = secrets.token_bytes(32)  # keys the credential cache; never leaves memory
        self._verified: dict[bytes, tuple[float, User]] = {}
        self._token_cache: dict[str, tuple[float, User]] = {}
        self._checking: dict[bytes, asyncio.Future] = {}  # bcrypt checks in flight
        self.by_uid = Throttle(FAIL_LIMIT_UID)
        self.by_addr = Throttle(FAIL_LIMIT_ADDR)

    async def _bcrypt(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def register(self, uid: int, password: str, is_admin: bool = False) -> None:
        check_password_rules(password)
        hashed = await self._bcrypt(_hash_password, password)
        await self.users.create(uid, hashed, is_admin, timeutil.now())

    async def set_password(self, uid: int, password: str, is_admin: bool) -> None:
        check_password_rules(password)
        hashed = await self._bcrypt(_hash_password, password)
        await self.users.set_password(uid, hashed, is_admin, timeutil.now())
        self.forget_user(uid)

    def forget_user(self, uid: int) -> None:
        """Drop cached credentials and tokens of a user (password changed)."""
        self._verified = {k: v for k, v in self._verified.items() if v[1].uid != uid}
        self._token_cache = {k: v for k, v in self._token_cache.items() if v[1].uid != uid}

    def _check_throttle(self, uid: int, addr: str) -> None:
        wait = self.by_uid.retry_after(uid) or self.by_addr.retry_after(addr)
        if wait:
            raise AuthError(429, "too_many_attempts",
                            f"too many failed sign-ins; try again in {wait} s", retry_after=wait)

    async def login(self, uid: int, password: str, addr: str) -> User:
        """Check a uid/password pair; a recent success is answered from a keyed-hash cache,
        and concurrent checks of the same pair share one bcrypt run."""
        key = hmac.new(self._key, f"{uid}\0{password}".encode(), hashlib.sha256).digest()
        hit = self._verified.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        self._check_throttle(uid, addr)
        pending = self._checking.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._verify(key, uid, password))
            self._checking[key] = pending
            pending.add_done_callback(lambda _f: self._checking.pop(key, None))
        user = await asyncio.shield(pending)
        if user is None:
            self.by_uid.fail(uid)
            self.by_addr.fail(addr)
            raise AuthError(401, "bad_credentials", "wrong uid or password")
        return user

    async def _verify(self, key: bytes, uid: int, password: str) -> User | None:
        row = await self.users.get(uid)
        ok = await self._bcrypt(_check_password, password, row["password_hash"] if row else
                                _DUMMY_HASH)
        if not (row and ok):
            return None
        self.by_uid.forget(uid)
        user = User(uid, bool(row["is_admin"]))
        if len(self._verified) > 10000:
            self._verified.clear()
        self._verified[key] = (time.monotonic() + CACHE_TTL_S, user)
        return user

    async def issue_token(self, user: User) -> tuple[str, str]:
        token = secrets.token_urlsafe(32)
        expires_at = timeutil.in_seconds(self.token_ttl_s)
        await self.tokens.add(_token_hash(token), user.uid, timeutil.now(), expires_at)
        return token, expires_at

    async def from_token(self, token: str) -> User:
        digest = _token_hash(token)
        now = time.monotonic()
        hit = self._token_cache.get(digest)
        if hit and hit[0] > now:
            return hit[1]
        uid = await self.tokens.lookup(digest, timeutil.now())
        row = await self.users.get(uid) if uid is not None else None
        if row is None:
            raise AuthError(401, "bad_token", "the token is invalid, expired or revoked")
        user = User(uid, bool(row["is_admin"]))
        if len(self._token_cache) > 10000:
            self._token_cache.clear()
        # short TTL: expiry is re-checked against the database every few seconds
        self._token_cache[digest] = (now + 5.0, user)
        return user

    async def revoke(self, token: str) -> bool:
        digest = _token_hash(token)
        self._token_cache.pop(digest, None)
        return await self.tokens.revoke(digest)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# checked against when the uid does not exist, so both cases take the same time
_DUMMY_HASH = "$2b$12$C6UzMDM.H6dfI/f/IKxGhuH0s5PZHCv1DGd7ZmQY3e2QXUXmi7tBe"
