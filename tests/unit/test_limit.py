"""SharedLimit: one concurrency limit over every thread and event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ttc_graph._limit import SharedLimit


class InFlight:
    """Counts holders inside the limit, from any thread."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.done = 0
        self._lock = threading.Lock()

    async def hold(self, limit: SharedLimit, turns: int = 3) -> None:
        async with limit:
            with self._lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
            for _ in range(turns):
                await asyncio.sleep(0)
            with self._lock:
                self.now -= 1
                self.done += 1


async def test_one_loop_never_holds_more_than_the_limit() -> None:
    limit, seen = SharedLimit(3), InFlight()
    await asyncio.gather(*(seen.hold(limit) for _ in range(10)))
    assert (seen.peak, seen.done, limit.held, limit.peak) == (3, 10, 0, 3)


def test_two_loops_in_two_threads_share_one_limit() -> None:
    limit, seen = SharedLimit(2), InFlight()
    start = threading.Barrier(2)

    def loop_of_tasks() -> None:
        async def main() -> None:
            start.wait()
            await asyncio.gather(*(seen.hold(limit, turns=50) for _ in range(6)))

        asyncio.run(main())

    threads = [threading.Thread(target=loop_of_tasks) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert seen.done == 12 and seen.peak <= 2 and limit.peak <= 2 and limit.held == 0


async def test_a_cancelled_waiter_takes_no_place() -> None:
    limit = SharedLimit(1)
    await limit.acquire()
    waiter = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    limit.release()
    assert limit.held == 0
    await asyncio.wait_for(limit.acquire(), 5)  # the place is free, not lost to the cancelled waiter
    assert limit.held == 1


async def test_a_waiter_cancelled_after_the_place_was_handed_to_it_gives_it_back() -> None:
    limit = SharedLimit(1)
    await limit.acquire()
    waiter = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0)
    limit.release()  # hands the place to the waiter; it has not run yet
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limit.held == 0
    third = asyncio.create_task(limit.acquire())
    await asyncio.wait_for(third, 5)
    assert limit.held == 1


async def test_waiters_are_served_in_order() -> None:
    limit, order = SharedLimit(1), []
    await limit.acquire()

    async def wait(k: int) -> None:
        async with limit:
            order.append(k)

    tasks = [asyncio.create_task(wait(k)) for k in range(4)]
    await asyncio.sleep(0)
    limit.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3] and limit.held == 0


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_a_limit_is_a_positive_integer(bad: object) -> None:
    with pytest.raises(ValueError, match="limit"):
        SharedLimit(bad)  # type: ignore[arg-type]
