"""A Lambda Invoke-compatible endpoint on 127.0.0.1 for tests (a fake at the AWS edge).

    python tests/lambda_fake.py --zip runner.zip --workdir DIR [--function orq-runner]
        [--latency S] [--concurrency-limit N] [--prewarm N] [--remote-model]

It prints its port on the first line of stdout, then serves what boto3's Lambda client
sends: ``GET /2015-03-31/functions/<name>`` (get_function) and
``POST /2015-03-31/functions/<name>/invocations`` (invoke), which runs the REAL handler
from the built zip in an execution environment (``environments.py``), with fake AWS
credentials in its environment. Like Lambda, an environment runs one invocation at a time
and is reused by later ones; a busy fake starts more (cold starts), ``--prewarm`` starts
some in advance (provisioned concurrency). ``--latency`` adds that many seconds to every
invocation (the network and Lambda's own front end); beyond ``--concurrency-limit``
invocations at once it throttles (429), as an account or reserved concurrency limit does.
``--remote-model`` is for benchmarks only: see ``environments.Replay``.

Test controls: ``POST /_fake/bounce {"count": N, "code": "TooManyRequestsException",
"status": 429}`` answers the next N invocations with that AWS error; ``POST /_fake/fail
{"count": N}`` answers them with an unhandled function error; ``POST /_fake/state
{"state": "Pending"}``; ``POST /_fake/config {"MemorySize": MB, "Timeout": S}``;
``POST /_fake/latency {"seconds": S}``; ``GET /_fake/stats`` (counts, and ``cpu_s``: the
CPU seconds of the fake, its environments and the jobs they ran). The server's
``{"probe": true}`` at start is answered by the real handler but not counted.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from environments import Pool, Replay

FAKE_SECRET = "FAKE-SECRET-wJalrXUtnFEMI-K7MDENG-bPxRfiCY"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "ASIAFAKEFAKEFAKE", "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
                    "AWS_SESSION_TOKEN": "FAKE-SESSION-TOKEN-" + FAKE_SECRET,
                    "AWS_LAMBDA_FUNCTION_NAME": "orq-runner", "AWS_REGION": "us-east-1"}

def extract(zip_path: str | os.PathLike, task_dir: str | os.PathLike) -> None:
    """Unpack the zip as Lambda does into /var/task."""
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(task_dir)


class Fake:
    def __init__(self, pool: Pool, function: str, timeout_s: float, latency_s: float = 0.0,
                 concurrency_limit: int = 0, replay: Replay | None = None) -> None:
        self.pool, self.function, self.replay = pool, function, replay
        self.lock = threading.Lock()
        self.state = "Active"
        self.config = {"MemorySize": 512, "Timeout": int(timeout_s)}
        self.latency_s, self.concurrency_limit = latency_s, concurrency_limit
        self.bounce: dict = {"count": 0}
        self.fail = 0
        self.stats = {"invocations": 0, "bounced": 0, "failed": 0, "completed": 0, "running": 0,
                      "max_running": 0, "throttled": 0}

    def take(self) -> str:
        """Decide what the next invocation gets: 'bounce', 'throttle', 'fail' or 'run'."""
        with self.lock:
            self.stats["invocations"] += 1
            if self.bounce["count"] > 0:
                self.bounce["count"] -= 1
                self.stats["bounced"] += 1
                return "bounce"
            if 0 < self.concurrency_limit <= self.stats["running"]:
                self.stats["throttled"] += 1
                return "throttle"
            if self.fail > 0:
                self.fail -= 1
                self.stats["failed"] += 1
                return "fail"
            self.stats["running"] += 1
            self.stats["max_running"] = max(self.stats["max_running"], self.stats["running"])
            return "run"

    def run(self, payload: bytes) -> dict:
        """One invocation in an execution environment (or the remote model)."""
        try:
            event = json.loads(payload)
            if self.replay is not None:
                return self.replay.invoke(event, self.pool.invoke)
            return self.pool.invoke(event)
        finally:
            with self.lock:
                self.stats["running"] -= 1
                self.stats["completed"] += 1


class Handler(BaseHTTPRequestHandler):
    fake: Fake
    protocol_version = "HTTP/1.1"  # keep-alive, as boto3 and Lambda's endpoint use it
    disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stall

    def log_message(self, *args) -> None:
        pass

    def reply(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def aws_error(self, status: int, code: str, message: str) -> None:
        self.reply(status, {"Type": "User", "message": message}, {"x-amzn-ErrorType": code})

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def function_path(self) -> tuple[str | None, str]:
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) >= 3 and parts[:2] == ["2015-03-31", "functions"]:
            return parts[2], "/".join(parts[3:])
        return None, ""

    def do_GET(self) -> None:
        fake = self.fake
        if self.path == "/_fake/stats":
            own = resource.getrusage(resource.RUSAGE_SELF)
            cpu_s = own.ru_utime + own.ru_stime + fake.pool.cpu_s()
            with fake.lock:
                return self.reply(200, {**fake.stats, "environments": fake.pool.size(),
                                        "cpu_s": round(cpu_s, 3)})
        name, rest = self.function_path()
        if name != fake.function or rest:
            return self.aws_error(404, "ResourceNotFoundException",
                                  f"Function not found: {name}")
        with fake.lock:
            conf = dict(fake.config)
        self.reply(200, {"Configuration": {
            "FunctionName": name, "Runtime": "python3.12", "Handler": "lambda_handler.handler",
            "State": fake.state, "LastUpdateStatus": "Successful", **conf}, "Code": {}})

    def do_POST(self) -> None:
        fake, body = self.fake, self.body()
        if self.path.startswith("/_fake/"):
            return self.control(self.path[len("/_fake/"):], json.loads(body or b"{}"))
        name, rest = self.function_path()
        if name != fake.function or rest != "invocations":
            return self.aws_error(404, "ResourceNotFoundException", f"Function not found: {name}")
        if json.loads(body or b"{}") == {"probe": True}:
            # the server asking what the function runs (once, at start): not a job, so it is
            # answered by the real handler but counted apart from the jobs' invocations
            answer = fake.pool.invoke({"probe": True})
            return self.reply(200, answer.get("result", answer))
        if fake.latency_s:
            time.sleep(fake.latency_s)
        action = fake.take()
        if action == "bounce":
            return self.aws_error(fake.bounce.get("status", 429), fake.bounce["code"],
                                  fake.bounce.get("message", "Rate Exceeded."))
        if action == "throttle":
            return self.aws_error(429, "TooManyRequestsException", "Rate Exceeded.")
        answer = ({"errorMessage": "RequestId: fake Error: Runtime exited with error: "
                   "signal: killed", "errorType": "Runtime.ExitError"}
                  if action == "fail" else fake.run(body))
        if "result" in answer:
            return self.reply(200, answer["result"], {"X-Amz-Executed-Version": "$LATEST"})
        self.reply(200, answer, {"X-Amz-Function-Error": "Unhandled"})

    def control(self, what: str, data: dict) -> None:
        fake = self.fake
        with fake.lock:
            if what == "bounce":
                fake.bounce = {"code": "TooManyRequestsException", "status": 429, **data}
            elif what == "fail":
                fake.fail = int(data["count"])
            elif what == "state":
                fake.state = data["state"]
            elif what == "config":
                fake.config.update({k: int(data[k]) for k in ("MemorySize", "Timeout")
                                    if k in data})
            elif what == "latency":
                fake.latency_s = float(data["seconds"])
            else:
                return self.reply(404, {"error": what})
        self.reply(200, {"ok": True})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--zip", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--function", default="orq-runner")
    parser.add_argument("--timeout", type=float, default=65.0, help="the function's timeout")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds added to every invocation")
    parser.add_argument("--concurrency-limit", type=int, default=0,
                        help="throttle beyond this many invocations at once (0: never)")
    parser.add_argument("--prewarm", type=int, default=0,
                        help="execution environments started in advance")
    parser.add_argument("--remote-model", action="store_true",
                        help="benchmarks: answer repeated jobs without running them here")
    args = parser.parse_args()
    task_dir = os.path.join(args.workdir, "task")
    extract(args.zip, task_dir)
    pool = Pool(task_dir, args.workdir, args.timeout, FAKE_CREDENTIALS)
    pool.prewarm(args.prewarm)
    Handler.fake = Fake(pool, args.function, args.timeout, args.latency,
                        args.concurrency_limit, Replay() if args.remote_model else None)
    ThreadingHTTPServer.request_queue_size = 1024  # many connections open at once
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    finally:
        pool.close()


if __name__ == "__main__":
    main()
