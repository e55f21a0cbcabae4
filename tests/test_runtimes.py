"""Runtimes (issue 14): every language of the recipe table, in an image built with all of them:
stdin, exit codes, runtime and compile errors, time and memory limits, multi-file programs,
aliases and versions, the compile cache, and hostile jobs in C and JavaScript."""
from __future__ import annotations

import concurrent.futures
import json

import pytest
from conftest import OrqServer
from images_support import LANGS, copy_data_dir, debian_template
from runtime_programs import BROKEN, CRASH, EXIT3, HELLO, HOG, MULTI, PROGRAMS, SPIN

from server.runtimes import BY_LANGUAGE

IMAGE = LANGS[0]


@pytest.fixture(scope="module")
def data_template():
    return debian_template(*LANGS)


@pytest.fixture(scope="module")
def srv(tmp_path_factory, data_template):
    data = copy_data_dir(data_template, tmp_path_factory.mktemp("langs") / "data")
    server = OrqServer(data, ["--auth", "open", "--max-timeout-s", "20"]).start()
    yield server
    server.kill()


def run(srv: OrqServer, language: str, program, **fields) -> dict:
    body = {"files": [{"name": n, "content": c} for n, c in program]} \
        if isinstance(program, list) else {"code": program}
    resp = srv.request("POST", "/jobs?wait=true", {"uid": 1, "input": "", "language": language,
                                                   "image": IMAGE, **body, **fields})
    assert resp.status == 200, resp
    job = resp.json
    assert not (job["error"] or "").startswith("backend"), job
    return job


def test_compilers_and_jits_run_under_the_seccomp_filter(srv):
    """Every test here runs under the jobs' seccomp filter (issue 16); these loops are long
    enough for the JVM's and V8's JIT to compile them."""
    assert srv.request("GET", "/healthz").json["seccomp"] is True
    java = ("public class Main { public static void main(String[] a) { long s = 0;"
            " for (int i = 0; i < 50000000; i++) s += i % 7; System.out.println(s > 0); } }")
    node = "let s = 0; for (let i = 0; i < 50000000; i++) s += i % 7; console.log(s > 0);"
    for language, code in (("java", java), ("javascript", node)):
        job = run(srv, language, code, timeout=20)
        assert (job["status"], job["result"]) == ("DONE", "true\n"), job


def test_every_runtime_is_listed_with_its_version(srv):
    runtimes = {r["language"]: r for r in srv.request("GET", "/runtimes").json
                if r["image"] == IMAGE}
    assert set(runtimes) == set(PROGRAMS)
    for language, entry in runtimes.items():
        assert entry["compiled"] == BY_LANGUAGE[language].compiled
        assert entry["version"][0].isdigit() or entry["version"] == "posix", entry
    assert runtimes["java"]["version"].startswith("17.")
    assert runtimes["c"]["aliases"] == ["gcc"]


@pytest.mark.parametrize("language", sorted(PROGRAMS))
def test_hello_reads_stdin(srv, language):
    job = run(srv, language, PROGRAMS[language][HELLO], input="world\n")
    assert (job["status"], job["result"], job["exit_code"]) == ("DONE", "hello world\n", 0), job
    assert (job["image"], job["language"]) == (IMAGE, language)
    compiled = BY_LANGUAGE[language].compiled
    assert (job["compile"] is not None) == compiled, job
    if compiled:
        assert job["compile"]["exit_code"] == 0 and job["compile"]["duration_ms"] >= 0


@pytest.mark.parametrize("language", sorted(PROGRAMS))
def test_exit_code_and_runtime_error(srv, language):
    job = run(srv, language, PROGRAMS[language][EXIT3])
    assert (job["status"], job["exit_code"], job["error"]) == ("ERROR", 3, None), job
    job = run(srv, language, PROGRAMS[language][CRASH])
    assert job["status"] == "ERROR" and job["exit_code"] not in (0, None), job
    assert job["error"] is None, job


@pytest.mark.parametrize("language", sorted(lang for lang in PROGRAMS if BROKEN in PROGRAMS[lang]))
def test_compile_error_runs_nothing(srv, language):
    job = run(srv, language, PROGRAMS[language][BROKEN])
    assert (job["status"], job["error"], job["exit_code"]) == ("ERROR", "compile", None), job
    assert job["compile"]["exit_code"] not in (0, None) and job["compile"]["output"], job
    assert job["compile"]["cached"] is False and job["result"] == "" and job["stderr"] == ""


@pytest.mark.parametrize("language", sorted(PROGRAMS))
def test_timeout(srv, language):
    job = run(srv, language, PROGRAMS[language][SPIN], timeout=1.5)
    assert (job["status"], job["error"], job["exit_code"]) == ("ERROR", "timeout", None), job


@pytest.mark.parametrize("language", sorted(PROGRAMS))
def test_memory_limit(srv, language):
    job = run(srv, language, PROGRAMS[language][HOG], memory_mb=192, timeout=20)
    assert job["status"] == "ERROR", job
    # the kernel's OOM killer (error "memory"), or the runtime's own heap limit sized from
    # the job's memory (the JVM's OutOfMemoryError, an allocation failure) ending the program
    own = any(word in job["stderr"] for word in ("OutOfMemoryError", "memory allocation",
                                                 "Out of memory", "out of memory",
                                                 "cannot allocate", "NoMemoryError"))
    assert job["error"] == "memory" or (job["exit_code"] not in (0, None) and own), job


@pytest.mark.parametrize("language", sorted(PROGRAMS))
def test_multi_file_program(srv, language):
    job = run(srv, language, PROGRAMS[language][MULTI])
    assert (job["status"], job["result"]) == ("DONE", "hello 42\n"), job
    detail = srv.request("GET", f"/jobs/{job['job_id']}").json
    assert [f["name"] for f in detail["files"]] == [n for n, _ in PROGRAMS[language][MULTI]]


@pytest.mark.parametrize("alias,language", [("c++", "cpp"), ("js", "javascript"),
                                            ("node", "javascript"), ("golang", "go"),
                                            ("rs", "rust"), ("rb", "ruby"), ("gcc", "c"),
                                            ("JS", "javascript")])
def test_aliases(srv, alias, language):
    job = run(srv, alias, PROGRAMS[language][HELLO], input="x\n")
    assert (job["status"], job["language"]) == ("DONE", language), job


def test_versions_and_unknowns(srv):
    java = next(r["version"] for r in srv.request("GET", "/runtimes").json
                if r["language"] == "java")
    job = run(srv, "java", PROGRAMS["java"][HELLO], version=java.split(".")[0], input="v\n")
    assert (job["status"], job["version"]) == ("DONE", java), job
    cases = [({"language": "java", "version": "8"}, "unknown_version"),
             ({"language": "java", "version": java.split(".")[0] + "0"}, "unknown_version"),
             ({"language": "cobol"}, "unknown_language"),
             ({"language": "c", "image": "host"}, "runtime_not_in_image"),
             ({"language": "c", "image": "nope"}, "unknown_image")]
    for fields, code in cases:
        resp = srv.request("POST", "/jobs", {"uid": 1, "code": "x", **fields})
        assert (resp.status, resp.json["error"]["code"]) == (400, code), (fields, resp)
    job = srv.run(PROGRAMS["c"][EXIT3], language="c")  # no image: the one that has it
    assert (job["image"], job["exit_code"]) == (IMAGE, 3), job


@pytest.mark.parametrize("files,code", [
    ([], "invalid_field"), ([{"name": "../x.c", "content": ""}], "invalid_file_name"),
    ([{"name": "/etc/x.c", "content": ""}], "invalid_file_name"),
    ([{"name": "a.c"}], "invalid_field"), ("main.c", "invalid_field"),
    ([{"name": f"f{i}.c", "content": ""} for i in range(65)], "invalid_field"),
])
def test_bad_files_are_400s(srv, files, code):
    resp = srv.request("POST", "/jobs", {"uid": 1, "language": "c", "files": files})
    assert (resp.status, resp.json["error"]["code"]) == (400, code), resp


def test_a_name_given_twice_keeps_its_place_and_its_last_content(srv):
    job = run(srv, "python", [("main.py", "print('old')"), ("util.py", ""),
                              ("main.py", "import util; print('new')")])
    assert job["result"] == "new\n", job
    detail = srv.request("GET", f"/jobs/{job['job_id']}").json
    assert [f["name"] for f in detail["files"]] == ["main.py", "util.py"]


def test_code_and_files_together_or_too_big(srv):
    resp = srv.request("POST", "/jobs", {"uid": 1, "code": "x", "files": [
        {"name": "a.py", "content": "x"}]})
    assert (resp.status, resp.json["error"]["code"]) == (400, "invalid_field")
    big = [{"name": f"f{i}.py", "content": "#" * 100_000} for i in range(3)]
    resp = srv.request("POST", "/jobs", {"uid": 1, "files": big})
    assert (resp.status, resp.json["error"]["code"]) == (413, "code_too_large")


def test_compile_cache_hit_and_miss_after_a_change(srv):
    program = PROGRAMS["c"][HELLO].replace("hello", "cached")
    first = run(srv, "c", program, input="a\n")
    second = run(srv, "c", program, input="b\n")
    assert (first["compile"]["cached"], second["compile"]["cached"]) == (False, True)
    assert (first["result"], second["result"]) == ("cached a\n", "cached b\n")
    assert second["compile"]["duration_ms"] == first["compile"]["duration_ms"]
    changed = run(srv, "c", program.replace("cached", "changed"), input="c\n")
    assert (changed["compile"]["cached"], changed["result"]) == (False, "changed c\n")


def test_concurrent_identical_submissions_compile_once(srv):
    program = PROGRAMS["java"][HELLO].replace("hello", "together")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        jobs = list(pool.map(lambda _: run(srv, "java", program, input="x\n"), range(2)))
    assert all(j["status"] == "DONE" for j in jobs), jobs
    assert sorted(j["compile"]["cached"] for j in jobs) == [False, True], jobs


def test_cache_is_read_only_to_jobs_and_outside_their_view(srv):
    probe = ('#include <stdio.h>\nint main(void){FILE *f = fopen("/build/main", "a");'
             ' printf("%s\\n", f ? "LEAK writable" : "read-only"); return 0;}\n')
    job = run(srv, "c", probe)
    assert job["result"] == "read-only\n", job


@pytest.fixture
def small_cache(server_factory, data_template, tmp_path):
    data = copy_data_dir(data_template, tmp_path / "small")
    return server_factory("--auth", "open", "--compile-cache-mb", "1",
                          "--compile-timeout-s", "0.3", data_dir=data)


def test_eviction_beyond_the_cap_and_compile_timeout(small_cache):
    srv = small_cache
    big = "char big[700000] = {1};\nint main(void){return big[0] - 1;}\n"  # ~700 KB binaries
    first = run(srv, "c", big)
    second = run(srv, "c", big.replace("{1}", "{1, 2}"))
    assert first["compile"]["cached"] is False and second["status"] == "DONE", (first, second)
    again = run(srv, "c", big)
    assert again["compile"]["cached"] is False, again  # evicted for the second one
    slow = run(srv, "java", PROGRAMS["java"][HELLO])  # javac needs more than 0.3 s
    assert (slow["status"], slow["error"]) == ("ERROR", "compile"), slow
    assert slow["compile"]["exit_code"] is None and "longer than 0.3 s" in slow["compile"]["output"]


# -- hostile jobs in compiled and JIT runtimes ------------------------------------------------

def test_fork_bomb_in_c_is_contained(srv):
    bomb = ('#include <stdio.h>\n#include <unistd.h>\nint main(void){int n = 0;'
            ' while (n < 10000 && fork() >= 0) n++; printf("forks %d\\n", n); sleep(2); }\n')
    job = run(srv, "c", bomb, timeout=5)
    assert job["status"] in ("DONE", "ERROR"), job
    assert srv.request("GET", "/healthz").json["ok"]
    assert run(srv, "c", PROGRAMS["c"][EXIT3])["exit_code"] == 3  # the server still works


def test_memory_hog_in_node_is_contained(srv):
    job = run(srv, "javascript", PROGRAMS["javascript"][HOG], memory_mb=192, timeout=20)
    # killed by the OOM killer; on a busy host a cgroup v1 can instead spend the job's time
    # reclaiming node's own code pages before it gives up: then the timeout ends it
    assert job["status"] == "ERROR" and job["error"] in ("memory", "timeout"), job
    assert srv.request("GET", "/healthz").json["ok"]


@pytest.mark.parametrize("language", ["c", "javascript"])
def test_no_network_from_c_or_node(srv, language):
    port = srv.port
    code = {
        "c": "#include <stdio.h>\n#include <string.h>\n#include <arpa/inet.h>\n"
             "#include <sys/socket.h>\nint main(void){int s = socket(AF_INET, SOCK_STREAM, 0);"
             " struct sockaddr_in a; memset(&a, 0, sizeof a); a.sin_family = AF_INET;"
             f" a.sin_port = htons({port}); a.sin_addr.s_addr = htonl(0x7f000001);"
             ' printf("%s\\n", connect(s, (void *)&a, sizeof a) == 0 ? "LEAK" : "refused");}\n',
        "javascript": f'const s = require("net").connect({port}, "127.0.0.1");'
                      ' s.on("connect", () => { console.log("LEAK"); process.exit(0); });'
                      ' s.on("error", (e) => console.log("refused", e.code));\n',
    }[language]
    job = run(srv, language, code)
    assert job["status"] == "DONE" and job["result"].startswith("refused"), job


def test_cli_guesses_the_language_and_sends_several_files(srv, orq, tmp_path):
    for name, content in PROGRAMS["c"][MULTI]:
        (tmp_path / name).write_text(content)
    paths = [str(tmp_path / n) for n, _ in PROGRAMS["c"][MULTI]]
    proc = orq("submit", *paths, "--wait", server=srv)
    assert (proc.returncode, proc.stdout) == (0, "hello 42\n"), proc
    (tmp_path / "hello.rb").write_text(PROGRAMS["ruby"][HELLO])
    proc = orq("-o", "json", "submit", str(tmp_path / "hello.rb"), "--input", "r", "--wait",
               server=srv)
    job = json.loads(proc.stdout)
    assert (job["language"], job["result"]) == ("ruby", "hello r\n"), proc
