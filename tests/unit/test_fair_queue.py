"""``FairAsyncQueue`` on its own: first come first served, deadlines, cancellation, idle order. No database: the
pool's behaviour on PostgreSQL is in tests/integration/test_pool_fairness.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy.util import greenlet_spawn
from sqlalchemy.util.queue import Empty, Full

from productos.infra.db.pool import FairAsyncQueue


def get(queue: FairAsyncQueue, timeout: float | None = 5.0) -> asyncio.Task[Any]:
    """A caller waiting in ``queue``, as the pool's checkout waits: inside SQLAlchemy's greenlet."""
    return asyncio.ensure_future(greenlet_spawn(queue.get, True, timeout))


async def until_waiting(queue: FairAsyncQueue, count: int) -> None:
    for _ in range(100):
        if queue.waiting == count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{queue.waiting} waiting, not {count}")


async def test_waiters_are_served_in_the_order_they_came() -> None:
    queue = FairAsyncQueue(maxsize=3)
    waiters = []
    for n in range(3):
        waiters.append(get(queue))
        await until_waiting(queue, n + 1)
    for item in ("a", "b", "c"):
        queue.put(item)
    assert await asyncio.gather(*waiters) == ["a", "b", "c"]
    assert queue.qsize() == 0 and queue.waiting == 0


async def test_a_newcomer_does_not_take_an_item_handed_to_a_waiter() -> None:
    queue = FairAsyncQueue(maxsize=1)
    waiter = get(queue)
    await until_waiting(queue, 1)
    # Scheduled before the waiter is woken: it runs first, as a request that has just arrived does.
    newcomer = get(queue)
    queue.put("connection")
    await asyncio.sleep(0)
    assert waiter.done() and waiter.result() == "connection"
    assert not newcomer.done() and queue.waiting == 1
    queue.put(waiter.result())
    assert await newcomer == "connection"


async def test_idle_items_are_taken_newest_first_with_use_lifo_else_oldest_first() -> None:
    lifo, fifo = FairAsyncQueue(maxsize=3, use_lifo=True), FairAsyncQueue(maxsize=3)
    for queue in (lifo, fifo):
        for item in (1, 2, 3):
            queue.put(item, block=False)
    assert [lifo.get_nowait() for _ in range(3)] == [3, 2, 1]
    assert [await greenlet_spawn(fifo.get, True, 1.0) for _ in range(3)] == [1, 2, 3]  # no wait: idle ones
    with pytest.raises(Empty):
        fifo.get(block=False)


async def test_a_full_queue_refuses_what_does_not_fit() -> None:
    queue = FairAsyncQueue(maxsize=1)
    queue.put_nowait("kept")
    assert queue.full()
    with pytest.raises(Full):
        queue.put_nowait("overflow")
    assert queue.qsize() == 1
    unbounded = FairAsyncQueue(maxsize=0)
    for n in range(10):
        unbounded.put_nowait(n)
    assert unbounded.qsize() == 10 and not unbounded.full()


async def test_a_waiter_gives_up_at_its_deadline_and_leaves_the_line() -> None:
    queue = FairAsyncQueue(maxsize=1)
    started = time.monotonic()
    with pytest.raises(Empty):
        await greenlet_spawn(queue.get, True, 0.2)
    assert 0.2 <= time.monotonic() - started < 1.0
    assert queue.waiting == 0
    queue.put("connection")  # nobody to hand it to: it stays idle
    assert queue.qsize() == 1
    assert await greenlet_spawn(queue.get, True, 0.0) == "connection"


async def test_a_cancelled_waiter_leaves_the_line() -> None:
    queue = FairAsyncQueue(maxsize=1)
    first, second = get(queue), get(queue)
    await until_waiting(queue, 2)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert queue.waiting == 1
    queue.put("connection")
    assert await second == "connection"


async def test_an_item_handed_to_a_waiter_cancelled_before_it_ran_goes_to_the_next() -> None:
    queue = FairAsyncQueue(maxsize=1)
    first, second = get(queue), get(queue)
    await until_waiting(queue, 2)
    queue.put("connection")  # the first waiter's now, but its task has not run yet
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second == "connection"
    assert queue.qsize() == 0 and queue.waiting == 0


async def test_an_item_handed_to_a_cancelled_waiter_with_no_one_behind_is_kept_idle() -> None:
    queue = FairAsyncQueue(maxsize=1)
    waiter = get(queue)
    await until_waiting(queue, 1)
    queue.put("connection")
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert queue.qsize() == 1 and queue.get_nowait() == "connection"


async def test_a_waiter_woken_at_its_deadline_and_cancelled_loses_nothing() -> None:
    queue = FairAsyncQueue(maxsize=1)
    waiter = get(queue, timeout=0.05)
    await until_waiting(queue, 1)
    await asyncio.sleep(0.1)  # the deadline has passed...
    waiter.cancel()  # ...and the caller's own deadline cancels it too
    with pytest.raises((asyncio.CancelledError, Empty)):
        await waiter
    queue.put("connection")
    assert queue.qsize() == 1 and queue.waiting == 0
