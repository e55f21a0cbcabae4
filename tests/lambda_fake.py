"""A Lambda Invoke-compatible endpoint on 127.0.0.1 for tests (a fake at the AWS edge).

    python tests/lambda_fake.py --zip runner.zip --workdir DIR [--function orq-runner]

It prints its port on the first line of stdout, then serves what boto3's Lambda client
sends: ``GET /2015-03-31/functions/<name>`` (get_function) and
``POST /2015-03-31/functions/<name>/invocations`` (invoke), which runs the REAL handler
from the built zip in a fresh process, like a Lambda execution environment, with fake
AWS credentials in its environment. Test controls:
``POST /_fake/bounce {"count": N, "code": "TooManyRequestsException", "status": 429}``
answers the next N invocations with that AWS error (the server's ``{"probe": true}`` at start
is answered but not counted); ``POST /_fake/fail {"count": N}``
answers them with an unhandled function error; ``POST /_fake/state {"state": "Pending"}``;
``GET /_fake/stats``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAKE_SECRET = "FAKE-SECRET-wJalrXUtnFEMI-K7MDENG-bPxRfiCY"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "ASIAFAKEFAKEFAKE", "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
                    "AWS_SESSION_TOKEN": "FAKE-SESSION-TOKEN-" + FAKE_SECRET,
                    "AWS_LAMBDA_FUNCTION_NAME": "orq-runner", "AWS_REGION": "us-east-1"}

# Runs the handler as Lambda's python runtime does: import lambda_handler from the task
# dir, call handler(event, context) for each event read from stdin (a JSON list; several
# events = a warm environment reused), print one JSON list of answers.
DRIVER = r"""
import json, sys, time, traceback
sys.path.insert(0, sys.argv[1])
function_timeout = float(sys.argv[2])
class Context:
    function_name = "orq-runner"
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    def __init__(self):
        self.deadline = time.monotonic() + function_timeout
    def get_remaining_time_in_millis(self):
        return int((self.deadline - time.monotonic()) * 1000)
import lambda_handler
answers = []
for event in json.load(sys.stdin):
    try:
        answers.append({"result": lambda_handler.handler(event, Context())})
    except Exception as exc:
        answers.append({"errorMessage": str(exc), "errorType": type(exc).__name__,
                        "stackTrace": traceback.format_exc().splitlines()})
print(json.dumps(answers))
"""


def extract(zip_path: str | os.PathLike, task_dir: str | os.PathLike) -> None:
    """Unpack the zip as Lambda does into /var/task."""
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(task_dir)


class Fake:
    def __init__(self, task_dir: str, workdir: str, function: str, timeout_s: float) -> None:
        self.task_dir, self.workdir, self.function = task_dir, workdir, function
        self.timeout_s = timeout_s
        self.lock = threading.Lock()
        self.state = "Active"
        self.bounce: dict = {"count": 0}
        self.fail = 0
        self.stats = {"invocations": 0, "bounced": 0, "failed": 0, "completed": 0, "running": 0,
                      "max_running": 0}

    def take(self) -> tuple[str, int]:
        """Decide what the next invocation gets ('bounce', 'fail' or 'run') and number it."""
        with self.lock:
            self.stats["invocations"] += 1
            n = self.stats["invocations"]
            if self.bounce["count"] > 0:
                self.bounce["count"] -= 1
                self.stats["bounced"] += 1
                return "bounce", n
            if self.fail > 0:
                self.fail -= 1
                self.stats["failed"] += 1
                return "fail", n
            self.stats["running"] += 1
            self.stats["max_running"] = max(self.stats["max_running"], self.stats["running"])
            return "run", n

    def run(self, payload: bytes, n: int, job: bool = True) -> dict:
        """Invocation ``n`` (from take()) in a fresh process with its own tmp root."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **FAKE_CREDENTIALS,
               "ORQ_RUNNER_TMP": os.path.join(self.workdir, f"tmp-{n}")}
        proc = subprocess.run([sys.executable, "-c", DRIVER, self.task_dir, str(self.timeout_s)],
                              input=b"[" + payload + b"]", capture_output=True, env=env,
                              check=False)
        with self.lock:
            if job:
                self.stats["running"] -= 1
                self.stats["completed"] += 1
        if proc.returncode != 0:
            return {"errorMessage": proc.stderr.decode(errors="replace")[-500:],
                    "errorType": "Runtime.ExitError"}
        return json.loads(proc.stdout)[0]


class Handler(BaseHTTPRequestHandler):
    fake: Fake

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
            with fake.lock:
                return self.reply(200, dict(fake.stats))
        name, rest = self.function_path()
        if name != fake.function or rest:
            return self.aws_error(404, "ResourceNotFoundException",
                                  f"Function not found: {name}")
        self.reply(200, {"Configuration": {
            "FunctionName": name, "Runtime": "python3.12", "Handler": "lambda_handler.handler",
            "State": fake.state, "LastUpdateStatus": "Successful"}, "Code": {}})

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
            return self.reply(200, fake.run(body, 0, job=False)["result"])
        action, n = fake.take()
        if action == "bounce":
            return self.aws_error(fake.bounce.get("status", 429), fake.bounce["code"],
                                  fake.bounce.get("message", "Rate Exceeded."))
        answer = ({"errorMessage": "RequestId: fake Error: Runtime exited with error: "
                   "signal: killed", "errorType": "Runtime.ExitError"}
                  if action == "fail" else fake.run(body, n))
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
            else:
                return self.reply(404, {"error": what})
        self.reply(200, {"ok": True})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--zip", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--function", default="orq-runner")
    parser.add_argument("--timeout", type=float, default=65.0, help="the function's timeout")
    args = parser.parse_args()
    task_dir = os.path.join(args.workdir, "task")
    extract(args.zip, task_dir)
    Handler.fake = Fake(task_dir, args.workdir, args.function, args.timeout)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
