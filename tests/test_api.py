"""SPEC section 2 against a real server in --auth open mode: every endpoint and error code."""
from __future__ import annotations

import pytest

FIELDS = {"job_id", "uid", "status", "result", "stderr", "exit_code", "error", "language",
          "created_at", "started_at", "finished_at", "duration_ms", "limits", "truncated",
          "attempts"}


def test_submit_answers_at_once_with_an_id(open_server):
    resp = open_server.request("POST", "/jobs", {"uid": 7, "code": "print(2+2)", "input": ""})
    assert resp.status == 201
    assert set(resp.json) == {"job_id"}
    job = open_server.wait_final(resp.json["job_id"])
    assert job["status"] == "DONE" and job["result"] == "4\n" and job["exit_code"] == 0
    assert FIELDS <= set(job)
    assert job["attempts"] == 1 and job["truncated"] is False and job["error"] is None
    assert job["limits"] == {"timeout_s": 10.0, "memory_mb": 256, "cpus": 1.0, "io_weight": 500}
    assert job["started_at"] >= job["created_at"] and job["finished_at"] >= job["started_at"]


def test_wait_true_returns_the_final_job(open_server):
    job = open_server.run("import sys; sys.stderr.write('e'); print(input())", input="x\ny")
    assert (job["status"], job["result"], job["stderr"]) == ("DONE", "x\n", "e")


def test_nonzero_exit_is_error_with_its_code(open_server):
    job = open_server.run("import sys; print('partial'); sys.exit(3)")
    assert (job["status"], job["exit_code"], job["error"], job["result"]) == \
        ("ERROR", 3, None, "partial\n")


def test_exception_is_error_with_traceback_on_stderr(open_server):
    job = open_server.run("raise ValueError('boom')")
    assert job["status"] == "ERROR" and job["exit_code"] == 1
    assert "ValueError: boom" in job["stderr"]


def test_bash_language(open_server):
    job = open_server.run('read name; echo "hi $name"; exit 0', language="bash", input="bob\n")
    assert (job["status"], job["result"], job["language"]) == ("DONE", "hi bob\n", "bash")


def test_result_is_empty_string_not_null(open_server):
    job = open_server.run("pass")
    assert job["result"] == "" and job["stderr"] == ""


def test_unicode_and_invalid_utf8_output(open_server):
    job = open_server.run("import sys; print('héllo ✓'); sys.stdout.flush();"
                          " sys.stdout.buffer.write(b'\\xff\\n')")
    assert job["result"] == "héllo ✓\n\ufffd\n"


def test_timeout_kills_and_keeps_partial_output(open_server):
    job = open_server.run("import time\nprint('started', flush=True)\ntime.sleep(30)", timeout=1)
    assert (job["status"], job["error"], job["exit_code"]) == ("ERROR", "timeout", None)
    assert job["result"] == "started\n"
    assert 900 <= job["duration_ms"] < 5000


def test_default_timeout_is_ten_seconds(open_server):
    job = open_server.run("import time; time.sleep(60)")
    assert job["error"] == "timeout"
    assert 9500 <= job["duration_ms"] < 14000


def test_get_job_object_and_404(open_server):
    job_id = open_server.submit("print(1)", uid=3)
    resp = open_server.request("GET", f"/jobs/{job_id}")
    assert resp.status == 200 and isinstance(resp.json, dict)
    assert resp.json["job_id"] == job_id and resp.json["code"] == "print(1)"
    for path in ("/jobs/999999999", "/jobs/abc"):
        missing = open_server.request("GET", path)
        assert missing.status in (400, 404), missing
        assert "error" in missing.json and "code" in missing.json["error"]


def test_trailing_slashes(open_server):
    job_id = open_server.submit("print(1)")
    for path in ("/jobs/", f"/jobs/{job_id}/", "/users/1/", "/healthz/"):
        assert open_server.request("GET", path).status == 200, path
    assert open_server.request("POST", "/jobs/", {"uid": 1, "code": "1", "input": ""}).status == 201


def test_list_newest_first_filters_and_paging(open_server):
    uid = 4242
    ids = [open_server.submit(f"print({i})", uid=uid) for i in range(5)]
    for job_id in ids:
        open_server.wait_final(job_id)
    jobs = open_server.request("GET", f"/jobs?uid={uid}").json
    assert [j["job_id"] for j in jobs] == ids[::-1]
    assert all(set(j) >= {"job_id", "uid", "status", "result"} for j in jobs)
    root = open_server.request("GET", f"/?uid={uid}")
    assert root.status == 200 and root.json == jobs
    page = open_server.request("GET", f"/users/{uid}?limit=2")
    assert [j["job_id"] for j in page.json] == ids[:2:-1][:2]
    link = page.headers["Link"]
    assert 'rel="next"' in link and f"before={ids[3]}" in link
    nxt = open_server.request("GET", f"/users/{uid}?limit=2&before={ids[3]}").json
    assert [j["job_id"] for j in nxt] == [ids[2], ids[1]]
    done = open_server.request("GET", f"/jobs?uid={uid}&status=DONE").json
    assert len(done) == 5
    assert open_server.request("GET", f"/jobs?uid={uid}&status=ERROR").json == []
    assert "Link" not in open_server.request("GET", f"/jobs?uid={uid}&limit=10").headers


def test_a_page_of_large_outputs_is_cut_short_and_links_on(open_server):
    """~2 MiB of output per job: a page stops before 16 MiB of it and its Link leads on."""
    uid = 4343
    code = "import sys; sys.stdout.write('o' * 1040000); sys.stderr.write('e' * 1040000)"
    ids = [open_server.submit(code, uid=uid) for _ in range(9)]
    for job_id in ids:
        assert open_server.wait_final(job_id)["status"] == "DONE"
    first = open_server.request("GET", f"/users/{uid}?limit=100")
    assert [j["job_id"] for j in first.json] == ids[:0:-1]  # 8 of the 9, newest first
    assert all(len(j["result"]) == 1040000 for j in first.json)
    assert f"before={ids[1]}" in first.headers["Link"]
    rest = open_server.request("GET", f"/users/{uid}?limit=100&before={ids[1]}")
    assert [j["job_id"] for j in rest.json] == ids[:1] and "Link" not in rest.headers


def test_user_without_jobs_is_an_empty_array(open_server):
    resp = open_server.request("GET", "/users/987654")
    assert resp.status == 200 and resp.json == []


def test_browser_is_sent_to_the_dashboard(open_server):
    import urllib.request
    req = urllib.request.Request(open_server.url + "/", headers={"Accept": "text/html,*/*"})
    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(req)
        raise AssertionError("expected a redirect")
    except urllib.error.HTTPError as err:
        assert err.code == 302 and err.headers["Location"].endswith("ui/")
    assert open_server.request("GET", "/", headers={"Accept": "*/*"}).status == 200


class NoRedirect(__import__("urllib.request").request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.mark.parametrize("body,status,code", [
    (b"{not json", 400, "invalid_json"),
    (b"[1, 2]", 400, "invalid_json"),
    (b'{"uid": 1, "code": "print(1)", "input": "\\ud800"}', 400, "invalid_json"),
    ({"uid": 2**70, "code": "print(1)", "input": ""}, 400, "invalid_field"),
    ({"code": "print(1)", "input": ""}, 400, "missing_field"),
    ({"uid": -1, "code": "print(1)", "input": ""}, 400, "invalid_field"),
    ({"uid": True, "code": "print(1)", "input": ""}, 400, "invalid_field"),
    ({"uid": "1", "code": "print(1)", "input": ""}, 400, "invalid_field"),
    ({"uid": 1.5, "code": "print(1)", "input": ""}, 400, "invalid_field"),
    ({"uid": 1, "input": ""}, 400, "missing_field"),
    ({"uid": 1, "code": 5, "input": ""}, 400, "invalid_field"),
    ({"uid": 1, "code": "1", "input": 5}, 400, "invalid_field"),
    ({"uid": 1, "code": "1", "language": "cobol"}, 400, "unknown_language"),
    ({"uid": 1, "code": "1", "timeout": 0}, 400, "invalid_limit"),
    ({"uid": 1, "code": "1", "timeout": 100000}, 400, "invalid_limit"),
    ({"uid": 1, "code": "1", "timeout": "5"}, 400, "invalid_field"),
    ({"uid": 1, "code": "1", "io_weight": 5}, 400, "invalid_limit"),
    ({"uid": 1, "code": "1", "memory_mb": 1 << 20}, 400, "invalid_limit"),
    ({"uid": 1, "code": "x" * (256 * 1024 + 1)}, 413, "code_too_large"),
    ({"uid": 1, "code": "1", "input": "x" * (1024 * 1024 + 1)}, 413, "input_too_large"),
])
def test_bad_submissions(open_server, body, status, code):
    resp = open_server.request("POST", "/jobs", body)
    assert resp.status == status, resp
    assert resp.json["error"]["code"] == code
    assert resp.headers["Content-Type"].startswith("application/json")
    assert isinstance(resp.json["error"]["message"], str) and resp.json["error"]["message"]


def test_body_over_two_mib_is_413(open_server):
    # the answer comes before the body is read; the server then drains what the client still
    # sends, so the client always reads the 413 (it once reset the connection at random)
    for _ in range(10):
        resp = open_server.request("POST", "/jobs",
                                   b'{"uid": 1, "code": "' + b"x" * (3 << 20) + b'"}')
        assert resp.status == 413 and resp.json["error"]["code"] == "body_too_large"


def test_unsupported_media_type(open_server):
    resp = open_server.request("POST", "/jobs", b"<xml/>", headers={"Content-Type": "application/xml"})
    assert resp.status == 415 and resp.json["error"]["code"] == "unsupported_media_type"


def test_curl_style_form_label_is_read_as_json(open_server):
    resp = open_server.request("POST", "/jobs", b'{"uid": 1, "code": "print(5)", "input": ""}',
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 201


def test_misspelt_flags_are_refused_not_guessed(open_server):
    job_id = open_server.submit("import time; time.sleep(30)")
    resp = open_server.request("DELETE", f"/jobs/{job_id}?purge=ture")
    assert resp.status == 400 and resp.json["error"]["code"] == "invalid_parameter"
    assert open_server.request("GET", f"/jobs/{job_id}").json["status"] != "CANCELLED"
    for flag in ("maybe", "", "yes"):  # only an OpenAPI boolean (or 1/0) is read
        resp = open_server.request("POST", f"/jobs?wait={flag}", {"uid": 1, "code": "1"})
        assert resp.status == 400, (flag, resp)
    open_server.request("DELETE", f"/jobs/{job_id}")


@pytest.mark.parametrize("query", ["limit=0", "limit=10001", "limit=x", "before=-1",
                                   "status=SLEEPING", "uid=-3", "uid=abc"])
def test_bad_list_queries(open_server, query):
    resp = open_server.request("GET", f"/jobs?{query}")
    assert resp.status == 400 and resp.json["error"]["code"] == "invalid_parameter"


def test_unknown_routes_and_methods_are_json(open_server):
    resp = open_server.request("GET", "/nope")
    assert resp.status == 404 and resp.json["error"]["code"] == "not_found"
    resp = open_server.request("PUT", "/jobs", {"x": 1})
    assert resp.status == 405 and "error" in resp.json


def test_cancel_running_job_kills_it(open_server):
    job_id = open_server.submit("import time\nprint('up', flush=True)\ntime.sleep(30)")
    open_server.wait_status(job_id, "RUNNING")
    resp = open_server.request("DELETE", f"/jobs/{job_id}")
    assert resp.status == 200
    assert resp.json["status"] == "CANCELLED" and resp.json["error"] == "cancelled"
    assert resp.json["exit_code"] is None
    job = open_server.wait_final(job_id)
    assert job["status"] == "CANCELLED"
    again = open_server.request("DELETE", f"/jobs/{job_id}")
    assert again.status == 409 and again.json["error"]["code"] == "already_final"


def test_cancel_waiting_job_never_runs(server_factory):
    srv = server_factory("--auth", "open", "--slots", "1")
    blocker = srv.submit("import time; time.sleep(30)")
    srv.wait_status(blocker, "RUNNING")
    waiting = srv.submit("print('should not run')")
    assert srv.request("GET", f"/jobs/{waiting}").json["status"] == "WAITING"
    resp = srv.request("DELETE", f"/jobs/{waiting}")
    assert resp.json["status"] == "CANCELLED" and resp.json["started_at"] is None
    srv.request("DELETE", f"/jobs/{blocker}")
    job = srv.wait_final(waiting)
    assert job["status"] == "CANCELLED" and job["result"] == "" and job["attempts"] == 0


def test_purge_removes_final_job_for_good(open_server):
    job_id = open_server.submit("print(1)")
    open_server.wait_final(job_id)
    resp = open_server.request("DELETE", f"/jobs/{job_id}?purge=true")
    assert resp.status == 204 and resp.body == b""
    assert open_server.request("GET", f"/jobs/{job_id}").status == 404
    assert open_server.request("DELETE", f"/jobs/{job_id}?purge=true").status == 404
    newer = open_server.submit("print(2)")
    assert newer > job_id  # ids are never reused


def test_purge_refuses_unfinished_job(open_server):
    job_id = open_server.submit("import time; time.sleep(30)")
    resp = open_server.request("DELETE", f"/jobs/{job_id}?purge=true")
    assert resp.status == 409 and resp.json["error"]["code"] == "not_final"
    assert open_server.request("DELETE", f"/jobs/{job_id}").status == 200


def test_healthz_and_metrics(open_server):
    health = open_server.request("GET", "/healthz")
    assert health.status == 200 and health.json["ok"] is True
    metrics = open_server.request("GET", "/metrics")
    assert metrics.status == 200 and b"orq_jobs_submitted_total" in metrics.body


def test_openapi_document_is_served(open_server):
    resp = open_server.request("GET", "/openapi.json")
    assert resp.status == 200 and resp.json["openapi"].startswith("3.")


