"""Prometheus metrics of this process (served at /metrics)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry()
JOBS_SUBMITTED = Counter("orq_jobs_submitted", "Jobs accepted", registry=REGISTRY)
JOBS_FINISHED = Counter("orq_jobs_finished", "Jobs that reached a final status",
                        ["status"], registry=REGISTRY)
JOB_DURATION = Histogram("orq_job_duration_seconds", "Wall time of job runs", registry=REGISTRY,
                         buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
JOBS_WAITING = Gauge("orq_jobs_waiting", "Jobs waiting to run", registry=REGISTRY)
JOBS_RUNNING = Gauge("orq_jobs_running", "Jobs running now", registry=REGISTRY)
JOBS_STARTED = Counter("orq_jobs_started", "Job runs started, by backend", ["backend"],
                       registry=REGISTRY)
BACKEND_CAPACITY = Gauge("orq_backend_capacity", "Jobs a backend may run at once",
                         ["backend"], registry=REGISTRY)
BACKEND_RUNNING = Gauge("orq_backend_running", "Jobs a backend holds now (starting, running,"
                        " or a cancelled Lambda invocation not yet answered)", ["backend"],
                        registry=REGISTRY)
BACKEND_HOLDS = Counter("orq_backend_holds", "Times a backend was left alone for a backoff "
                        "after refusing a job (Lambda throttling, function not ready)",
                        ["backend"], registry=REGISTRY)
HTTP_REQUESTS = Counter("orq_http_requests", "HTTP requests answered", ["code"],
                        registry=REGISTRY)
WS_DELIVERY = Histogram(
    "orq_websocket_delivery_seconds",
    "From an event's publication (its change is durable) to its hand-over to one client's socket",
    registry=REGISTRY, buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1))
WS_CLIENTS = Gauge("orq_websocket_clients", "Connected WebSocket clients", registry=REGISTRY)
CONTENT_TYPE = CONTENT_TYPE_LATEST


def set_queue(waiting: int, running: int) -> None:
    JOBS_WAITING.set(waiting)
    JOBS_RUNNING.set(running)


def job_finished(job: dict) -> None:
    JOBS_FINISHED.labels(job["status"]).inc()
    if job.get("duration_ms") is not None:
        JOB_DURATION.observe(job["duration_ms"] / 1000)


def render() -> bytes:
    return generate_latest(REGISTRY)
