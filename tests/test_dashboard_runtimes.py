"""The dashboard with images and runtimes (real Chromium, a real server with the image "langs"):
the language, version and image choices, highlighting, compiled jobs in the job view."""
from __future__ import annotations

import random
import re

from dashboard_support import (
    fresh_uid,
    opened_job_id,
    run_from_form,
    screenshot,
    sign_in,
)
from images_support import busybox_layout, image_cmd
from playwright.sync_api import expect
from runtime_programs import MULTI, PROGRAMS


def options(page, select: str) -> list[tuple[str, str]]:
    """(value, label) of a select's options, in order."""
    return [tuple(o) for o in page.locator(f"{select} option").evaluate_all(
        "os => os.map(o => [o.value, o.textContent])")]


def wait_for_choices(page, languages: list[str]) -> None:
    expect(page.locator("#language option")).to_have_count(len(languages))


def test_choices_come_from_the_server_and_narrow_each_other(langs_server, new_page):
    runtimes = langs_server.request("GET", "/runtimes").json
    images = [i["name"] for i in langs_server.request("GET", "/images").json]
    languages = list(dict.fromkeys(r["language"] for r in runtimes))
    version = {r["language"]: r["version"] for r in runtimes}  # one version each here
    page, console = new_page()
    sign_in(page, langs_server.url + "/ui/", fresh_uid(), password=None)
    wait_for_choices(page, languages)
    labels = dict(options(page, "#language"))
    assert list(labels) == languages
    assert labels["c"] == f"C (gcc {version['c']})"
    assert labels["python"] == f"Python {version['python']}"
    assert all(version[lang] in labels[lang] for lang in languages), labels
    assert options(page, "#image") == [("", "Automatic (host)"), *((n, n) for n in images)]
    assert options(page, "#version") == [("", version["python"])]
    expect(page.get_by_label("Version")).to_be_disabled()  # nothing else to choose

    # an image narrows the languages to its own; automatic brings them all back
    page.get_by_label("Image").select_option("host")
    host = [r["language"] for r in runtimes if r["image"] == "host"]
    wait_for_choices(page, host)
    assert [v for v, _ in options(page, "#language")] == host
    page.get_by_label("Image").select_option("")
    wait_for_choices(page, languages)
    # a language sorts the images: those without it come last, in a group of their own
    page.get_by_label("Language").select_option("c")
    expect(page.locator('#image optgroup[label="Without C"] option')).to_have_text(["host"])
    assert options(page, "#image") == [("", "Automatic (langs)"), ("langs", "langs"),
                                       ("host", "host")]
    assert options(page, "#version") == [("", version["c"])]
    screenshot(page, "runtimes-1-choices")
    page.get_by_label("Image").select_option("host")  # choosable: it switches the language
    wait_for_choices(page, host)
    assert page.get_by_label("Language").input_value() == "python"
    assert console.unexpected() == []


def test_editor_highlights_the_chosen_language(langs_server, new_page):
    page, console = new_page()
    sign_in(page, langs_server.url + "/ui/", fresh_uid(), password=None)
    editor = page.get_by_label("Code", exact=True)
    overlay = page.locator("#code-hl code")
    # an untouched editor holds the language's starter program, highlighted
    expect(overlay.locator(".token.keyword", has_text="import")).to_have_count(1)
    assert "sys.stdin" in editor.input_value()
    page.get_by_label("Language").select_option("c")
    expect(editor).to_have_value(re.compile(r"^#include <stdio.h>"))
    expect(overlay).to_have_attribute("data-language", "c")
    expect(overlay.locator(".token.keyword", has_text="return")).to_have_count(1)
    assert overlay.text_content() == editor.input_value()  # the copy shows exactly the text
    # the user's own code stays when the language changes; the highlighting follows
    editor.fill("fn main() {\n    let answer = 42;\n}\n")
    page.get_by_label("Language").select_option("rust")
    expect(overlay).to_have_attribute("data-language", "rust")
    expect(overlay.locator(".token.keyword", has_text="let")).to_have_count(1)
    assert editor.input_value().startswith("fn main()")
    expect(page.locator(".editor")).not_to_have_class(re.compile(r"\bplain\b"))
    # typing goes through the textarea as before (Tab indents, Enter keeps the indentation)
    editor.fill("")
    page.get_by_label("Language").select_option("python")
    editor.fill("")
    editor.focus()
    page.keyboard.type("def f():\nreturn 1")
    page.keyboard.press("Enter")
    page.keyboard.press("Shift+Tab")
    page.keyboard.type("print(f())")
    assert editor.input_value() == "def f():\n    return 1\nprint(f())"
    expect(overlay.locator(".token.keyword", has_text="def")).to_have_count(1)
    # very large code is shown plain: typing stays quick
    editor.fill(f"x = '{'a' * 90}'\n" * 400)  # 40,000 characters
    expect(page.locator(".editor")).to_have_class(re.compile(r"\bplain\b"))
    screenshot(page, "runtimes-2-editor")
    assert console.unexpected() == []


C_HELLO = ('#include <stdio.h>\nint main(void) {\n    char b[64];\n'
           '    if (fgets(b, sizeof b, stdin)) printf("MARK %s", b);\n    return 0;\n}\n')


def test_c_from_the_form_compile_output_and_the_cache(langs_server, new_page):
    page, console = new_page()
    uid = fresh_uid()
    sign_in(page, langs_server.url + "/ui/", uid, password=None)
    wait_for_choices(page, list(dict.fromkeys(
        r["language"] for r in langs_server.request("GET", "/runtimes").json)))

    broken = run_from_form(page, "int main(void) { return undefined_thing; }\n", language="c")
    expect(page.locator("#jv-status")).to_have_text("ERROR")
    expect(page.locator('#jv-meta dd[data-field="error-reason"]')).to_contain_text("compile")
    expect(page.locator("#jv-compile-out")).to_contain_text("undefined_thing")
    expect(page.locator("#jv-compile-out")).to_contain_text("error")
    expect(page.locator("#jv-compile-summary")).to_contain_text("Failed with exit code 1")
    expect(page.locator("#jv-compile-cached")).to_be_hidden()
    screenshot(page, "runtimes-3-compile-error")
    page.keyboard.press("Escape")
    expect(page.locator(f'#jobs-body tr[data-job-id="{broken}"] .col-lang')).to_have_text("c@langs")

    program = C_HELLO.replace("MARK", f"hello{random.randint(0, 10**9)}")
    first = run_from_form(page, program, "Ada\n", language="c")
    expect(page.locator("#jv-status")).to_have_text("DONE")
    expect(page.locator("#jv-stdout")).to_have_text(re.compile(r"^hello\d+ Ada\n$"))
    expect(page.locator("#jv-compile-summary")).to_contain_text("Compiled in")
    expect(page.locator("#jv-compile-out")).to_have_text("(no messages)")
    expect(page.locator("#jv-compile-cached")).to_be_hidden()
    job = langs_server.request("GET", f"/jobs/{first}").json
    meta = page.locator("#jv-meta")
    expect(meta.locator('dd[data-field="language"]')).to_have_text("C")
    expect(meta.locator('dd[data-field="version"]')).to_have_text(job["version"])
    expect(meta.locator('dd[data-field="backend"]')).to_have_text(job["backend"])
    image = meta.locator('dd[data-field="image"]')
    expect(image).to_have_text(f"langs · {job['image_digest'][:len('sha256:') + 12]}")
    expect(image).to_have_attribute("title", job["image_digest"])
    page.get_by_text("Code and input").click()
    expect(page.locator("#jv-files .token.keyword", has_text="return")).to_have_count(1)
    page.keyboard.press("Escape")

    second = run_from_form(page, program, "Bob\n", language="c")
    expect(page.locator("#jv-status")).to_have_text("DONE")
    expect(page.locator("#jv-stdout")).to_have_text(re.compile(r"^hello\d+ Bob\n$"))
    expect(page.locator("#jv-compile-cached")).to_be_visible()
    expect(page.locator("#jv-compile-summary")).to_contain_text("reused the result")
    usage = langs_server.request("GET", f"/jobs/{second}").json["usage"]
    cpu = meta.locator('dd[data-field="cpu-time"]')
    if usage is None:  # not reported (yet) by this server: no row rather than a dash
        expect(cpu).to_have_count(0)
    else:
        expect(cpu).to_have_text(re.compile(r"^\d"))
        expect(meta.locator('dd[data-field="peak-memory"]')).to_have_text(re.compile(r"\d+(\.\d)? [KM]B$"))
    screenshot(page, "runtimes-4-compile-cached")
    assert console.unexpected() == []


def test_multi_file_job_view_and_run_again(langs_server, new_page):
    uid = fresh_uid()
    files = PROGRAMS["c"][MULTI]
    resp = langs_server.request("POST", "/jobs?wait=true", {
        "uid": uid, "language": "c", "files": [{"name": n, "content": c} for n, c in files]})
    assert resp.status == 200, resp
    job_id = resp.json["job_id"]
    page, console = new_page()
    sign_in(page, langs_server.url + "/ui/", uid, password=None)
    page.get_by_role("link", name=f"#{job_id}").click()
    expect(page.locator("#jv-stdout")).to_have_text("hello 42\n")
    expect(page.locator('#jv-meta dd[data-field="files"]')).to_have_text("main.c, util.h, util.c")
    page.get_by_text("Files and input").click()
    expect(page.locator("#jv-files h3")).to_have_text(["main.c (entry point)", "util.h", "util.c"])
    expect(page.locator("#jv-files pre").nth(2)).to_have_text(files[2][1])

    page.get_by_role("button", name="Run again").click()
    expect(page.get_by_label("Code", exact=True)).to_have_value(files[0][1])
    expect(page.locator("#code-files")).to_contain_text("util.h, util.c")
    assert page.get_by_label("Language").input_value() == "c"
    assert page.get_by_label("Image").input_value() == ""  # what the server picks anyway
    page.get_by_role("button", name="Run").click()
    again = opened_job_id(page)
    assert again != job_id
    expect(page.locator("#jv-stdout")).to_have_text("hello 42\n")
    sent = langs_server.request("GET", f"/jobs/{again}").json["files"]
    assert [(f["name"], f["content"]) for f in sent] == list(files)
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Drop them").click()
    expect(page.locator("#code-files")).to_be_hidden()
    assert console.unexpected() == []


def test_server_errors_show_in_the_form(server_factory, new_page, tmp_path):
    data = tmp_path / "busy-data"
    image_cmd(data, "import", "busy", str(busybox_layout(tmp_path / "oci")))
    server = server_factory("--auth", "open", data_dir=data)
    page, console = new_page()
    uid = fresh_uid()
    sign_in(page, server.url + "/ui/", uid, password=None)
    expect(page.locator('#image optgroup[label="Without Python"] option')).to_have_text(["busy"])
    page.get_by_label("Image").select_option("busy")
    expect(page.locator("#language option")).to_have_count(1)
    assert options(page, "#language") == [("sh", "sh (posix)")]
    page.get_by_label("Code", exact=True).fill("cat /etc/marker")
    page.get_by_role("button", name="Run").click()
    opened_job_id(page)
    expect(page.locator("#jv-stdout")).to_have_text("marker one\n")
    expect(page.locator('#jv-meta dd[data-field="image"]')).to_contain_text("busy · sha256:")
    page.keyboard.press("Escape")

    image_cmd(data, "rm", "busy")  # the operator removes it while the page is open
    page.get_by_role("button", name="Run").click()
    expect(page.locator("#submit-error")).to_have_text("There is no image 'busy'; see GET /images.")
    expect(page.locator("#image option")).to_have_count(2)  # the choice was refreshed
    assert page.get_by_label("Image").input_value() == ""
    assert console.unexpected("Failed to load resource") == []
