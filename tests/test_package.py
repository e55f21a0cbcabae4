"""The built sdist and wheel are complete: the wheel, installed into a fresh virtualenv and run
with the checkout hidden, runs a job, serves its dashboard and OpenAPI document, drives the
`orq` client and writes the Lambda zip."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, OrqServer

from server import __version__
from server.deploy_lambda import ZIP_FILES


def hidden(*argv: str, cwd: Path) -> list[str]:
    """``argv`` in its own mount namespace where the checkout is an empty tmpfs, from ``cwd``."""
    script = 'mount -t tmpfs -o size=64k orq-checkout-hidden "$0" && cd "$1" && shift && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(REPO),
            str(cwd), *argv]


def run(argv: list[str], env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False,
                          env={**clean, **(env or {})}, **kwargs)
    assert proc.returncode == 0, f"{argv}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """`python -m build`: the sdist, then the wheel built from that sdist (as pip would)."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO)])
    return out


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory) -> Path:
    """A fresh virtualenv with the wheel (and its dependencies) installed: its bin/ folder."""
    root = tmp_path_factory.mktemp("installed")
    run([sys.executable, "-m", "venv", str(root / "venv")])
    wheel = next(dist.glob("orq-*.whl"))
    run([str(root / "venv/bin/pip"), "install", "-q", str(wheel)], cwd=root)
    return root / "venv/bin"


@pytest.fixture(scope="module")
def installed(venv, tmp_path_factory):
    """The installed orq-server, run with the checkout hidden."""
    work = tmp_path_factory.mktemp("work")
    srv = OrqServer(work / "data", ["--auth", "open", "--max-cpus", "1.5"])
    srv.command = tuple(hidden(str(venv / "orq-server"), cwd=work))
    yield srv.start()
    srv.kill()


def _package_files() -> set[str]:
    """What the wheel must hold: every module, the dashboard (as server/static/) and data."""
    names = {str(p.relative_to(REPO)) for top in ("server", "shell")
             for p in (REPO / top).rglob("*.py") if "__pycache__" not in p.parts}
    names |= {f"server/static/{p.relative_to(REPO / 'static')}"
              for p in (REPO / "static").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    return names | {"server/openapi.json"}


def test_wheel_and_sdist_hold_everything(dist) -> None:
    wheel = zipfile.ZipFile(next(dist.glob("orq-*.whl")))
    assert _package_files() <= set(wheel.namelist())
    assert "server/static/index.html" in wheel.namelist()
    with tarfile.open(next(dist.glob("orq-*.tar.gz"))) as sdist:
        names = {name.partition("/")[2] for name in sdist.getnames()}
    tracked = run(["git", "ls-files"], cwd=REPO).stdout.split()
    assert set(tracked) - {".gitignore"} <= names


def test_installed_package_is_not_the_checkout(venv, tmp_path) -> None:
    probe = ("import json, sys, server, shell, server.static, server.backends.local;"
             "print(json.dumps([sys.path, server.__file__, shell.__file__,"
             " list(server.static.__path__)]))")
    out = run(hidden(str(venv / "python"), "-c", probe, cwd=tmp_path)).stdout
    path, server_file, shell_file, static_path = json.loads(out)
    files = [server_file, shell_file, *static_path]
    assert not [p for p in path + files if p.startswith(str(REPO))], out
    assert all(f.startswith(str(venv.parent)) for f in files), out


def test_versions(venv, tmp_path) -> None:
    for command in ("orq-server", "orq"):
        out = run(hidden(str(venv / command), "--version", cwd=tmp_path)).stdout
        assert out.split() == [command, __version__]


def test_installed_server_runs_a_job_in_the_sandbox(installed) -> None:
    job = installed.run("import sys; print(sys.version_info[0], input())", input="hi")
    assert (job["status"], job["result"]) == ("DONE", "3 hi\n"), job
    health = installed.request("GET", "/healthz").json
    assert health["warm"] is True and health["warm_replaced"] == 0, health  # runner source found
    bash = installed.run("echo from bash", language="bash")
    assert (bash["status"], bash["result"]) == ("DONE", "from bash\n"), bash


def test_installed_server_serves_the_dashboard(installed) -> None:
    page = installed.request("GET", "/ui/", headers={"Accept": "text/html"})
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert b"Sign in" in page.body and b'src="app.js"' in page.body
    for name in ("app.js", "api.js", "style.css"):
        assert installed.request("GET", f"/ui/{name}").status == 200, name
    assert installed.request("GET", "/").status == 200  # API clients still get the list
    package_init = installed.request("GET", "/ui/__init__.py")
    assert package_init.status == 404 and package_init.json["error"]["code"] == "not_found"


def test_installed_server_serves_its_own_openapi_document(installed) -> None:
    doc = installed.request("GET", "/openapi.json").json
    cpus = doc["components"]["schemas"]["JobRequest"]["properties"]["cpus"]
    assert cpus["maximum"] == 1.5 and doc["info"]["title"] == "orq"


def test_installed_client(installed, venv, tmp_path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "ORQ_SERVER": installed.url}
    argv = hidden(str(venv / "orq"), "submit", "-", "--input", "42", "--wait", "-o", "json",
                  cwd=tmp_path)
    proc = run(argv, input="print(int(input()) + 1)\n", env=env)
    assert json.loads(proc.stdout)["result"] == "43\n", proc.stdout


def test_installed_lambda_packaging(venv, tmp_path) -> None:
    run(hidden(str(venv / "python"), "-m", "server.deploy_lambda", "--package-only", "runner.zip",
               cwd=tmp_path))
    with zipfile.ZipFile(io.BytesIO((tmp_path / "runner.zip").read_bytes())) as zf:
        assert set(zf.namelist()) == set(ZIP_FILES)
        for name in ZIP_FILES:
            assert zf.read(name) == (REPO / "server/runner" / name).read_bytes(), name
