"""FairQueue, the pure part of scheduling: round-robin across users, jobs filed by kind."""
from __future__ import annotations

from server.fairqueue import FairQueue


def drain(queue: FairQueue, fits=lambda kind: True) -> list[int]:
    taken = []
    while (nxt := queue.pop(fits)) is not None:
        taken.append(nxt[1])
    return taken


def test_users_take_turns_and_keep_their_own_order():
    queue = FairQueue()
    for job_id in (1, 2, 3, 4):
        queue.push(1, job_id)
    queue.push(2, 5)
    queue.push(3, 6)
    assert len(queue) == 6
    assert drain(queue) == [1, 5, 6, 2, 3, 4]
    assert len(queue) == 0 and queue.pop() is None


def test_pop_takes_the_oldest_job_that_fits_from_the_next_user_who_has_one():
    queue = FairQueue()
    queue.push(1, 1, "local-only")
    queue.push(1, 2, "any")
    queue.push(2, 3, "local-only")
    queue.push(3, 4, "any")
    # a Lambda slot: user 1's first job cannot go, its second can; user 2 has nothing
    burst = lambda kind: kind == "any"
    assert queue.pop(burst) == (1, 2, "any")
    assert queue.pop(burst) == (3, 4, "any")
    assert queue.pop(burst) is None
    # user 2 kept its turn: it comes before user 1, who was just served
    assert drain(queue) == [3, 1]


def test_oldest_first_across_kinds_and_front_for_a_retry():
    queue = FairQueue()
    queue.push(1, 10, "a")
    queue.push(1, 11, "b")
    queue.push(1, 12, "a")
    nxt = queue.pop()
    assert nxt == (1, 10, "a")
    queue.push(1, 10, "a", front=True)  # refused for now: back at the head
    assert drain(queue) == [10, 11, 12]


def test_remove_finds_a_job_under_any_kind():
    queue = FairQueue()
    queue.push(1, 1, "a")
    queue.push(1, 2, "b")
    assert queue.remove(1, 2) and not queue.remove(1, 2) and not queue.remove(9, 1)
    assert len(queue) == 1 and drain(queue) == [1]
