"""The waiting jobs: round-robin across users, each job filed under its kind."""
from __future__ import annotations

import collections
from collections.abc import Callable, Hashable


class FairQueue:
    """Waiting job ids, round-robin across users: one user's backlog never starves another.

    Each job is filed under its ``kind`` (for the job service: where it may run and what it
    needs). ``pop(fits)`` serves the first user, in turn, who has a job of a kind that fits
    (e.g. what a free Lambda slot can run), and takes that user's oldest such job; users
    with nothing that fits keep their turn for the next pop.
    """

    def __init__(self) -> None:
        self._by_uid: collections.OrderedDict[int, dict[Hashable, collections.deque[int]]] = \
            collections.OrderedDict()
        self._len = 0

    def push(self, uid: int, job_id: int, kind: Hashable = None, front: bool = False) -> None:
        queue = self._by_uid.setdefault(uid, {}).setdefault(kind, collections.deque())
        queue.appendleft(job_id) if front else queue.append(job_id)
        self._len += 1

    def pop(self, fits: Callable[[Hashable], bool] = lambda kind: True
            ) -> tuple[int, int, Hashable] | None:
        """(uid, job_id, kind) of the next job that fits, or None."""
        for uid, kinds in self._by_uid.items():
            heads = [(queue[0], kind) for kind, queue in kinds.items() if fits(kind)]
            if heads:
                break
        else:
            return None
        job_id, kind = min(heads, key=lambda head: head[0])  # ids grow: the oldest
        kinds[kind].popleft()
        self._len -= 1
        if not kinds[kind]:
            del kinds[kind]
        if kinds:
            self._by_uid.move_to_end(uid)
        else:
            del self._by_uid[uid]
        return uid, job_id, kind

    def remove(self, uid: int, job_id: int) -> bool:
        kinds = self._by_uid.get(uid, {})
        for kind, queue in kinds.items():
            if job_id in queue:
                queue.remove(job_id)
                self._len -= 1
                if not queue:
                    del kinds[kind]
                if not kinds:
                    del self._by_uid[uid]
                return True
        return False

    def __len__(self) -> int:
        return self._len
