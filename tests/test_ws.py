"""SPEC section 4: live events over /ws from a real server."""
from __future__ import annotations

import json
import socket
import time

import pytest
import websocket  # websocket-client
from conftest import FINAL


def connect(srv, token=None, since=None, **kwargs) -> websocket.WebSocket:
    url = srv.url.replace("http://", "ws://") + "/ws"
    params = [f"token={token}"] if token else []
    params += [f"since={since}"] if since is not None else []
    if params:
        url += "?" + "&".join(params)
    ws = websocket.create_connection(url, timeout=30, **kwargs)
    hello = json.loads(ws.recv())
    assert hello["type"] == "hello"
    ws.hello = hello
    return ws


def events_until_final(ws, job_id, timeout=30) -> list[dict]:
    events, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = json.loads(ws.recv())
        if event.get("job_id") == job_id or (event.get("job") or {}).get("job_id") == job_id:
            events.append(event)
            if event["type"] == "job" and event["job"]["status"] in FINAL:
                return events
    raise AssertionError(f"no final event for job {job_id}: {events}")


def test_status_changes_and_output_arrive_in_order(open_server):
    ws = connect(open_server)
    job_id = open_server.submit("import time\nprint('one', flush=True)\ntime.sleep(0.3)\n"
                                "print('two', flush=True)\nimport sys; sys.stderr.write('err')")
    events = events_until_final(ws, job_id)
    statuses = [e["job"]["status"] for e in events if e["type"] == "job"]
    assert statuses == ["WAITING", "RUNNING", "DONE"]
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    out = "".join(e["data"] for e in events if e["type"] == "output" and e["stream"] == "stdout")
    err = "".join(e["data"] for e in events if e["type"] == "output" and e["stream"] == "stderr")
    assert out == "one\ntwo\n" and err == "err"
    first_output = next(i for i, e in enumerate(events) if e["type"] == "output")
    running = next(i for i, e in enumerate(events) if e["type"] == "job"
                   and e["job"]["status"] == "RUNNING")
    assert running < first_output < len(events) - 1
    final = events[-1]["job"]
    assert final["result"] == "one\ntwo\n" and final["exit_code"] == 0
    assert set(events[0]) >= {"id", "type", "job"}
    assert set(next(e for e in events if e["type"] == "output")) == \
        {"id", "type", "job_id", "stream", "data"}
    ws.close()


def test_subscribe_to_one_job(open_server):
    ws = connect(open_server)
    other = open_server.submit("print('other')")
    mine = open_server.submit("print('mine')")
    open_server.wait_final(other)
    ws.send(json.dumps({"subscribe": {"job_id": mine}}))
    events = events_until_final(ws, mine)
    assert all((e.get("job") or {}).get("job_id", e.get("job_id")) == mine for e in events)
    ws.close()


def test_users_only_see_their_own_events(auth_server):
    a, b = auth_server.register(301), auth_server.register(302)
    ws_a = connect(auth_server, auth_server.token(*a))
    ws_b = connect(auth_server, auth_server.token(*b))
    ws_admin = connect(auth_server, auth_server.token(0, "admin-password"))
    job_a = auth_server.submit("print('secret of a')", uid=a[0], auth=a)
    job_b = auth_server.submit("print('b')", uid=b[0], auth=b)
    seen_by_b = events_until_final(ws_b, job_b)
    assert all("secret" not in json.dumps(e) for e in seen_by_b)
    ws_b.settimeout(1.0)
    with pytest.raises(websocket.WebSocketTimeoutException):
        while True:  # drain: nothing of a's job may ever arrive
            event = json.loads(ws_b.recv())
            assert (event.get("job") or {}).get("uid", b[0]) == b[0]
            assert event.get("job_id") in (None, job_b)
    assert events_until_final(ws_a, job_a)[-1]["job"]["result"] == "secret of a\n"
    assert events_until_final(ws_admin, job_a)[-1]["job"]["uid"] == a[0]
    for ws in (ws_a, ws_b, ws_admin):
        ws.close()


def test_subscribing_to_someone_elses_uid_yields_nothing(auth_server):
    a, b = auth_server.register(303), auth_server.register(304)
    ws_b = connect(auth_server, auth_server.token(*b))
    ws_b.send(json.dumps({"subscribe": {"uid": a[0]}}))
    assert json.loads(ws_b.recv())["type"] == "subscribed"
    job = auth_server.submit("print(1)", uid=a[0], auth=a)
    auth_server.wait_final(job, auth=a)
    ws_b.settimeout(1.0)
    with pytest.raises(websocket.WebSocketTimeoutException):
        print(ws_b.recv())
    ws_b.close()


@pytest.mark.parametrize("token", ["forged", ""])
def test_bad_or_missing_token_is_refused_before_any_event(auth_server, token):
    url = auth_server.url.replace("http://", "ws://") + "/ws" + (f"?token={token}" if token else "")
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        websocket.create_connection(url, timeout=10)
    assert err.value.status_code == 401


def test_foreign_origin_is_refused(open_server):
    url = open_server.url.replace("http://", "ws://") + "/ws"
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        websocket.create_connection(url, timeout=10, origin="http://evil.example")
    assert err.value.status_code == 403
    connect(open_server, origin=open_server.url).close()


def test_reconnect_catches_up_from_last_id(open_server):
    ws = connect(open_server)
    last_id = ws.hello["last_id"]
    ws.close()
    job_id = open_server.submit("print('missed')")
    open_server.wait_final(job_id)
    ws = connect(open_server, since=last_id)
    events = events_until_final(ws, job_id)
    assert [e["job"]["status"] for e in events if e["type"] == "job"] == \
        ["WAITING", "RUNNING", "DONE"]
    ws.close()


def test_client_that_never_reads_does_not_block_others(open_server):
    stuck = socket.create_connection(("127.0.0.1", open_server.port))
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  b"Sec-WebSocket-Version: 13\r\n\r\n")
    reader = connect(open_server)
    flood = open_server.submit("import sys\nfor i in range(20000):\n"
                               "    print('x' * 40, flush=True)")
    events = events_until_final(reader, flood, timeout=60)
    assert events[-1]["job"]["status"] == "DONE"
    assert len(events[-1]["job"]["result"]) == 20000 * 41
    start = time.monotonic()
    assert open_server.request("GET", "/healthz").status == 200
    assert time.monotonic() - start < 2.0
    stuck.close()
    reader.close()


def _ws_clients(srv) -> float:
    for line in srv.request("GET", "/metrics").body.decode().splitlines():
        if line.startswith("orq_websocket_clients "):
            return float(line.split()[1])
    raise AssertionError("no orq_websocket_clients metric")


def test_a_client_that_leaves_megabytes_unread_is_closed(server_factory):
    srv = server_factory("--auth", "open")
    stuck = socket.create_connection(("127.0.0.1", srv.port))
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  b"Sec-WebSocket-Version: 13\r\n\r\n")
    deadline = time.monotonic() + 10
    while _ws_clients(srv) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _ws_clients(srv) == 1
    big = "import sys\nsys.stdout.write('o' * 1000000)\nsys.stderr.write('e' * 1000000)"
    for _ in range(6):  # each final event carries 2 MB of output
        assert srv.run(big)["status"] == "DONE"
    deadline = time.monotonic() + 30
    while _ws_clients(srv) > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _ws_clients(srv) == 0, "the client that never reads was not closed"
    stuck.close()
