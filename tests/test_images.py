"""Images (issue 13): built with mmdebstrap, imported from OCI layouts, OCI archives and docker
save archives made offline with umoci/skopeo; jobs run inside them; bad input is one clear line
and leaves nothing behind; a running server sees images come and go."""
from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import OrqServer
from images_support import (
    DEBIAN,
    busybox_layout,
    copy_data_dir,
    debian_template,
    docker_archive,
    image_cmd,
    oci_archive,
)
from reliability_support import process_tree
from reliability_support import wait_gone as wait_all_gone
from test_crash import wait_until
from test_hostile import wait_gone
from test_openapi import document_allows_exactly_what_is_accepted
from test_ws import connect


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("oci")
    layout = busybox_layout(base / "one")
    other = busybox_layout(base / "two", marker="two")
    return {"layout": layout, "oci-archive": oci_archive(layout, base / "one.tar"),
            "docker-archive": docker_archive(layout, base / "docker.tar"), "other": other}


@pytest.fixture(scope="module")
def srv(tmp_path_factory, layouts):
    """A server whose data dir holds the cached Debian image "deb" and busybox "bb"."""
    data = copy_data_dir(debian_template(*DEBIAN), tmp_path_factory.mktemp("img") / "data")
    image_cmd(data, "import", "bb", str(layouts["layout"]))
    server = OrqServer(data, ["--auth", "open", "--max-timeout-s", "20"]).start()
    yield server
    server.kill()


def run(srv: OrqServer, code: str, **fields) -> dict:
    job = srv.run(code, **fields)
    assert not (job["error"] or "").startswith("backend"), job
    return job


def stored(srv: OrqServer) -> set[str]:
    return {p.name for p in (srv.data_dir / "images" / "store").iterdir()}


def leftovers(srv: OrqServer) -> list[str]:
    return [p.name for p in (srv.data_dir / "images" / "tmp").iterdir()]


def test_images_and_runtimes_are_listed(srv):
    images = {i["name"]: i for i in srv.request("GET", "/images").json}
    assert set(images) >= {"host", "deb", "bb"}
    deb = images["deb"]
    assert deb["digest"].startswith("sha256:") and deb["size_bytes"] > 50_000_000
    assert deb["source"] == "build: bookworm python3"
    assert {r["language"] for r in deb["runtimes"]} == {"python", "bash", "sh", "perl"}  # perl-base
    assert [r["language"] for r in images["bb"]["runtimes"]] == ["sh"]
    assert {r["language"] for r in images["host"]["runtimes"]} == {"python", "bash", "sh"}
    runtimes = srv.request("GET", "/runtimes").json
    assert {"language": "sh", "version": "posix", "aliases": ["posix"], "image": "bb",
            "compiled": False} in runtimes


def test_a_debian_image_is_the_jobs_whole_file_system(srv):
    job = run(srv, "import os, sys\nprint(open('/etc/debian_version').read().strip())\n"
                   "print(sys.executable, os.getuid())\nprint(sorted(os.listdir('/')))",
              image="deb")
    assert job["status"] == "DONE", job
    version, exe, listing = job["result"].splitlines()
    assert version.startswith("12.") and exe == "/usr/bin/python3 65534"
    assert "job" in listing and "root" in listing
    deb = next(i for i in srv.request("GET", "/images").json if i["name"] == "deb")
    assert (job["image"], job["image_digest"], job["language"]) == ("deb", deb["digest"], "python")
    assert job["version"] == next(r["version"] for r in deb["runtimes"] if r["language"] == "python")


@pytest.mark.parametrize("kind", ["layout", "oci-archive", "docker-archive"])
def test_oci_and_docker_images_come_out_right(srv, layouts, kind, tmp_path):
    name = f"bb-{kind}"
    image_cmd(srv.data_dir, "import", name, str(layouts[kind]))
    job = run(srv, "cat /etc/marker /etc/link; ls /etc/doomed 2>&1; ls /opt/dir; "
                   "stat -c '%i %h' /etc/hard /etc/layer2; echo \"$ORQ_MARK\"; "
                   "readlink /bin/sh; id -u",
              language="sh", image=name)
    assert job["status"] == "DONE", job
    lines = job["result"].splitlines()
    assert lines[:2] == ["marker one", "marker one"]  # file and symlink
    assert "No such file" in lines[2]  # the whiteout removed it
    assert lines[3] == "c"  # the opaque directory replaced a and b
    assert lines[4] == lines[5] and lines[4].endswith(" 2")  # one inode, two names
    assert lines[6:] == ["from-config", "busybox", "65534"]


def test_one_content_is_stored_once(srv, layouts):
    image_cmd(srv.data_dir, "import", "same-a", str(layouts["layout"]))
    image_cmd(srv.data_dir, "import", "same-b", str(layouts["docker-archive"]))
    images = {i["name"]: i["digest"] for i in srv.request("GET", "/images").json}
    assert images["same-a"] == images["same-b"] == images["bb"]


def test_nothing_of_the_host_is_visible_in_an_image(srv):
    code = ("ls /usr/bin/python3 /usr/lib/x86_64-linux-gnu /usr/share 2>&1 | head -3; "
            f"ls {srv.data_dir} 2>&1; cat /etc/hostname /etc/shadow 2>&1; "
            "ls /run/orq 2>&1; ls /root 2>&1; echo; env")
    job = run(srv, code, language="sh", image="bb")
    out = job["result"]
    assert out.count("No such file") >= 6, out
    assert "orq-hostile" not in out and "AWS" not in out and "ORQ_DATA" not in out


def test_bad_image_requests_are_400s(srv):
    cases = [({"image": "nope"}, "unknown_image"),
             ({"image": "bb", "language": "python"}, "runtime_not_in_image"),
             ({"image": "bb", "language": "bash"}, "runtime_not_in_image"),
             ({"image": "deb", "language": "sh", "version": "9"}, "unknown_version"),
             ({"language": "cobol"}, "unknown_language")]
    for fields, code in cases:
        resp = srv.request("POST", "/jobs", {"uid": 1, "code": "echo", **fields})
        assert resp.status == 400 and resp.json["error"]["code"] == code, (fields, resp)


def test_long_running_command_streams_and_stops_on_cancel(srv):
    ws = connect(srv)
    job_id = srv.submit("while true; do date; sleep 0.3; done", language="sh", image="bb",
                        timeout=20)
    ws.send(json.dumps({"subscribe": {"job_id": job_id}}))
    lines, deadline = [], time.monotonic() + 20
    while len(lines) < 3 and time.monotonic() < deadline:
        event = json.loads(ws.recv())
        if event.get("type") == "output" and event["job_id"] == job_id:
            lines += event["data"].splitlines()
    assert len(lines) >= 3, lines
    job = srv.request("DELETE", f"/jobs/{job_id}").json
    assert job["status"] == "CANCELLED"
    ws.close()
    assert wait_gone("sleep 0.3", timeout=5) == []


def prestarted(srv: OrqServer) -> int:
    return srv.request("GET", "/healthz").json["prestarted"]


def test_jobs_like_the_last_one_run_on_a_sandbox_set_up_ahead(srv, layouts):
    """After a job in an image, a sandbox for the next job like it (same image, environment,
    command and limits) is set up and parked; that job only writes its program and runs.
    It sees exactly what a cold job sees, and nothing of the job before it."""
    code = "head -c4 /job/main.sh; echo; ls -A /job /tmp; cat; echo $$ >/tmp/mine; id -u; exit 3"
    first = run(srv, code, language="sh", image="bb", input="in-1\n")
    before = prestarted(srv)
    for n in range(2, 5):
        job = run(srv, code, language="sh", image="bb", input=f"in-{n}\n")
        assert job["exit_code"] == 3 and job["error"] is None, job
        assert job["result"] == first["result"].replace("in-1", f"in-{n}"), (first, job)
    assert job["result"].splitlines() == ["head", "/job:", "main.sh", "", "/tmp:", "in-4", "65534"]
    assert prestarted(srv) >= before + 2  # one may still be on its way when the next comes
    # other limits (a longer timeout sets another RLIMIT_CPU) are another kind of job
    other = run(srv, "ulimit -t", language="sh", image="bb", timeout=17)
    assert other["result"] == "19\n", other  # the timeout + 2 s, as on a cold start
    # a root removed and made again with the same content is another directory: the job
    # runs on the new one, never on a sandbox still holding the removed one
    image_cmd(srv.data_dir, "import", "again", str(layouts["other"]))
    assert run(srv, "cat /etc/marker", language="sh", image="again")["result"] == "marker two\n"
    run(srv, "cat /etc/marker", language="sh", image="again")
    image_cmd(srv.data_dir, "rm", "again")
    image_cmd(srv.data_dir, "import", "again", str(layouts["other"]))
    job = run(srv, "cat /etc/marker", language="sh", image="again")
    assert job["result"] == "marker two\n", job
    image_cmd(srv.data_dir, "rm", "again")


def test_a_stop_ends_the_sandboxes_started_ahead(tmp_path, layouts):
    """A sandbox parked for the next job is the server's like any other: a stop ends it and
    removes its scratch directory; nothing is left running or on disk."""
    data = tmp_path / "data"
    image_cmd(data, "import", "bb", str(layouts["layout"]))
    server = OrqServer(data, ["--auth", "open"]).start()
    try:
        run(server, "echo hi", language="sh", image="bb")
        scratch = data / "cache" / "tmp"
        assert wait_until(lambda: [p.name[:4] for p in scratch.iterdir()] == ["job-"], 10)
        tree = process_tree(server.proc.pid)
        assert any("/job/main.sh" in cmd for cmd in tree.values()), tree  # parked for sh
        assert server.stop() == 0
        assert wait_all_gone(tree, 5) == {}, "a stop left processes"
        assert list(scratch.iterdir()) == []
    finally:
        server.kill()


def test_server_sees_images_come_and_go_and_jobs_keep_their_digest(srv, layouts):
    name = "moving"
    assert srv.request("POST", "/jobs", {"uid": 1, "code": "echo", "language": "sh",
                                         "image": name}).status == 400
    image_cmd(srv.data_dir, "import", name, str(layouts["layout"]))
    first = run(srv, "cat /etc/marker", language="sh", image=name)
    assert first["result"] == "marker one\n"
    image_cmd(srv.data_dir, "import", name, str(layouts["other"]))  # a rebuild: new content
    second = run(srv, "cat /etc/marker", language="sh", image=name)
    assert second["result"] == "marker two\n"
    assert second["image_digest"] != first["image_digest"]
    assert srv.request("GET", f"/jobs/{first['job_id']}").json["image_digest"] == \
        first["image_digest"]
    image_cmd(srv.data_dir, "rm", name)
    resp = srv.request("POST", "/jobs", {"uid": 1, "code": "echo", "language": "sh",
                                         "image": name})
    assert resp.json["error"]["code"] == "unknown_image"
    assert second["image_digest"].removeprefix("sha256:") not in stored(srv)


def test_removing_an_image_in_use_is_refused(srv, layouts):
    image_cmd(srv.data_dir, "import", "busy", str(layouts["other"]))
    job_id = srv.submit("sleep 15", language="sh", image="busy", timeout=20)
    srv.wait_status(job_id, "RUNNING")
    proc = image_cmd(srv.data_dir, "rm", "busy", check=False)
    assert proc.returncode == 1, proc
    assert proc.stderr.startswith("orq-server: image 'busy' is used by 1 unfinished job(s)")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    srv.request("DELETE", f"/jobs/{job_id}")
    image_cmd(srv.data_dir, "rm", "busy")


def test_bad_image_commands_fail_in_one_line_and_leave_nothing(srv, tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "junk.tar").write_bytes(b"this is not a tar archive" * 100)
    (tmp_path / "empty.tar").write_bytes(b"")
    subprocess.run(["tar", "-C", tmp_path / "plain", "-cf", tmp_path / "other.tar", "."],
                   check=True)
    before = stored(srv)
    cases = [
        (("import", "x", str(tmp_path / "missing")), "no such file"),
        (("import", "x", str(tmp_path / "plain")), "not an OCI image layout"),
        (("import", "x", str(tmp_path / "junk.tar")), "not a readable tar"),
        (("import", "x", str(tmp_path / "other.tar")), "neither oci-layout nor manifest.json"),
        (("import", "a/b", str(tmp_path / "plain")), "bad image name"),
        (("import", "..", str(tmp_path / "plain")), "bad image name"),
        (("import", "host", str(tmp_path / "plain")), "built-in image"),
        (("rm", "never-was"), "there is no image"),
        (("pull", "x", "docker://registry.invalid/nothing:1"), "cannot pull"),
        (("build", "x", "--packages", "orq-no-such-package"), "orq-no-such-package"),
    ]
    for args, words in cases:
        proc = image_cmd(srv.data_dir, *args, check=False)
        assert proc.returncode == 1, (args, proc)
        message = proc.stderr.strip().splitlines()[-1]
        assert message.startswith("orq-server: ") and words in message, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert leftovers(srv) == [] and stored(srv) == before, args
    assert srv.request("GET", "/healthz").json["ok"]
    assert run(srv, "echo fine", language="sh", image="bb")["result"] == "fine\n"


def test_concurrent_imports_of_two_names(srv, layouts):
    results = {}

    def add(name: str, path: Path) -> None:
        results[name] = image_cmd(srv.data_dir, "import", name, str(path), check=False)
    threads = [threading.Thread(target=add, args=(f"par-{i}", layouts[kind]))
               for i, kind in enumerate(("oci-archive", "other", "docker-archive"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(p.returncode == 0 for p in results.values()), results
    names = {i["name"] for i in srv.request("GET", "/images").json}
    assert {"par-0", "par-1", "par-2"} <= names and leftovers(srv) == []


def test_cli_lists_images_and_runs_a_file_in_one(srv, orq, tmp_path):
    listing = orq("get", "images", server=srv)
    assert listing.returncode == 0 and listing.stdout.startswith("NAME"), listing
    assert {"host", "deb", "bb"} <= {line.split()[0] for line in listing.stdout.splitlines()}
    runtimes = json.loads(orq("-o", "json", "get", "runtimes", server=srv).stdout)
    assert any(r["image"] == "bb" and r["language"] == "sh" for r in runtimes)
    script = tmp_path / "look.sh"
    script.write_text("cat /etc/marker\n")
    proc = orq("submit", str(script), "--language", "sh", "--image", "bb", "--wait", server=srv)
    assert (proc.returncode, proc.stdout) == (0, "marker one\n"), proc
    proc = orq("submit", str(script), "--image", "nope", "--wait", server=srv)
    assert proc.returncode == 2 and "there is no image 'nope'" in proc.stderr, proc


def test_served_document_allows_exactly_the_combinations_that_resolve(srv):
    """With several images, each language/version/image the document allows is accepted and
    each it leaves out is refused (the runtime part of the OpenAPI document)."""
    images = srv.request("GET", "/openapi.json").json["components"]["schemas"]["JobRequest"][
        "properties"]["image"]["enum"]
    assert {"deb", "bb", "host", None} <= set(images)
    document_allows_exactly_what_is_accepted(srv)


def test_concurrent_builds_of_two_names(srv):
    """Two mmdebstrap builds at once, each into its own locked work dir."""
    results = {}

    def build(name: str, package: str) -> None:
        results[name] = image_cmd(srv.data_dir, "build", name, "--packages", package,
                                  check=False)
    threads = [threading.Thread(target=build, args=args)
               for args in (("with-hello", "hello"), ("with-bc", "bc"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(p.returncode == 0 for p in results.values()), results
    assert "==> image with-hello: probing its runtimes" in results["with-hello"].stderr
    assert leftovers(srv) == []
    assert run(srv, "hello", language="sh", image="with-hello")["result"] == "Hello, world!\n"
    assert run(srv, "echo 6*7 | bc", language="sh", image="with-bc")["result"] == "42\n"
