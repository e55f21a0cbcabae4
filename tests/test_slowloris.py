"""Slow and oversized clients: idle/body timeouts, early 413, no stall for everyone else."""
from __future__ import annotations

import json
import socket
import time

from reliability_support import Client, rss_kb

SLOW = 300  # slow connections at once
IDLE_S = 3  # --idle-timeout-s: the header and body timeout of these servers


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setblocking(False)
    return sock


def trickle(socks: list[socket.socket], data: bytes) -> int:
    """Send ``data`` on every socket still open; returns how many the server has closed."""
    closed = 0
    for sock in socks:
        try:
            if sock.recv(1) == b"":
                closed += 1
                continue
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
            continue
        try:
            sock.send(data)
        except OSError:
            closed += 1
    return closed


def trickle_until_closed(socks: list[socket.socket], limit_s: float) -> float:
    start = time.monotonic()
    while trickle(socks, b"x") < len(socks):
        assert time.monotonic() - start < limit_s, "slow connections were never closed"
        time.sleep(0.2)
    return time.monotonic() - start


def test_slow_headers_do_not_stall_others_and_are_closed(server_factory):
    srv = server_factory("--auth", "open", "--idle-timeout-s", str(IDLE_S))
    socks = [connect(srv.port) for _ in range(SLOW)]
    trickle(socks, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    client, worst = Client(srv.port, timeout=10), 0.0
    for _ in range(10):  # a normal client, while every slow header is still open
        trickle(socks, b"a")
        start = time.monotonic()
        assert client.call("GET", "/jobs?limit=5")[0] == 200
        worst = max(worst, time.monotonic() - start)
    assert worst < 5, f"a normal request took {worst:.1f}s next to {SLOW} slow clients"
    assert trickle(socks, b"a") < SLOW // 2, "the slow clients were closed before the test"
    # trickling a byte at a time must not extend the header timeout
    assert trickle_until_closed(socks, limit_s=IDLE_S + 30) >= 1
    assert Client(srv.port).call("GET", "/healthz")[0] == 200  # the idle keep-alive one was closed too
    for sock in socks:
        sock.close()


def test_slow_body_is_closed_after_body_timeout(server_factory):
    srv = server_factory("--auth", "open", "--idle-timeout-s", str(IDLE_S))
    socks = [connect(srv.port) for _ in range(20)]
    trickle(socks, b"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                   b"\r\nContent-Length: 100000\r\n\r\n{")
    trickle_until_closed(socks, limit_s=IDLE_S + 30)
    assert Client(srv.port).call("GET", "/healthz")[0] == 200


def read_response(sock: socket.socket, timeout: float = 20) -> tuple[int, dict]:
    sock.setblocking(True)
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_oversized_body_gets_413_json_without_being_read(server_factory):
    srv = server_factory("--auth", "open")
    rss_before = rss_kb(srv.proc.pid)
    for length in (3 * 1024 * 1024, 100 * 1024 * 1024, 10**15):
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
        sock.sendall(b"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     b"application/json\r\nContent-Length: %d\r\n\r\n" % length)
        try:
            sock.sendall(b"x" * 256 * 1024)  # a client that does not wait for the answer
        except OSError:
            pass  # the server may already have answered and be closing
        status, body = read_response(sock)
        sock.close()
        assert status == 413 and body["error"]["code"] == "body_too_large", (length, body)
    grown_mb = (rss_kb(srv.proc.pid) - rss_before) / 1024
    assert grown_mb < 16, f"the server grew {grown_mb:.0f} MiB reading bodies it refused"
    resp = srv.request("POST", "/jobs", b"{" + b" " * (3 * 1024 * 1024) + b"}")
    assert resp.status == 413 and resp.json["error"]["code"] == "body_too_large", resp
    assert srv.run("print('still fine')")["result"] == "still fine\n"
