"""Unit tests of the event bus (pure, no server)."""
from server.events import EventBus


def test_ids_increase_and_replay_since():
    bus = EventBus()
    seen = []
    bus.subscribe(seen.append)
    first = bus.publish({"type": "output", "job_id": 1, "data": "a"})
    second = bus.publish({"type": "output", "job_id": 1, "data": "b"})
    assert second["id"] > first["id"] and seen == [first, second]
    events, complete = bus.since(first["id"])
    assert events == [second] and complete
    assert bus.last_id == second["id"]


def test_replay_is_bounded_by_count_and_bytes():
    bus = EventBus(replay=100, replay_bytes=10 * 1024 * 1024)
    big = {"job_id": 1, "uid": 1, "status": "DONE", "result": "x" * (1 << 20), "stderr": ""}
    for _ in range(50):
        bus.publish({"type": "job", "job": big})
    kept, complete = bus.since(0)
    assert 1 <= len(kept) <= 5 and not complete
    for i in range(300):
        bus.publish({"type": "output", "job_id": 2, "data": str(i)})
    assert len(bus.since(0)[0]) == 100


def test_a_failing_listener_is_dropped_and_others_still_run():
    bus = EventBus()
    got = []

    def broken(event):
        raise RuntimeError("boom")
    bus.subscribe(broken)
    bus.subscribe(got.append)
    bus.publish({"type": "output", "data": "x"})
    bus.publish({"type": "output", "data": "y"})
    assert len(got) == 2 and bus.listener_count == 1
