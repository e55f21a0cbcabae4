"""Rendering: job tables sized to the terminal, job details, one-line events, JSON."""
from __future__ import annotations

import json
import shutil
from typing import Any

COLUMNS = ("ID", "UID", "STATUS", "LANG", "BACKEND", "EXIT", "TIME", "CREATED", "OUTPUT")


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def terminal_width() -> int:
    return max(40, shutil.get_terminal_size((100, 24)).columns)


def first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] + (" …" if len(lines) > 1 else "") if lines else ""


def duration(job: dict) -> str:
    ms = job.get("duration_ms")
    if ms is None:
        return "-"
    return f"{ms}ms" if ms < 1000 else f"{ms / 1000:.1f}s"


def created(job: dict) -> str:
    stamp = job.get("created_at") or ""
    return stamp.replace("T", " ")[:19] or "-"


def summary(job: dict) -> str:
    """What a job produced, in a few words: its error, else its first line of output."""
    if job.get("error"):
        return f"[{job['error']}] " + first_line(job.get("stderr"))
    return first_line(job.get("result")) or first_line(job.get("stderr"))


def job_row(job: dict) -> list[str]:
    exit_code = job.get("exit_code")
    lang = str(job.get("language") or "python")
    if job.get("image", "host") != "host":
        lang += "@" + job["image"]
    return [str(job.get("job_id")), str(job.get("uid")), str(job.get("status")),
            lang, str(job.get("backend") or "local"), "-" if exit_code is None else str(exit_code),
            duration(job), created(job), summary(job)]


def table(rows: list[list[str]], columns: tuple[str, ...] = COLUMNS) -> str:
    """Left-aligned columns; the last column is cut to fit the terminal width."""
    cells = [list(columns), *rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns) - 1)]
    room = max(10, terminal_width() - sum(w + 2 for w in widths))
    lines = []
    for row in cells:
        last = row[-1] if len(row[-1]) <= room else row[-1][: room - 1] + "…"
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + last)
    return "\n".join(line.rstrip() for line in lines)


def jobs_table(jobs: list[dict]) -> str:
    if not jobs:
        return "No jobs."
    return table([job_row(j) for j in jobs])


def images_table(images: list[dict]) -> str:
    rows = [[i["name"], i["digest"][:19], f"{i['size_bytes'] / 1e6:.0f}MB",
             i["created_at"].replace("T", " ")[:19],
             " ".join(f"{r['language']}-{r['version']}" for r in i["runtimes"]) or "-"]
            for i in images]
    return table(rows, ("NAME", "DIGEST", "SIZE", "CREATED", "RUNTIMES"))


def runtimes_table(runtimes: list[dict]) -> str:
    if not runtimes:
        return "No runtimes."
    rows = [[r["language"], r["version"], r["image"], "yes" if r["compiled"] else "no",
             ",".join(r["aliases"]) or "-"] for r in runtimes]
    return table(rows, ("LANGUAGE", "VERSION", "IMAGE", "COMPILED", "ALIASES"))


DETAIL_FIELDS = ("job_id", "uid", "status", "language", "version", "image", "image_digest",
                 "backend", "exit_code", "error", "created_at", "started_at", "finished_at",
                 "duration_ms", "attempts", "truncated", "limits", "usage")


def job_detail(job: dict) -> str:
    lines = []
    for key in DETAIL_FIELDS:
        if key in job:
            value = job[key]
            if isinstance(value, dict):
                value = ", ".join(f"{k}={v}" for k, v in value.items())
            lines.append(f"{key + ':':<13} {'-' if value is None else value}")
    for key, title in (("code", "code"), ("input", "input"), ("result", "stdout"),
                       ("stderr", "stderr")):
        text = job.get(key)
        if text:
            lines.append(f"--- {title} ---")
            lines.append(text.rstrip("\n"))
    return "\n".join(lines)


def job_status_line(job: dict) -> str:
    status, exit_code = job.get("status"), job.get("exit_code")
    extra = []
    if exit_code is not None and status in ("DONE", "ERROR"):
        extra.append(f"exit {exit_code}")
    if job.get("error"):
        extra.append(str(job["error"]))
    if job.get("duration_ms") is not None:
        extra.append(duration(job))
    tail = f" ({', '.join(extra)})" if extra else ""
    return f"job {job.get('job_id')} uid {job.get('uid')} {status}{tail}"


def event_line(event: dict) -> str | None:
    """One line per event for `watch` and the shell; None for events not worth a line."""
    kind = event.get("type")
    if kind == "job":
        return job_status_line(event["job"])
    if kind == "output":
        if not event.get("data", "").strip():
            return None
        data = event.get("data", "").rstrip("\n").replace("\n", "\\n")
        return f"job {event.get('job_id')} {event.get('stream')}: {data}"
    if kind == "connection":
        return "connected" if event.get("state") == "up" else "disconnected; reconnecting…"
    if kind == "resync":
        return "some events were missed (run `get jobs` to re-list)"
    return None
