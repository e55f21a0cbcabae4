"""The baseline: a bare Tornado hello-world answering the same JSON as orq.

    python bench/hello.py PORT PAYLOAD_FILE

GET answers the bytes of PAYLOAD_FILE (a job object fetched from orq); POST answers
201 {"job_id": N}, as POST /jobs does. No database, no auth: the floor for Tornado.
"""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import tornado.web


class Hello(tornado.web.RequestHandler):
    def initialize(self, payload: bytes) -> None:
        self.payload = payload

    def get(self, *args) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(self.payload)

    def post(self, *args) -> None:
        Hello.counter += 1
        self.set_status(201)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"job_id": Hello.counter}))

    counter = 0


async def main(port: int, payload: bytes) -> None:
    app = tornado.web.Application([(r"/.*", Hello, {"payload": payload})], log_function=lambda h: None)
    app.listen(port, "127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2]).read_bytes()))
