"""The OpenAPI document: valid, filled in from the running server's settings, and matching
the routes and the real answers (tests/test_fuzz.py and test_generated_client.py judge it
with outside tools)."""
from __future__ import annotations

import itertools
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import tornado.web
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from server import openapi
from server.config import Config
from server.routes import routes
from server.runtimes import RECIPES

DOC = openapi.template()
METHODS = ("get", "post", "put", "patch", "delete", "head", "options")


@pytest.mark.parametrize("config", [Config(), Config(auth="open"), Config(metrics_public=True),
                                    Config(max_timeout_s=3, max_memory_mb=100, max_cpus=0.5)])
def test_document_is_valid_openapi(config) -> None:
    doc = openapi.document(config)
    validate(doc)
    assert doc["openapi"].startswith("3.0")


def test_shipped_file_is_the_document_of_a_default_server() -> None:
    assert openapi.document(Config()) == DOC


def test_served_document_is_filled_in_from_the_config(open_server) -> None:
    resp = open_server.request("GET", "/openapi.json")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/json")
    served, runtimes = resp.json, open_server.request("GET", "/runtimes").json
    request = served["components"]["schemas"]["JobRequest"]
    expected = openapi.document(Config(auth="open"))
    shipped = expected["components"]["schemas"]["JobRequest"]["not"]["anyOf"]
    assert request["not"]["anyOf"][:len(shipped)] == shipped
    request["not"]["anyOf"] = shipped  # the rest: the runtimes of this server (next test)
    for name in ("language", "version", "image"):
        del request["properties"][name]["enum"]
    assert request["properties"]["backend"]["enum"] == ["local", None]  # what this one runs
    request["properties"]["backend"]["enum"] = expected["components"]["schemas"][
        "JobRequest"]["properties"]["backend"]["enum"]
    assert served == expected
    assert {r["language"] for r in runtimes} == {"python", "bash", "sh"}


def document_allows_exactly_what_is_accepted(srv, **choices) -> None:
    """Every JobRequest made of these values (each field's list; the enum the document
    gives where none is passed) is accepted (201) exactly when the served document says it
    is valid: the ranges, enums and ``not`` combinations are the server's own."""
    request = srv.request("GET", "/openapi.json").json["components"]["schemas"]["JobRequest"]
    validator = OAS30Validator(request)
    fields = {name: choices.get(name, request["properties"][name].get("enum"))
              for name in ("language", "version", "image", *choices)}
    for values in itertools.product(*fields.values()):
        body = {"uid": 1, "code": "", **{k: v for k, v in zip(fields, values)
                                         if v is not OMIT}}
        status = srv.request("POST", "/jobs", body).status
        assert (status == 201) == validator.is_valid(body), (body, status)


OMIT = object()  # a field left out of the body


def test_served_runtime_choice_is_exactly_what_resolves(open_server) -> None:
    """Every language, version and image combination the document allows is accepted, and
    the ones it leaves out (a version of another language) are refused."""
    document_allows_exactly_what_is_accepted(open_server)


def test_job_languages_are_the_recipe_tables() -> None:
    assert DOC["components"]["schemas"]["Job"]["properties"]["language"]["enum"] == \
        [r.language for r in RECIPES]


def test_served_limits_are_the_enforced_ones(server_factory) -> None:
    """Each limit the document states is exactly the server's: its maximum is accepted, a
    little more is refused, and its default is what a job gets."""
    srv = server_factory("--auth", "open", "--timeout-s", "2", "--max-timeout-s", "3",
                         "--max-memory-mb", "100", "--cpus", "0.25", "--max-cpus", "0.5")
    props = srv.request("GET", "/openapi.json").json["components"]["schemas"]["JobRequest"][
        "properties"]
    assert [props[name]["maximum"] for name in ("timeout", "memory_mb", "cpus")] == [3, 100, 0.5]
    for name, *_ in openapi.LIMITS:
        low, high = props[name]["minimum"], props[name]["maximum"]
        for value, status in ((low, 201), (high, 201), (high + 1, 400), (low / 2, 400)):
            if isinstance(low, int) and not isinstance(value, int):
                value = low - 1
            resp = srv.request("POST", "/jobs", {"uid": 1, "code": "", name: value})
            assert resp.status == status, (name, value, resp)
    limits = srv.run("")["limits"]
    assert (limits["timeout_s"], limits["cpus"]) == (props["timeout"]["default"],
                                                     props["cpus"]["default"]) == (2, 0.25)


def test_credentials_follow_the_auth_mode() -> None:
    required, open_doc = openapi.document(Config()), openapi.document(Config(auth="open"))
    operations = [(path, method) for path, ops in DOC["paths"].items() for method in ops
                  if method in METHODS]
    assert all({} in open_doc["paths"][p][m]["security"] for p, m in operations)
    assert {} not in required["paths"]["/jobs"]["get"]["security"]
    public = openapi.document(Config(metrics_public=True))["paths"]["/metrics"]["get"]
    assert {} in public["security"]


def test_request_bodies_are_json_only() -> None:
    bodies = [op["requestBody"] for ops in DOC["paths"].values() for op in ops.values()
              if isinstance(op, dict) and "requestBody" in op]
    assert len(bodies) >= 4
    for body in bodies:
        assert set(_resolve(body)["content"]) == {"application/json"}, body


def _route_table() -> dict[str, set[str]]:
    """OpenAPI path -> methods the handler implements, from server/routes.py itself."""
    app = SimpleNamespace(config=SimpleNamespace(static_dir=Path("/nonexistent")))
    table: dict[str, set[str]] = {}
    for pattern, handler, _ in routes(app):
        if pattern in (r".*", r"/ui") or pattern.startswith("/ui/"):
            continue  # the JSON 404 catch-all and the dashboard's static files
        path = re.sub(r"\(\[\^/\]\+\)", "{}", pattern.removesuffix("/?")) or "/"
        base = tornado.web.RequestHandler
        table[path] = {m.lower() for m in handler.SUPPORTED_METHODS
                       if getattr(handler, m.lower(), None) is not getattr(base, m.lower(), None)}
    return table


def test_every_route_is_documented_and_vice_versa() -> None:
    documented = {re.sub(r"\{[^}]+\}", "{}", path): {m for m in ops if m in METHODS}
                  for path, ops in DOC["paths"].items()}
    assert documented == _route_table()


def test_public_operations_need_no_credentials() -> None:
    public = {(p, m) for p, ops in DOC["paths"].items() for m, op in ops.items()
              if m in METHODS and op.get("security") == [{}]}
    assert public == {("/healthz", "get"), ("/openapi.json", "get"), ("/users", "post")}
    assert set(DOC["components"]["securitySchemes"]) == {"basic", "bearer"}


# -- real answers conform ---------------------------------------------------------------

def _resolve(node: dict) -> dict:
    while "$ref" in node:
        section, name = node["$ref"].split("/")[-2:]
        node = DOC["components"][section][name]
    return node


def conforms(method: str, path: str, resp) -> None:
    """The status is documented for the operation and the JSON body matches its schema."""
    op = DOC["paths"][path][method.lower()]
    assert str(resp.status) in op["responses"], (method, path, resp)
    spec = _resolve(op["responses"][str(resp.status)])
    if "content" not in spec:
        assert resp.body == b"", resp
        return
    schema = next(iter(spec["content"].values()))["schema"]
    if "application/json" in spec["content"]:
        body = resp.json
        OAS30Validator({**schema, "components": DOC["components"]}).validate(body)
    else:
        assert resp.headers["Content-Type"].startswith("text/plain")


def test_open_mode_flow_conforms(open_server) -> None:
    srv = open_server
    created = srv.request("POST", "/jobs", {"uid": 7, "code": "import time; time.sleep(30)"})
    conforms("POST", "/jobs", created)
    job_id = created.json["job_id"]
    conforms("GET", "/jobs/{job_id}", srv.request("GET", f"/jobs/{job_id}"))
    conforms("DELETE", "/jobs/{job_id}", srv.request("DELETE", f"/jobs/{job_id}"))
    conforms("DELETE", "/jobs/{job_id}", srv.request("DELETE", f"/jobs/{job_id}"))  # 409
    done = srv.request("POST", "/jobs?wait=true", {"uid": 7, "code": "print(1)", "input": ""})
    conforms("POST", "/jobs", done)
    failed = srv.request("POST", "/jobs?wait=true", {"uid": 7, "code": "while True: pass",
                                                     "timeout": 0.5})
    conforms("POST", "/jobs", failed)
    assert failed.json["error"] == "timeout" and failed.json["exit_code"] is None
    for query in ("", "?limit=1", "?status=done&uid=7", "?before=2"):
        conforms("GET", "/jobs", srv.request("GET", "/jobs" + query))
    conforms("GET", "/", srv.request("GET", "/?limit=1"))
    conforms("GET", "/users/{uid}", srv.request("GET", "/users/7"))
    conforms("DELETE", "/jobs/{job_id}",
             srv.request("DELETE", f"/jobs/{done.json['job_id']}?purge=true"))
    conforms("GET", "/jobs/{job_id}", srv.request("GET", f"/jobs/{done.json['job_id']}"))  # 404
    conforms("GET", "/healthz", srv.request("GET", "/healthz"))
    conforms("GET", "/metrics", srv.request("GET", "/metrics"))


@pytest.mark.parametrize("method, path, body, status", [
    ("POST", "/jobs", b"{nope", 400),
    ("POST", "/jobs", {"uid": -1, "code": ""}, 400),
    ("POST", "/jobs", {"uid": 1, "code": "", "language": "ruby"}, 400),
    ("POST", "/jobs", {"uid": 1, "code": "x" * (256 * 1024 + 1)}, 413),
    ("POST", "/jobs", {"uid": 1, "code": "", "io_weight": 5}, 400),
    ("GET", "/jobs?limit=0", None, 400),
    ("GET", "/jobs?status=nope", None, 400),
    ("GET", "/jobs/abc", None, 400),
    # regressions found by the fuzzer: these were 500s
    ("GET", "/jobs/99999999999999999999999", None, 400),
    ("GET", "/jobs?before=99999999999999999999999", None, 400),
    ("GET", "/users/99999999999999999999999", None, 400),
    ("POST", "/jobs", {"uid": 99999999999999999999999, "code": ""}, 400),
    ("POST", "/jobs", b'{"uid": 1, "code": "\\ud800"}', 400),
    ("POST", "/users", {"uid": 1, "password": "p" * 100}, 400),
    ("GET", "/ws", None, 400),
])
def test_bad_input_is_a_documented_json_error(open_server, method, path, body, status) -> None:
    resp = open_server.request(method, path, body)
    assert resp.status == status, resp
    template = re.sub(r"/\d+$", "/{uid}", path.split("?")[0]) if path.startswith("/users/") \
        else re.sub(r"/jobs/[^/?]+", "/jobs/{job_id}", path.split("?")[0])
    conforms(method, template, resp)


@pytest.mark.parametrize("ctype, body, status", [
    ("text/xml", b'{"uid": 1, "code": ""}', 415),
    # a real form body (what a client made from a form-declaring document sends) is 415 ...
    ("application/x-www-form-urlencoded", b"uid=1&code=print%281%29", 415),
    ("text/plain", b"uid=1", 415),
    # ... while JSON labelled as `curl -d` labels it is read, an undocumented courtesy
    ("application/x-www-form-urlencoded", b'{"uid": 1, "code": ""}', 201),
    ("text/plain", b'{"uid": 1, "code": ""}', 201),
])
def test_415_for_other_content_types(open_server, ctype, body, status) -> None:
    resp = open_server.request("POST", "/jobs", body, headers={"Content-Type": ctype})
    assert resp.status == status, resp
    if status == 415:
        conforms("POST", "/jobs", resp)
        assert resp.json["error"]["code"] == "unsupported_media_type"


def test_405_is_json_and_lists_allowed_methods(open_server) -> None:
    resp = open_server.request("PUT", "/jobs/1", b"{}")
    assert resp.status == 405 and resp.json["error"]["code"] == "method_not_allowed"
    assert resp.headers["Allow"] == "GET, DELETE"


def test_auth_mode_flow_conforms(auth_server) -> None:
    srv = auth_server
    conforms("POST", "/users", srv.request("POST", "/users", {"uid": 4242, "password": "pw-4242-long"}))
    conforms("POST", "/users", srv.request("POST", "/users", {"uid": 4242, "password": "pw-4242-long"}))
    me = (4242, "pw-4242-long")
    conforms("GET", "/jobs", srv.request("GET", "/jobs"))  # 401
    conforms("GET", "/jobs", srv.request("GET", "/jobs?uid=0", auth=me))  # 403
    conforms("GET", "/users/{uid}", srv.request("GET", "/users/0", auth=me))  # 403
    conforms("GET", "/metrics", srv.request("GET", "/metrics", auth=me))  # 403
    conforms("POST", "/jobs", srv.request("POST", "/jobs", {"uid": 1, "code": ""}, auth=me))
    login = srv.request("POST", "/auth/token", {"uid": 4242, "password": "pw-4242-long"})
    conforms("POST", "/auth/token", login)
    token = login.json["token"]
    job = srv.request("POST", "/jobs?wait=true", {"uid": 4242, "code": "print(2)"}, token=token)
    conforms("POST", "/jobs", job)
    conforms("GET", "/jobs/{job_id}", srv.request("GET", f"/jobs/{job.json['job_id']}", auth=(0, "admin-password")))
    conforms("DELETE", "/auth/token", srv.request("DELETE", "/auth/token", token=token))
    conforms("GET", "/jobs", srv.request("GET", "/jobs", token=token))  # 401, revoked
    conforms("POST", "/auth/token", srv.request("POST", "/auth/token",
                                                {"uid": 4242, "password": "x" * 100}))  # 401
