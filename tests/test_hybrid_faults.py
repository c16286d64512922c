"""Hybrid under Redis faults (ARCHITECTURE.md, hybrid contract rule 5), on the real embedded Redis.

Killed: reads fall back to PostgreSQL and report ``error``, writes succeed, the
breaker opens and stops calling Redis, and closes again once Redis is back.
Frozen (SIGSTOP, a partition that keeps data): every call returns within a small
multiple of the socket timeout, nothing piles up, and after the thaw no entry that
missed a write is served.  Sessions written while their entry could not be updated are
not trusted until the store's sync round (``store.sync.tick()``, run here explicitly
instead of waiting for the background loop) has deleted their entries.  Every test
restores the server in ``finally``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable

import asyncpg
import pytest
import redis.asyncio as aioredis

from sessionbench.bench.servers import EmbeddedRedis
from sessionbench.store.backends.hybrid import CircuitBreaker, HybridStore
from sessionbench.store.settings import CacheSettings, RedisSettings
from tests.hybrid_support import RecordingEvents, open_hybrid

pytestmark = pytest.mark.faults

TIMEOUT = 0.25  # the default socket timeout (RedisSettings.socket_timeout)
RESET = 0.2  # breaker reset for these tests


@pytest.fixture
async def faulty(database_url: str, redis_url: str) -> AsyncIterator[tuple[HybridStore, RecordingEvents]]:
    """A hybrid store with default timeouts and a short breaker reset, plus what it reports."""
    events = RecordingEvents()
    settings = RedisSettings(socket_timeout=TIMEOUT, connect_timeout=TIMEOUT, breaker_failures=3, breaker_reset=RESET)
    async with open_hybrid(
        database_url, redis_url, cache=CacheSettings(size=20), redis_settings=settings, events=events, pool_max=20
    ) as store:
        yield store, events


async def _history(store: HybridStore, n: int) -> str:
    sid = str(uuid.uuid4())
    for i in range(n):
        await store.add_message(sid, "user", f"before {i}")
    return sid


async def _recovered(store: HybridStore, sid: str) -> None:
    """Wait out the breaker's reset, then make calls until one probe closes it (bounded)."""
    deadline = time.monotonic() + 10
    while store.breaker.state != CircuitBreaker.CLOSED and time.monotonic() < deadline:
        await asyncio.sleep(RESET)
        await store.get_messages(sid, limit=1)
    assert store.breaker.state == CircuitBreaker.CLOSED


async def test_redis_killed_falls_back_opens_breaker_and_recovers(
    faulty: tuple[HybridStore, RecordingEvents], embedded_redis: EmbeddedRedis
) -> None:
    """Redis dead: reads come from PostgreSQL as errors, writes succeed, the breaker opens, and closes after restart."""
    store, events = faulty
    sid = await _history(store, 5)
    await store.get_messages(sid)
    assert [m.content for m in await store.get_messages(sid)] == [f"before {i}" for i in range(5)]
    assert events.results[-1] == "hit"

    other = await _history(store, 1)
    embedded_redis.kill()
    try:
        got = await store.get_messages(sid)
        assert [m.content for m in got] == [f"before {i}" for i in range(5)]
        assert events.results[-1] == "error"
        written = await store.add_message(sid, "assistant", "during the outage")
        assert written.seq == 6
        assert store.dirty_sessions == 1  # not trusted any more: its reads go straight to PostgreSQL
        for _ in range(3):
            await store.get_messages(other)
        assert store.breaker.state == CircuitBreaker.OPEN
        assert CircuitBreaker.OPEN in events.breaker
        errors = len(events.errors)
        started = time.perf_counter()
        assert [m.seq for m in await store.get_messages(sid)] == [1, 2, 3, 4, 5, 6]
        assert len(events.errors) == errors, "an open breaker must not call Redis"
        assert time.perf_counter() - started < TIMEOUT
        assert store.dirty_sessions >= 1
    finally:
        embedded_redis.restart()

    await _recovered(store, other)
    assert events.breaker[-1] == CircuitBreaker.CLOSED
    await store.sync.tick()  # deletes the entry that missed the write
    assert store.dirty_sessions == 0
    got = await store.get_messages(sid)
    assert [m.content for m in got][-1] == "during the outage"
    assert [m.content for m in await store.get_messages(sid)][-1] == "during the outage"
    assert events.results[-1] == "hit"  # the cache is in use again


async def test_add_and_read_with_redis_killed_answers_from_postgres_and_records_the_write(
    faulty: tuple[HybridStore, RecordingEvents], embedded_redis: EmbeddedRedis
) -> None:
    """Redis dead during ``add_and_read``: the append commits, its window comes from PostgreSQL with
    the new message, the session is not trusted until its entry is dropped, then the cache serves it."""
    store, _ = faulty
    sid = await _history(store, 5)
    await store.get_messages(sid)  # cached
    other = await _history(store, 1)
    embedded_redis.kill()
    try:
        turn = await store.add_and_read(sid, [{"role": "user", "content": "during the outage"}], 20)
        assert [m.seq for m in turn.added] == [6]
        assert [m.content for m in turn.window] == [*(f"before {i}" for i in range(5)), "during the outage"]
        assert turn.cache == "error"
        assert store.dirty_sessions == 1
    finally:
        embedded_redis.restart()
    await _recovered(store, other)
    await store.sync.tick()  # deletes the entry that missed the write
    assert store.dirty_sessions == 0
    turn = await store.add_and_read(sid, [{"role": "assistant", "content": "after"}], 20)
    assert turn.cache == "miss"  # the stale entry is gone: read from PostgreSQL and populated
    assert [m.content for m in turn.window][-2:] == ["during the outage", "after"]
    turn = await store.add_and_read(sid, [{"role": "user", "content": "cached again"}], 20)
    assert turn.cache == "hit"
    assert [m.seq for m in turn.window] == list(range(1, 9))


async def test_add_and_read_after_a_script_flush_loads_the_scripts_and_runs_once(
    faulty: tuple[HybridStore, RecordingEvents], redis_url: str
) -> None:
    """``SCRIPT FLUSH`` (a restarted or failed-over server): the pipelined scripts are loaded and sent
    again; the append lands once and the window is right."""
    store, _ = faulty
    sid = await _history(store, 3)
    await store.get_messages(sid)
    admin = aioredis.Redis.from_url(redis_url)
    try:
        await admin.script_flush()
    finally:
        await admin.aclose()
    turn = await store.add_and_read(sid, [{"role": "user", "content": "after the flush"}], 20)
    assert [m.content for m in turn.window] == ["before 0", "before 1", "before 2", "after the flush"]
    assert turn.cache == "hit"
    assert [m.seq for m in await store.get_messages(sid)] == [1, 2, 3, 4]


async def test_redis_frozen_calls_stay_bounded_and_no_stale_entry_after_thaw(
    faulty: tuple[HybridStore, RecordingEvents], embedded_redis: EmbeddedRedis
) -> None:
    """Redis frozen: 64 concurrent calls each return within 4x the socket timeout; after thaw nothing stale is read."""
    store, events = faulty
    sids = [await _history(store, 3) for _ in range(4)]
    other = await _history(store, 1)
    for sid in sids:
        await store.get_messages(sid)  # cached: these entries would go stale

    embedded_redis.freeze()
    try:

        async def timed(call: Awaitable[object]) -> float:
            started = time.perf_counter()
            await call
            return time.perf_counter() - started

        calls = [store.get_messages(sids[i % 4]) for i in range(32)]
        calls += [store.add_message(sids[i % 4], "assistant", f"frozen {i}") for i in range(32)]
        started = time.perf_counter()
        durations = await asyncio.gather(*(timed(c) for c in calls))
        wall = time.perf_counter() - started
        assert max(durations) < 4 * TIMEOUT, f"slowest call took {max(durations):.3f} s"
        assert wall < 4 * TIMEOUT, "concurrent calls queued behind each other"
        assert store.breaker.state == CircuitBreaker.OPEN

        # Breaker open: calls do not wait on Redis at all, and writes are remembered.
        started = time.perf_counter()
        for i, sid in enumerate(sids):
            await store.add_message(sid, "assistant", f"while open {i}")
        assert time.perf_counter() - started < TIMEOUT
        assert store.dirty_sessions == len(sids)
    finally:
        embedded_redis.thaw()

    # The frozen server kept every entry as it was before the writes; none may be served now.
    await _recovered(store, other)
    for i, sid in enumerate(sids):
        got = await store.get_messages(sid, limit=20)  # still untrusted: answered by PostgreSQL
        assert got[-1].content == f"while open {i}"
    await store.sync.tick()
    for i, sid in enumerate(sids):
        got = await store.get_messages(sid, limit=20)
        assert got[-1].content == f"while open {i}"
        assert [m.seq for m in got] == list(range(1, len(got) + 1))
    assert "outage" in events.invalidations


async def _open_breaker_by_freezing(store: HybridStore, sid: str, server: EmbeddedRedis) -> None:
    """Freeze Redis and fail reads until the breaker opens (each waits one socket timeout)."""
    server.freeze()
    for _ in range(3):
        await store.get_messages(sid)
    assert store.breaker.state == CircuitBreaker.OPEN


async def test_cancelled_probe_does_not_wedge_the_breaker(
    faulty: tuple[HybridStore, RecordingEvents], embedded_redis: EmbeddedRedis
) -> None:
    """A half-open probe whose task is cancelled mid-call expires, so the breaker closes again once Redis answers."""
    store, _ = faulty
    sid = await _history(store, 2)
    try:
        await _open_breaker_by_freezing(store, sid, embedded_redis)
        await asyncio.sleep(RESET)
        probe = asyncio.create_task(store.get_messages(sid))
        await asyncio.sleep(TIMEOUT / 5)  # the probe's lookup is waiting on the frozen server
        assert store.breaker.state == CircuitBreaker.HALF_OPEN
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
    finally:
        embedded_redis.thaw()
    await _recovered(store, sid)


async def test_write_failing_during_cleanup_stays_marked(
    faulty: tuple[HybridStore, RecordingEvents], embedded_redis: EmbeddedRedis
) -> None:
    """A write that misses the cache while the sync round's cleanup is in flight is still marked after that cleanup."""
    store, _ = faulty
    sid = await _history(store, 3)
    await store.get_messages(sid)
    embedded_redis.freeze()
    try:
        await store.add_message(sid, "assistant", "first miss")  # times out on Redis: sid is marked
        assert store.dirty_sessions == 1
        assert store.breaker.state == CircuitBreaker.CLOSED
        cleanup = asyncio.create_task(store.sync.tick())  # its delete waits on the frozen server
        await asyncio.sleep(0.02)
        await store.add_message(sid, "assistant", "second miss")  # the session is untrusted: marked again
    finally:
        embedded_redis.thaw()
    await cleanup
    assert store.dirty_sessions == 1, "the second miss was forgotten by a cleanup that started before it"
    got = await store.get_messages(sid)
    assert [m.content for m in got][-2:] == ["first miss", "second miss"]
    await store.sync.tick()
    assert store.dirty_sessions == 0


async def test_cancelled_append_marks_its_session(
    faulty: tuple[HybridStore, RecordingEvents], database_url: str
) -> None:
    """An append cancelled while its commit is pending (outcome unknown) leaves its session marked for a cache drop."""
    store, _ = faulty
    sid = await _history(store, 2)
    await store.get_messages(sid)
    blocker = await asyncpg.connect(database_url, timeout=10)
    try:
        async with blocker.transaction():
            await blocker.execute("SELECT 1 FROM chat_sessions WHERE session_id = $1::uuid FOR UPDATE", sid)
            append = asyncio.create_task(store.add_message(sid, "user", "in doubt"))
            await asyncio.sleep(0.1)  # the append's statement is waiting for the row lock
            assert not append.done()
            append.cancel()
            with pytest.raises(asyncio.CancelledError):
                await append
        assert store.dirty_sessions == 1
    finally:
        await blocker.close()
    got = await store.get_messages(sid)
    assert [m.seq for m in got] == list(range(1, len(got) + 1))
    await store.sync.tick()
    assert store.dirty_sessions == 0
