"""store/tasks.py: background tasks that talk to Redis stop, although redis-py can swallow a cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from typing import Any

import redis.asyncio as aioredis

from sessionbench.store import open_store
from sessionbench.store.tasks import stop_task


async def _ping_forever(client: aioredis.Redis) -> None:
    while True:
        await client.ping()


async def test_stop_task_ends_a_redis_loop_every_time(redis_url: str) -> None:
    """300 loops of PING on a real Redis, each stopped at a random moment: stop_task ends every
    one (on CPython 3.11 a single cancel() leaves about half of them running: gh-86296)."""
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    rng = random.Random(7)
    survived_one_cancel = 0
    try:
        for _ in range(300):
            task = asyncio.get_running_loop().create_task(_ping_forever(client))
            await asyncio.sleep(rng.random() * 0.003)
            task.cancel()
            await asyncio.sleep(0.002)  # a cancel that was delivered has ended the task by now
            survived_one_cancel += not task.done()
            t0 = time.perf_counter()
            assert await stop_task(task, seconds=2.0)
            assert task.done()
            assert time.perf_counter() - t0 < 2.0
    finally:
        await client.aclose()
    print(f"a single cancel() left {survived_one_cancel} of 300 loops running")


async def test_stop_task_reports_a_task_that_refuses_to_stop() -> None:
    """A task that catches every cancellation: stop_task gives up after ``seconds`` and says so."""
    stop = asyncio.Event()

    async def stubborn() -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.CancelledError):  # the point: it refuses
                await asyncio.sleep(1)

    task = asyncio.get_running_loop().create_task(stubborn())
    await asyncio.sleep(0)
    t0 = time.perf_counter()
    assert await stop_task(task, seconds=0.2) is False
    assert 0.15 < time.perf_counter() - t0 < 1.0
    stop.set()
    assert await stop_task(task, seconds=2.0)
    assert await stop_task(None)


async def test_hybrid_close_returns_while_its_sync_loop_is_deleting(database_url: str, redis_url: str) -> None:
    """Open and close the hybrid store 60 times with a sync interval of 1 ms and entries to delete
    in every round (the loop is in a Redis call when close() comes): every close returns promptly
    and leaves no sync task behind."""
    rng = random.Random(11)
    for _ in range(60):
        store: Any = await open_store("hybrid", database_url=database_url, redis_url=redis_url,
                                      **{"cache.sync_interval": 0.001})  # fmt: skip
        deadline = time.perf_counter() + rng.random() * 0.02
        while time.perf_counter() < deadline:
            store.sync.mark([str(uuid.uuid4()) for _ in range(20)])  # the next round deletes their entries
            await asyncio.sleep(0.0005)
        t0 = time.perf_counter()
        await store.close()
        assert time.perf_counter() - t0 < 3.0
    left = [t for t in asyncio.all_tasks() if t.get_name() == "sessionstore-cache-sync" and not t.done()]
    assert left == []
