"""UserStore and TokenStore: users (bcrypt hashes only) and login tokens (stored hashed)."""
from __future__ import annotations

import sqlite3

from .db import Database, StoreError


class UserExists(StoreError):
    """The uid is taken."""


class UserStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, uid: int, password_hash: str, is_admin: bool, now: str) -> None:
        try:
            await self.db.write(
                "INSERT INTO users (uid, password_hash, is_admin, created_at, password_changed_at)"
                " VALUES (?, ?, ?, ?, ?)", (uid, password_hash, int(is_admin), now, now))
        except StoreError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise UserExists(f"uid {uid} is taken") from exc
            raise

    async def set_password(self, uid: int, password_hash: str, is_admin: bool, now: str) -> None:
        """Create or overwrite (used by create-admin)."""
        await self.db.write(
            "INSERT INTO users (uid, password_hash, is_admin, created_at, password_changed_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT(uid) DO UPDATE SET"
            " password_hash = excluded.password_hash, is_admin = excluded.is_admin,"
            " password_changed_at = excluded.password_changed_at",
            (uid, password_hash, int(is_admin), now, now))

    async def get(self, uid: int) -> dict | None:
        row = await self.db.fetchone(
            "SELECT uid, password_hash, is_admin, password_changed_at FROM users WHERE uid = ?",
            (uid,))
        return dict(row) if row else None


class TokenStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, token_hash: str, uid: int, now: str, expires_at: str) -> None:
        await self.db.write(
            "INSERT INTO tokens (token_hash, uid, created_at, expires_at) VALUES (?, ?, ?, ?)",
            (token_hash, uid, now, expires_at))

    async def lookup(self, token_hash: str, now: str) -> int | None:
        row = await self.db.fetchone(
            "SELECT uid FROM tokens WHERE token_hash = ? AND expires_at > ?", (token_hash, now))
        return row[0] if row else None

    async def revoke(self, token_hash: str) -> bool:
        deleted = await self.db.write("DELETE FROM tokens WHERE token_hash = ?",
                                         (token_hash,))
        return deleted == 1

    async def purge_expired(self, now: str) -> None:
        await self.db.write("DELETE FROM tokens WHERE expires_at <= ?", (now,))
