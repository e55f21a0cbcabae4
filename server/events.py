"""Event bus: publish on the loop, synchronous fan-out to subscribers, a small replay buffer."""
from __future__ import annotations

import collections
import itertools
import logging
import time
from collections.abc import Callable

from .store.jobs import text_chars

log = logging.getLogger("orq.events")

Listener = Callable[[dict], None]


class EventBus:
    """Every event gets an increasing ``id``; the last ``replay`` events can be re-read.

    Listeners are plain callables run on the loop; they must not block (a WebSocket
    listener only appends to its own bounded buffer).
    """

    def __init__(self, replay: int = 10000, replay_bytes: int = 32 * 1024 * 1024) -> None:
        # ids keep increasing across restarts, so a client's cursor stays meaningful
        self._ids = itertools.count(time.time_ns() // 1000)
        self._recent: collections.deque[tuple[dict, int]] = collections.deque()
        self._replay, self._replay_bytes, self._bytes = replay, replay_bytes, 0
        self._listeners: set[Listener] = set()

    def _remember(self, event: dict) -> None:
        """Keep the event for replay, within both a count and a byte budget (job events carry
        outputs of up to a MiB each, so a count alone would not bound memory)."""
        size = _size(event)
        self._recent.append((event, size))
        self._bytes += size
        while len(self._recent) > self._replay or (
                self._bytes > self._replay_bytes and len(self._recent) > 1):
            self._bytes -= self._recent.popleft()[1]

    def publish(self, event: dict) -> dict:
        """Fan ``event`` out; keys starting with "_" are internal and never sent (``_t`` is
        when it was published, for the delivery-delay metric)."""
        event = {"id": next(self._ids), **event, "_t": time.monotonic()}
        self._remember(event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # one broken listener must not stop the others
                log.exception("event listener failed; removing it")
                self._listeners.discard(listener)
        return event

    def subscribe(self, listener: Listener) -> None:
        self._listeners.add(listener)

    def unsubscribe(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    def since(self, last_id: int) -> tuple[list[dict], bool]:
        """Events after ``last_id`` and whether the buffer still reached back that far."""
        recent = self._recent
        complete = not recent or recent[0][0]["id"] <= last_id + 1
        return [e for e, _ in recent if e["id"] > last_id], complete

    @property
    def last_id(self) -> int:
        return self._recent[-1][0]["id"] if self._recent else 0

    @property
    def listener_count(self) -> int:
        return len(self._listeners)


def _size(event: dict) -> int:
    """Rough bytes an event holds (its text twice: the dict and the serialised copy)."""
    job = event.get("job")
    return 2 * (text_chars(job) if job else len(event.get("data") or "")) + 512
