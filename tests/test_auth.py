"""SPEC section 3 against a real server in the default --auth required mode."""
from __future__ import annotations

import itertools
import subprocess

from conftest import BIN

_uids = itertools.count(100)


def new_user(srv, password="password-123"):
    uid = next(_uids)
    assert srv.request("POST", "/users", {"uid": uid, "password": password}).status == 201
    return uid, password


def test_register_rules(auth_server):
    uid, _ = new_user(auth_server)
    taken = auth_server.request("POST", "/users", {"uid": uid, "password": "another-pass"})
    assert taken.status == 409 and taken.json["error"]["code"] == "uid_taken"
    for body in ({"uid": 5000, "password": "short"}, {"uid": 5001, "password": ""},
                 {"uid": -1, "password": "password-123"}, {"uid": True, "password": "x" * 9},
                 {"uid": 5002}, {"uid": 5003, "password": 12345678}):
        resp = auth_server.request("POST", "/users", body)
        assert resp.status == 400, (body, resp)


def test_password_length_counts_characters(auth_server):
    """8 to 72 characters, as the OpenAPI document says, whatever their UTF-8 length: bcrypt
    reads 72 bytes, so a longer encoding is hashed as its SHA-256 (behind a 0xff byte)."""
    long_pw = "\u00e9\u732b\U0001f512" * 24  # 72 characters, 216 bytes of UTF-8
    uid, pw = new_user(auth_server, long_pw)
    assert auth_server.request("GET", "/jobs", auth=(uid, pw)).status == 200
    for wrong in (pw[:-1] + "x", pw[:24]):  # bcrypt alone would see only the first 72 bytes
        assert auth_server.request("GET", "/jobs", auth=(uid, wrong)).status == 401
    token = auth_server.request("POST", "/auth/token", {"uid": uid, "password": pw})
    assert token.status == 200, token
    too_long = auth_server.request("POST", "/users", {"uid": next(_uids), "password": pw + "a"})
    assert too_long.status == 400 and too_long.json["error"]["code"] == "invalid_password"
    ascii_uid, _ = new_user(auth_server, "a" * 72)  # hashes made as before keep working
    assert auth_server.request("GET", "/jobs", auth=(ascii_uid, "a" * 72)).status == 200


def test_anonymous_requests_get_401_with_challenge(auth_server):
    for method, path, body in (("GET", "/jobs", None), ("GET", "/", None),
                               ("GET", "/jobs/1", None), ("GET", "/users/1", None),
                               ("POST", "/jobs", {"uid": 1, "code": "1", "input": ""}),
                               ("DELETE", "/jobs/1", None)):
        resp = auth_server.request(method, path, body)
        assert resp.status == 401, (method, path, resp)
        assert "Basic" in resp.headers["WWW-Authenticate"]
        assert resp.json["error"]["code"]
    assert auth_server.request("GET", "/healthz").status == 200


def test_every_way_to_authenticate(auth_server):
    uid, pw = new_user(auth_server)
    # 1. password inside the POST body, the assignment's own phrasing
    body = {"uid": uid, "password": pw, "code": "print('body')", "input": ""}
    assert auth_server.request("POST", "/jobs?wait=true", body).json["result"] == "body\n"
    # 2. HTTP Basic
    assert auth_server.run("print('basic')", uid=uid, auth=(uid, pw))["result"] == "basic\n"
    # 3. Bearer token, from Basic or from a JSON body
    token = auth_server.token(uid, pw)
    resp = auth_server.request("POST", "/jobs?wait=true",
                               {"uid": uid, "code": "print('token')", "input": ""}, token=token)
    assert resp.json["result"] == "token\n"
    basic = auth_server.request("POST", "/auth/token", auth=(uid, pw))
    assert basic.status == 200 and basic.json["token"] != token and basic.json["expires_at"]


def test_wrong_passwords_and_bad_tokens(auth_server):
    uid, _ = new_user(auth_server)
    for creds in ((uid, "wrong-password"), (999999, "password-123")):
        assert auth_server.request("GET", "/jobs", auth=creds).status == 401
    body = {"uid": uid, "password": "nope-nope", "code": "1", "input": ""}
    assert auth_server.request("POST", "/jobs", body).status == 401
    assert auth_server.request("GET", "/jobs", token="forged-token").status == 401
    resp = auth_server.request("GET", "/jobs", headers={"Authorization": "Basic !!!"})
    assert resp.status == 401


def test_revoked_token_stops_working(auth_server):
    uid, pw = new_user(auth_server)
    token = auth_server.token(uid, pw)
    assert auth_server.request("GET", "/jobs", token=token).status == 200
    assert auth_server.request("DELETE", "/auth/token", token=token).status == 204
    assert auth_server.request("GET", "/jobs", token=token).status == 401


def test_expired_token_is_refused(server_factory):
    srv = server_factory("--token-ttl-s", "1")
    uid, pw = srv.register(1)
    token = srv.token(uid, pw)
    import time
    time.sleep(7)  # past the expiry and the 5 s token cache
    resp = srv.request("GET", "/jobs", token=token)
    assert resp.status == 401 and resp.json["error"]["code"] == "bad_token"


def test_ownership(auth_server):
    alice, apw = new_user(auth_server)
    bob, bpw = new_user(auth_server)
    job_id = auth_server.submit("import time; time.sleep(30)", uid=alice, auth=(alice, apw))
    assert auth_server.request("GET", f"/jobs/{job_id}", auth=(bob, bpw)).status == 403
    assert auth_server.request("DELETE", f"/jobs/{job_id}", auth=(bob, bpw)).status == 403
    assert auth_server.request("GET", f"/users/{alice}", auth=(bob, bpw)).status == 403
    assert auth_server.request("GET", f"/jobs?uid={alice}", auth=(bob, bpw)).status == 403
    as_bob = auth_server.request("POST", "/jobs", {"uid": alice, "code": "1", "input": ""},
                                 auth=(bob, bpw))
    assert as_bob.status == 403
    assert auth_server.request("GET", "/jobs", auth=(bob, bpw)).json == []
    mine = auth_server.request("GET", "/jobs", auth=(alice, apw)).json
    assert [j["job_id"] for j in mine] == [job_id]
    assert auth_server.request("GET", f"/users/{alice}", auth=(alice, apw)).json[0]["uid"] == alice
    admin = (0, "admin-password")
    assert auth_server.request("GET", f"/jobs/{job_id}", auth=admin).status == 200
    everyone = auth_server.request("GET", "/jobs", auth=admin).json
    assert {alice}.issubset({j["uid"] for j in everyone})
    assert auth_server.request("DELETE", f"/jobs/{job_id}", auth=admin).json["status"] == \
        "CANCELLED"


def test_metrics_are_admin_only(auth_server):
    uid, pw = new_user(auth_server)
    assert auth_server.request("GET", "/metrics").status == 401
    assert auth_server.request("GET", "/metrics", auth=(uid, pw)).status == 403
    assert auth_server.request("GET", "/metrics", auth=(0, "admin-password")).status == 200


def test_throttling_after_repeated_failures(server_factory):
    srv = server_factory()
    uid, pw = srv.register(7)
    codes = [srv.request("GET", "/jobs", auth=(uid, f"wrong-{i}")).status for i in range(6)]
    assert codes[:5] == [401] * 5 and codes[5] == 429
    blocked = srv.request("GET", "/jobs", auth=(uid, pw))
    assert blocked.status == 429 and int(blocked.headers["Retry-After"]) >= 1
    other, opw = srv.register(8)
    assert srv.request("GET", "/jobs", auth=(other, opw)).status == 200


def test_quota_of_unfinished_jobs(server_factory):
    srv = server_factory("--max-unfinished-per-user", "2", "--slots", "1")
    uid, pw = srv.register(9)
    ids = [srv.submit("import time; time.sleep(30)", uid=uid, auth=(uid, pw)) for _ in range(2)]
    resp = srv.request("POST", "/jobs", {"uid": uid, "code": "1", "input": ""}, auth=(uid, pw))
    assert resp.status == 429 and resp.json["error"]["code"] == "quota_exceeded"
    assert int(resp.headers["Retry-After"]) >= 1
    srv.request("DELETE", f"/jobs/{ids[0]}", auth=(uid, pw))
    assert srv.request("POST", "/jobs", {"uid": uid, "code": "1", "input": ""},
                       auth=(uid, pw)).status == 201


def test_no_plaintext_password_in_data_dir_or_logs(server_factory):
    srv = server_factory()
    secret = "plaintext-canary-8c1f"
    srv.register(11, secret)
    srv.request("GET", "/jobs", auth=(11, secret))
    srv.request("POST", "/jobs?wait=true", {"uid": 11, "password": secret, "code": "1",
                                            "input": ""})
    srv.request("GET", "/ws?token=" + srv.token(11, secret))
    srv.stop()
    needle = secret.encode()
    for path in srv.data_dir.rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), path
    assert secret not in srv.log()
    assert "token=***" in srv.log() or "/ws" not in srv.log()


def test_create_admin_from_stdin(server_factory):
    srv = server_factory()
    proc = subprocess.run([str(BIN / "orq-server"), "create-admin", "--uid", "77",
                           "--data-dir", str(srv.data_dir), "--password-stdin"],
                          input="admin-pass-77\n", text=True, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert srv.request("GET", "/metrics", auth=(77, "admin-pass-77")).status == 200


def test_expired_tokens_are_removed_at_start(server_factory):
    import sqlite3
    import time
    srv = server_factory("--token-ttl-s", "1")
    uid, pw = srv.register(12)
    srv.token(uid, pw)
    time.sleep(1.5)
    srv.restart()
    srv.token(uid, pw)  # a fresh one stays
    with sqlite3.connect(srv.data_dir / "orq.db") as db:
        assert db.execute("SELECT count(*) FROM tokens").fetchone()[0] == 1
