"""ImageRows: the images table (name -> digest and facts) and which jobs still need a digest."""
from __future__ import annotations

import json
import sqlite3

from .db import Database

_COLUMNS = "name, digest, size_bytes, created_at, source, runtimes, probed"


def _row(row: sqlite3.Row) -> dict:
    image = dict(row)
    image["runtimes"] = json.loads(image["runtimes"])
    return image


class ImageRows:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(self) -> list[dict]:
        rows = await self.db.fetchall(f"SELECT {_COLUMNS} FROM images ORDER BY name")
        return [_row(r) for r in rows]

    async def get(self, name: str) -> dict | None:
        row = await self.db.fetchone(f"SELECT {_COLUMNS} FROM images WHERE name = ?", (name,))
        return _row(row) if row else None

    async def put(self, image: dict) -> None:
        """Add the name, or point it at a new digest (the old digest stays for its jobs)."""
        await self.db.write(
            f"INSERT OR REPLACE INTO images ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (image["name"], image["digest"], image["size_bytes"], image["created_at"],
             image["source"], json.dumps(image["runtimes"]), image["probed"]))

    async def set_runtimes(self, name: str, digest: str, runtimes: list[dict],
                           probed: str) -> None:
        """New probe results for an image (unless the name moved to another digest)."""
        await self.db.write("UPDATE images SET runtimes = ?, probed = ? WHERE name = ?"
                            " AND digest = ?", (json.dumps(runtimes), probed, name, digest))

    async def delete(self, name: str) -> bool:
        return await self.db.write("DELETE FROM images WHERE name = ?", (name,)) == 1

    async def unfinished_jobs(self, name: str, digest: str) -> list[int]:
        """Ids of WAITING or RUNNING jobs that run in this image (by name or by digest)."""
        rows = await self.db.fetchall(  # through the status index: unfinished jobs only
            "SELECT job_id FROM jobs WHERE status IN ('WAITING', 'RUNNING')"
            " AND (image_digest = ? OR image = ?) ORDER BY job_id", (digest, name))
        return [r[0] for r in rows]

    async def digests_in_use(self) -> set[str]:
        """Every digest an image name points at or an unfinished job will run on."""
        rows = await self.db.fetchall(
            "SELECT digest FROM images UNION SELECT image_digest FROM jobs"
            " WHERE status IN ('WAITING', 'RUNNING')")  # the status index again
        return {r[0] for r in rows}
