"""`orq shell` against a real server: prompt_toolkit pipe input, and once in a real tmux terminal."""
from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from images_support import busybox_layout, image_cmd
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from shell.config import Config, history_path
from shell.registry import Context
from shell.repl import Shell
from shell.shell_parts import ShellCompleter, ShellState

ORQ = str(Path(sys.executable).parent / "orq")
ESC_ENTER = "\x1b\r"


@pytest.fixture
def xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("ORQ_PASSWORD", raising=False)
    return tmp_path


async def until(check, what, timeout: float = 60) -> None:
    """Poll ``check``; ``what`` (a string or a function making one) explains a timeout."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        await asyncio.sleep(0.05)


class PipeShell:
    """A Shell reading keys from a pipe; what it prints lands in .out / .err."""

    def __init__(self, server, history: bool = False) -> None:
        self.out, self.err = io.StringIO(), io.StringIO()
        self.ctx = Context(Config.load(), server_flag=server.url, stdout=self.out,
                           stderr=self.err)
        self.history = history

    async def __aenter__(self):
        self._pipe = create_pipe_input()
        self.input = self._pipe.__enter__()
        self.shell = Shell(self.ctx, input=self.input, output=DummyOutput(),
                           history=self.history)
        self.task = asyncio.ensure_future(self.shell.run())
        await until(lambda: self.shell.state.connection == "live", "the event stream")
        return self

    def type(self, text: str) -> None:
        self.input.send_text(text)

    async def wait_out(self, text: str, timeout: float = 60) -> None:
        await until(lambda: text in self.out.getvalue(),
                    lambda: f"{text!r} in {self.out.getvalue()!r} / {self.err.getvalue()!r}",
                    timeout)

    async def __aexit__(self, *exc: object) -> None:
        if not self.task.done():
            self.type("exit\n")
            await asyncio.wait_for(self.task, 30)
        self._pipe.__exit__(None, None, None)


def test_completion_of_commands_options_and_job_ids(xdg, open_server):
    state = ShellState(Context(Config.load(), server_flag=open_server.url))
    state.job_seen({"job_id": 7})
    state.job_seen({"job_id": 12})
    completer = ShellCompleter(state)

    def words(text: str) -> list[str]:
        return [c.text for c in completer.get_completions(Document(text), None)]
    assert words("ge") == ["get"]
    assert words("get j") == ["jobs", "job"]
    assert words("get ") == ["jobs", "images", "runtimes", "job"]
    assert words("logs ") == ["12", "7"]
    assert words("get job 1") == ["12"]
    assert "--wait" in words("submit --w")
    assert words("frob ") == []


def completer_words(state: ShellState):
    completer = ShellCompleter(state)
    return lambda text: [c.text for c in completer.get_completions(Document(text), None)]


def test_completion_of_languages_images_and_versions(xdg, langs_server):
    runtimes = langs_server.request("GET", "/runtimes").json
    names = {r["language"]: [r["language"], *r["aliases"]] for r in runtimes}
    version = {r["language"]: r["version"] for r in runtimes}  # one version each here

    async def scenario() -> None:
        async with PipeShell(langs_server) as sh:
            state = sh.shell.state
            await until(lambda: state.runtimes, "GET /runtimes at start")
            words = completer_words(state)
            assert words("submit --language ") == sorted({n for ns in names.values() for n in ns})
            assert words("submit --language c") == ["c", "c++", "cpp", "cxx"]
            assert words("submit -l ja") == ["java", "javascript"]
            assert words("submit --image ") == ["host", "langs"]
            assert words("submit --language c --image ") == ["langs"]  # only it has C
            assert words("submit main.c --image ") == ["langs"]  # C, from the extension
            assert words("submit --image host --language ") == sorted(
                n for r in runtimes if r["image"] == "host" for n in names[r["language"]])
            assert words("submit --language jdk --version ") == [version["java"]]
            assert words("submit --wait main.rb --version ") == [version["ruby"]]  # its extension
            assert words("submit --version ") == [version["python"]]  # submit's default
            assert words("submit --language cobol --version ") == []
            assert words("submit --image l") == ["langs"]
    asyncio.run(scenario())


def test_completion_follows_images_added_while_it_runs(xdg, server_factory, tmp_path):
    srv = server_factory("--auth", "open")
    layout = busybox_layout(tmp_path / "oci")

    async def scenario() -> None:
        async with PipeShell(srv) as sh:
            state = sh.shell.state
            await until(lambda: state.images, "GET /images at start")
            words = completer_words(state)
            assert words("submit --image ") == ["host"]
            assert words("submit --language ") == ["bash", "posix", "py", "python", "python3", "sh"]
            await asyncio.to_thread(image_cmd, srv.data_dir, "import", "busy", str(layout))
            state.catalogue_ttl = 0.5  # instead of a minute: the shell asks again by itself
            # (its two answers may straddle the import: the next refresh mends that)
            await until(lambda: (words("submit --image busy --language ") == ["posix", "sh"]
                                 and "busy" in words("submit --image ")),
                        lambda: f"the new image and its runtimes, {state.images} {state.runtimes}")
    asyncio.run(scenario())


def test_commands_multiline_submit_history_and_live_updates(xdg, open_server):
    async def scenario() -> None:
        async with PipeShell(open_server, history=True) as sh:
            assert sh.shell.state.toolbar().startswith(f" {open_server.url} | anonymous")
            sh.type("submit --wait --uid 51\nname = 'shell'\nprint('hello from', name)\n"
                    + ESC_ENTER)
            await sh.wait_out("hello from shell\n")
            assert "uid 51 DONE" in sh.out.getvalue()
            # a job submitted elsewhere shows up by itself, and its id completes
            job_id = open_server.submit("print(1)", uid=52)
            await sh.wait_out(f"job {job_id} uid 52 DONE (exit 0")
            assert job_id in sh.shell.state.job_ids
            sh.type(f"get job {job_id} -o json\n")
            await sh.wait_out('"uid": 52')
            sh.type("get jobs --uid 51\n")
            await sh.wait_out("hello from shell\n", timeout=5)
            await until(lambda: "STATUS" in sh.out.getvalue(), "the table")
            sh.type("bogus\n")
            await until(lambda: "invalid choice: 'bogus'" in sh.err.getvalue(), "an error")
            sh.type("get job 99999999\n")
            await until(lambda: "no job 99999999" in sh.err.getvalue(), "a 404")
            sh.type("exit\n")
            assert await asyncio.wait_for(sh.task, 30) == 0
        assert "get jobs --uid 51" in history_path().read_text()
    asyncio.run(scenario())


def test_login_inside_the_shell_and_signed_out_state(xdg, auth_server):
    auth_server.register(53, "shell-password")

    async def scenario() -> None:
        sh = PipeShell(auth_server)
        sh._pipe = create_pipe_input()
        sh.input = sh._pipe.__enter__()
        sh.shell = Shell(sh.ctx, input=sh.input, output=DummyOutput(), history=False)
        sh.task = asyncio.ensure_future(sh.shell.run())
        await until(lambda: sh.shell.state.connection == "signed out", "signed out state")
        sh.type("login --uid 53\n")
        await asyncio.sleep(0.5)
        sh.type("shell-password\n")  # the password prompt
        await until(lambda: sh.shell.state.connection == "live", "live after login")
        assert "uid 53" in sh.shell.state.toolbar()
        job_id = auth_server.submit("print(2)", uid=53, auth=(53, "shell-password"))
        await sh.wait_out(f"job {job_id} uid 53 DONE")
        await sh.__aexit__()
    asyncio.run(scenario())


def test_reconnects_and_catches_up_after_a_restart(xdg, server_factory):
    srv = server_factory("--auth", "open")

    async def scenario() -> None:
        async with PipeShell(srv) as sh:
            first = srv.submit("print(1)", uid=54)
            await sh.wait_out(f"job {first} uid 54 DONE")
            await asyncio.to_thread(srv.restart)
            await until(lambda: sh.shell.state.connection == "live", "reconnect", 60)
            later = srv.submit("print(2)", uid=54)
            await sh.wait_out(f"job {later} uid 54 DONE")
            assert sh.out.getvalue().count(f"job {first} uid 54 DONE") == 1  # no replays
    asyncio.run(scenario())


def tmux(sock: str, *args: str) -> str:
    return subprocess.run(["tmux", "-L", sock, *args], capture_output=True, text=True,
                          check=True).stdout


def test_live_job_appears_in_a_real_terminal(tmp_path, open_server):
    sock = f"orq-test-{os.getpid()}-{time.monotonic_ns()}"
    env = (f"XDG_CONFIG_HOME={tmp_path}/cfg XDG_DATA_HOME={tmp_path}/data "
           f"ORQ_SERVER={open_server.url} TERM=xterm-256color")
    tmux(sock, "new-session", "-d", "-s", "orq", "-x", "140", "-y", "40",
         f"env {env} {ORQ} shell")

    def screen() -> str:
        return tmux(sock, "capture-pane", "-p", "-t", "orq")

    def wait_screen(text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in (shown := screen()):
                return shown
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared:\n{screen()}")
    try:
        wait_screen("| live")  # the bottom toolbar
        tmux(sock, "send-keys", "-t", "orq", "-l", "get jo")
        wait_screen("orq> get jo")
        job_id = open_server.submit("print('elsewhere')", uid=55)
        shown = wait_screen(f"job {job_id} uid 55 DONE")
        assert open_server.url in shown
        prompt_lines = [line for line in shown.splitlines() if line.startswith("orq>")]
        assert prompt_lines[-1].rstrip() == "orq> get jo", shown  # the typing survived
        tmux(sock, "send-keys", "-t", "orq", "-l", "bs --uid 55")
        tmux(sock, "send-keys", "-t", "orq", "Enter")
        wait_screen("  elsewhere")  # the table's last column (80 columns leave it 13)
        tmux(sock, "send-keys", "-t", "orq", "-l", "exit")
        tmux(sock, "send-keys", "-t", "orq", "Enter")
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True, check=False)
