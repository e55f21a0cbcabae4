"""End-to-end tests of the dashboard (/ui/) in real headless Chromium against a real server."""
from __future__ import annotations

import re

from dashboard_support import (
    PASSWORD,
    PHONE,
    WATCH_ROWS,
    PrefixProxy,
    fresh_uid,
    opened_job_id,
    row_badge,
    run_from_form,
    screenshot,
    sign_in,
)
from playwright.sync_api import expect


def test_register_submit_and_watch_it_finish(auth_server, new_page):
    page, console = new_page()
    page.goto(auth_server.url + "/ui/")
    expect(page.get_by_role("heading", name="Sign in to orq")).to_be_visible()
    screenshot(page, "desktop-1-sign-in")
    uid = fresh_uid()
    sign_in(page, auth_server.url + "/ui/", uid, register=True)
    expect(page.locator("#jobs-empty")).to_have_text("No jobs yet. Write some code and press Run.")
    page.evaluate(WATCH_ROWS)

    # type with the keyboard: Enter keeps/increases indentation, Shift+Tab dedents
    editor = page.get_by_label("Code", exact=True)
    editor.fill("")
    editor.focus()
    page.keyboard.type("import sys, time\ntime.sleep(1.5)\nfor line in sys.stdin:\n")
    page.keyboard.type("print(line.strip().upper())\n")
    page.keyboard.press("Shift+Tab")
    page.keyboard.type("print('end')")
    assert editor.input_value() == ("import sys, time\ntime.sleep(1.5)\nfor line in sys.stdin:\n"
                                    "    print(line.strip().upper())\nprint('end')")
    page.keyboard.press("Escape")  # then Tab leaves the editor instead of indenting
    page.keyboard.press("Tab")
    expect(page.get_by_label("Input", exact=True)).to_be_focused()
    page.keyboard.type("hello\nworld\n")
    screenshot(page, "desktop-2-form")
    editor.focus()
    page.keyboard.press("Control+Enter")  # runs

    job_id = opened_job_id(page)
    stdout = page.locator("#jv-stdout")
    expect(stdout).to_have_text("HELLO\nWORLD\nend\n")
    expect(page.locator("#jv-status")).to_have_text("DONE")
    expect(page.locator('#jv-meta dd[data-field="exit-code"]')).to_have_text("0")
    expect(page.locator('#jv-meta dd[data-field="limits"]')).to_contain_text("10 s timeout")
    expect(page.locator('#jv-meta dd[data-field="duration"]')).not_to_have_text("—")
    expect(page.locator('#jv-meta dd[data-field="backend"]')).to_have_text("local")
    expect(page.locator('#jv-meta dd[data-field="cpu-time"]')).to_have_text(re.compile(r"\d"))
    expect(page.locator('#jv-meta dd[data-field="peak-memory"]')).to_contain_text("B")
    expect(page.locator("#jv-cancel")).to_be_hidden()
    screenshot(page, "desktop-3-job-done")

    page.keyboard.press("Escape")
    expect(page.locator("#job-view")).to_be_hidden()
    expect(row_badge(page, job_id)).to_have_text("DONE")
    expect(row_badge(page, job_id)).to_have_class(re.compile(r"\bs-done\b"))
    expect(page.locator(f'#jobs-body tr[data-job-id="{job_id}"] .col-backend')).to_have_text(
        "local")
    seen = [s.split(":")[1] for s in page.evaluate("window.__seen") if s.startswith(f"{job_id}:")]
    assert seen[-1] == "DONE" and "RUNNING" in seen, seen  # changed in place, no reload
    screenshot(page, "desktop-4-jobs")
    assert console.unexpected() == []


def test_live_output_and_cancel(auth_server, new_page):
    uid, _ = auth_server.register(fresh_uid())
    page, console = new_page()
    sign_in(page, auth_server.url + "/ui/", uid)
    page.get_by_text("Limits (optional)").click()
    page.get_by_label("Timeout (seconds)").fill("40")
    page.get_by_label("Memory (MB)").fill("128")
    job_id = run_from_form(page, "import time\nprint('first line', flush=True)\n"
                           "import sys\nprint('warming up', file=sys.stderr, flush=True)\n"
                           "time.sleep(35)\nprint('never')\n")
    expect(page.locator("#jv-stdout")).to_have_text("first line\n")
    expect(page.locator("#jv-stderr")).to_have_text("warming up\n")
    expect(page.locator("#jv-status")).to_have_text("RUNNING")
    expect(page.locator("#jv-stdout-live")).to_be_visible()
    expect(page.locator('#jv-meta dd[data-field="limits"]')).to_contain_text("40 s timeout")
    expect(page.locator('#jv-meta dd[data-field="limits"]')).to_contain_text("128 MB memory")
    screenshot(page, "desktop-5-job-running")

    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#jv-status")).to_have_text("CANCELLED")
    expect(page.locator('#jv-meta dd[data-field="error-reason"]')).to_have_text("Cancelled")
    expect(page.locator("#jv-cancel")).to_be_hidden()
    job = auth_server.request("GET", f"/jobs/{job_id}", auth=(uid, PASSWORD)).json
    assert job["status"] == "CANCELLED"
    page.get_by_role("button", name="Close job view").click()
    expect(row_badge(page, job_id)).to_have_text("CANCELLED")
    assert console.unexpected() == []


def test_rest_job_appears_live_and_sign_out(auth_server, new_page):
    uid, _ = auth_server.register(fresh_uid())
    other, _ = auth_server.register(fresh_uid())
    page, console = new_page()
    sign_in(page, auth_server.url + "/ui/", uid)
    page.reload()  # the token lives in sessionStorage: still signed in
    expect(page.locator("#conn")).to_have_text("Live")
    page.evaluate(WATCH_ROWS)

    foreign = auth_server.submit("print('not yours')", uid=other, auth=(other, PASSWORD))
    job_id = auth_server.submit("import time\ntime.sleep(1)\nprint(42)", uid=uid,
                                auth=(uid, PASSWORD))
    expect(row_badge(page, job_id)).to_have_text("DONE")
    auth_server.wait_final(foreign, auth=(other, PASSWORD))
    assert page.locator(f'#jobs-body tr[data-job-id="{foreign}"]').count() == 0
    assert f"{job_id}:DONE" in page.evaluate("window.__seen")  # the same page, never reloaded

    page.get_by_role("link", name=f"#{job_id}").click()
    expect(page.locator("#jv-stdout")).to_have_text("42\n")
    expect(page).to_have_url(re.compile(rf"#job-{job_id}$"))
    page.keyboard.press("Escape")

    token = page.evaluate("JSON.parse(sessionStorage.getItem('orq.session')).token")
    assert auth_server.request("GET", "/jobs", token=token).status == 200
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('orq.session')") is None
    assert auth_server.request("GET", "/jobs", token=token).status == 401  # revoked
    assert console.unexpected() == []


def test_revoked_token_asks_to_sign_in_again(auth_server, new_page):
    uid, _ = auth_server.register(fresh_uid())
    page, console = new_page()
    sign_in(page, auth_server.url + "/ui/", uid)
    token = page.evaluate("JSON.parse(sessionStorage.getItem('orq.session')).token")
    assert auth_server.request("DELETE", "/auth/token", token=token).status == 204
    page.get_by_text("Done", exact=True).click()  # the next API call is refused
    expect(page.locator("#signin-error")).to_have_text(
        "Your session has ended. Please sign in again.")
    expect(page.get_by_label("Password")).to_be_visible()
    assert console.unexpected("Failed to load resource") == []


def test_api_errors_are_readable(auth_server, new_page):
    uid, _ = auth_server.register(fresh_uid())
    page, console = new_page()
    page.goto(auth_server.url + "/ui/")
    page.get_by_label("User ID").fill(str(uid))
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-error")).to_have_text("Wrong uid or password.")
    page.get_by_role("button", name="Create account").click()  # taken
    expect(page.locator("#signin-error")).to_have_text(f"Uid {uid} is already registered.")

    sign_in(page, auth_server.url + "/ui/", uid)
    # the language choice comes from GET /runtimes (with the token): the host's three
    expect(page.locator("#language option")).to_have_count(3)
    assert page.locator("#language option").evaluate_all("os => os.map(o => o.value)") == [
        "python", "bash", "sh"]
    page.get_by_text("Limits (optional)").click()
    page.get_by_label("Timeout (seconds)").fill("100000")
    page.get_by_label("Code", exact=True).fill("print(1)")
    page.get_by_role("button", name="Run").click()
    error = page.locator("#submit-error")
    expect(error).to_have_text(re.compile(r"^Timeout must be between 0\.1 and \d+"))
    expect(error).to_have_attribute("role", "alert")
    screenshot(page, "desktop-6-api-error")

    page.goto(auth_server.url + "/ui/#job-999999999")
    expect(page.locator("#jv-error")).to_have_text(
        "Could not load job #999999999: There is no job 999999999.")
    # the browser itself logs failed requests; anything else is a bug
    assert console.unexpected("Failed to load resource") == []


def test_open_mode_bash_and_run_again(open_server, new_page):
    page, console = new_page()
    page.goto(open_server.url + "/ui/")
    expect(page.get_by_label("User ID")).to_be_visible()
    expect(page.get_by_label("Password")).to_be_hidden()
    expect(page.get_by_role("button", name="Create account")).to_be_hidden()
    uid = fresh_uid()
    sign_in(page, open_server.url + "/ui/", uid, password=None)
    expect(page.get_by_label("Show")).to_be_visible()  # open mode may list everyone's jobs

    code = 'read name\necho "hi $name"\necho oops >&2\nexit 3'
    job_id = run_from_form(page, code, "ada", language="bash")
    expect(page.locator("#jv-status")).to_have_text("ERROR")
    expect(page.locator("#jv-stdout")).to_have_text("hi ada\n")
    expect(page.locator("#jv-stderr")).to_have_text("oops\n")
    expect(page.locator('#jv-meta dd[data-field="exit-code"]')).to_have_text("3")
    screenshot(page, "desktop-7-job-error")

    page.get_by_label("Code", exact=True).fill("")  # then refill it from the job
    page.get_by_role("button", name="Run again").click()
    expect(page.locator("#job-view")).to_be_hidden()
    assert page.get_by_label("Code", exact=True).input_value() == code
    assert page.get_by_label("Input", exact=True).input_value() == "ada"
    assert page.get_by_label("Language").input_value() == "bash"
    # the server would pick them anyway: version and image stay on their defaults
    assert page.get_by_label("Version").input_value() == ""
    assert page.get_by_label("Image").input_value() == ""
    expect(page.get_by_label("Code", exact=True)).to_be_focused()
    expect(row_badge(page, job_id)).to_have_class(re.compile(r"\bs-error\b"))
    assert console.unexpected() == []


def test_filters_and_pagination(open_server, new_page):
    uid = fresh_uid()
    ids = [open_server.submit("pass", uid=uid) for _ in range(26)]
    ids.append(open_server.submit("raise SystemExit(2)", uid=uid))
    for job_id in ids:
        open_server.wait_final(job_id)
    page, console = new_page()
    sign_in(page, open_server.url + "/ui/", uid, password=None)
    rows = page.locator("#jobs-body tr")
    expect(rows).to_have_count(25)
    first = [int(x) for x in rows.evaluate_all("trs => trs.map(t => t.dataset.jobId)")]
    assert first == sorted(ids, reverse=True)[:25]  # newest first
    expect(page.locator("#page-newer")).to_be_disabled()

    page.get_by_role("button", name="Older →").click()
    expect(rows).to_have_count(2)
    expect(page.locator("#page-info")).to_have_text("Page 2")
    expect(page.locator("#page-older")).to_be_disabled()
    page.get_by_role("button", name="← Newer").click()
    expect(rows).to_have_count(25)

    page.get_by_text("Error", exact=True).click()
    expect(rows).to_have_count(1)
    expect(row_badge(page, ids[-1])).to_have_text("ERROR")
    page.get_by_text("Cancelled", exact=True).click()
    expect(page.locator("#jobs-empty")).to_have_text("No cancelled jobs.")
    page.get_by_text("Done", exact=True).click()
    new_id = open_server.submit("print('late')", uid=uid)  # arrives live into the filter
    expect(row_badge(page, new_id)).to_have_text("DONE")
    expect(rows).to_have_count(25)
    assert console.unexpected() == []


def test_phone_width(open_server, new_page):
    page, console = new_page(PHONE)
    page.goto(open_server.url + "/ui/")
    screenshot(page, "phone-1-sign-in")
    uid = fresh_uid()
    sign_in(page, open_server.url + "/ui/", uid, password=None)
    open_server.submit("print('x')", uid=uid)
    expect(page.locator("#jobs-body tr")).to_have_count(1)
    screenshot(page, "phone-2-dashboard", full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    run_from_form(page, "for i in range(3):\n    print('line', i)")
    expect(page.locator("#jv-status")).to_have_text("DONE")
    expect(page.locator("#jv-stdout")).to_contain_text("line 2")
    screenshot(page, "phone-3-job")
    box = page.locator("#job-view").bounding_box()
    assert box["width"] <= PHONE["width"] + 1
    assert console.unexpected() == []


def test_behind_a_path_prefix(open_server, new_page):
    proxy = PrefixProxy(open_server.port).start()
    try:
        page, console = new_page()
        page.goto(proxy.url)  # <prefix>/ asked by a browser is sent to <prefix>/ui/
        expect(page).to_have_url(proxy.url + "ui/")
        uid = fresh_uid()
        sign_in(page, proxy.url + "ui/", uid, password=None)
        job_id = run_from_form(page, "print(input() * 2)", "ab")
        expect(page.locator("#jv-stdout")).to_have_text("abab\n")
        page.keyboard.press("Escape")
        expect(row_badge(page, job_id)).to_have_text("DONE")
        assert proxy.stray == []
        assert f"{proxy.prefix}/ws" in proxy.seen
        assert console.unexpected() == []
    finally:
        proxy.stop()


def test_reconnects_after_a_server_restart(server_factory, new_page):
    server = server_factory("--auth", "open")
    page, console = new_page()
    uid = fresh_uid()
    sign_in(page, server.url + "/ui/", uid, password=None)
    server.stop()
    expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    expect(page.locator("#conn")).to_contain_text("Connection lost")
    screenshot(page, "desktop-8-reconnecting")
    server.start()
    expect(page.locator("#conn")).to_have_text("Live")
    job_id = server.submit("print('back')", uid=uid)
    expect(row_badge(page, job_id)).to_have_text("DONE")
    assert console.unexpected("WebSocket connection", "Failed to load resource") == []
