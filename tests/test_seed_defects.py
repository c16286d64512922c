"""The seed's defects (``sessionbench/bench/harness/seed.py`` lists them), as regression tests the store passes and the
seed baseline fails.

Each test runs against the hybrid store and against ``sessionbench.bench.harness.seed``
(the seed's ``SessionManager`` reproduced faithfully).  The baseline cases are
``xfail(strict=True)``: they must keep failing, so the tests are shown to detect the
defect they name, and the baseline is shown to still be the seed's design.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
import redis.asyncio as aioredis

from sessionbench.bench.harness.seed import SeedNaiveStore, _SeedDatabase, open_seed_baseline
from sessionbench.bench.servers import EmbeddedPostgres
from sessionbench.store import StoreUnavailable, open_store
from sessionbench.store.backends.hybrid import HybridStore
from sessionbench.store.backends.postgres import HistoryWindow, PostgresStore
from sessionbench.store.settings import CacheSettings
from tests.hybrid_support import RecordingEvents, cache_keys, open_hybrid


def seed_xfail(reason: str) -> Any:
    return pytest.param("seed", marks=pytest.mark.xfail(strict=True, reason=f"seed defect: {reason}"))


class Gate:
    """Pauses the next database read *after* it returned, until released."""

    def __init__(self) -> None:
        self.armed = False
        self.read_done = asyncio.Event()
        self.release = asyncio.Event()

    async def passed(self) -> None:
        if self.armed:
            self.armed = False
            self.read_done.set()
            await asyncio.wait_for(self.release.wait(), 10)


class GatedPostgres(PostgresStore):
    """The real PostgreSQL backend whose ``read_window`` can be held after it ran."""

    gate = Gate()

    async def read_window(self, session_id: str, limit: int, before_seq: int | None) -> HistoryWindow | None:
        window = await super().read_window(session_id, limit, before_seq)
        await self.gate.passed()
        return window


class GatedSeedDatabase(_SeedDatabase):
    """The seed's real database service whose last-N read can be held after it ran."""

    gate = Gate()

    async def get_session_messages(self, session_id: str, limit: int = 20) -> list[dict[str, Any]]:
        rows = await super().get_session_messages(session_id, limit)
        await self.gate.passed()
        return rows


class Subject:
    """One design under test, behind the few calls these tests need."""

    kind: str
    admin: aioredis.Redis

    async def create(self, sid: str) -> None:
        raise NotImplementedError

    async def append(self, sid: str, content: str) -> None:
        raise NotImplementedError

    async def read(self, sid: str, limit: int) -> list[str]:
        raise NotImplementedError

    def keys(self, sid: str) -> list[str]:
        raise NotImplementedError

    def gate(self) -> Gate:
        raise NotImplementedError

    async def expire_cache(self, sid: str) -> None:
        """Let the session's cache keys expire for real (PEXPIRE 1 ms), then wait until they are gone."""
        for key in self.keys(sid):
            await self.admin.pexpire(key, 1)
        for _ in range(200):
            if not await self.admin.exists(*self.keys(sid)):
                return
            await asyncio.sleep(0.005)
        raise AssertionError("cache keys did not expire")

    async def cache_dump(self, sid: str) -> list[Any]:
        """Everything Redis holds for the session (type-aware), for before/after comparisons."""
        out: list[Any] = []
        for key in self.keys(sid):
            kind = await self.admin.type(key)
            if kind == "list":
                out.append(await self.admin.lrange(key, 0, -1))
            elif kind == "hash":
                out.append(await self.admin.hgetall(key))
            else:
                out.append(await self.admin.get(key) if kind == "string" else None)
        return out


class HybridSubject(Subject):
    kind = "hybrid"

    def __init__(self, store: HybridStore, admin: aioredis.Redis, events: RecordingEvents) -> None:
        self.store = store
        self.admin = admin
        self.events = events

    async def create(self, sid: str) -> None:
        await self.store.create_session(sid)

    async def append(self, sid: str, content: str) -> None:
        await self.store.add_message(sid, "user", content)

    async def read(self, sid: str, limit: int) -> list[str]:
        return [m.content for m in await self.store.get_messages(sid, limit=limit)]

    def keys(self, sid: str) -> list[str]:
        return list(cache_keys(sid, self.store.cache.key_prefix))

    def gate(self) -> Gate:
        assert isinstance(self.store.durable, GatedPostgres)
        return self.store.durable.gate


class SeedSubject(Subject):
    kind = "seed"

    def __init__(self, store: SeedNaiveStore, admin: aioredis.Redis) -> None:
        self.store = store
        self.admin = admin

    async def create(self, sid: str) -> None:
        await self.store.create_session(sid)

    async def append(self, sid: str, content: str) -> None:
        await self.store.add_message(sid, "user", content)

    async def read(self, sid: str, limit: int) -> list[str]:
        return [m["content"] for m in await self.store.get_messages(sid, limit=limit)]

    def keys(self, sid: str) -> list[str]:
        return [self.store._redis_key(sid)]

    def gate(self) -> Gate:
        assert isinstance(self.store.db, GatedSeedDatabase)
        return self.store.db.gate


async def open_subject(kind: str, database_url: str, redis_url: str, stack: AsyncExitStack, **cache: Any) -> Subject:
    admin = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
    stack.push_async_callback(admin.aclose)
    if kind == "hybrid":
        events = RecordingEvents()
        GatedPostgres.gate = Gate()
        store = await stack.enter_async_context(
            open_hybrid(database_url, redis_url, cache=CacheSettings(**cache), events=events, durable_cls=GatedPostgres)
        )
        return HybridSubject(store, admin, events)
    seed = await open_seed_baseline(database_url, redis_url)
    stack.push_async_callback(seed.close)
    await seed.reset()
    GatedSeedDatabase.gate = Gate()
    seed.db = GatedSeedDatabase(seed.pool)
    return SeedSubject(seed, admin)


@pytest.fixture
async def subject(request: pytest.FixtureRequest, database_url: str, redis_url: str) -> AsyncIterator[Subject]:
    """The design named by the test's parameter, on clean servers."""
    async with AsyncExitStack() as stack:
        yield await open_subject(request.param, database_url, redis_url, stack)


def contents(n: int, start: int = 0) -> list[str]:
    return [f"message {i}" for i in range(start, start + n)]


# ----------------------------------------------------------------------------- (a) expiry


@pytest.mark.parametrize(
    "subject", ["hybrid", seed_xfail("an append after expiry recaches only the new message (seed L264)")], indirect=True
)
async def test_append_after_cache_expiry_keeps_full_last_20(subject: Subject) -> None:
    """After the cache entry expires, one append then a read of the last 20 returns all 20, not just the newest."""
    sid = str(uuid.uuid4())
    await subject.create(sid)
    for text in contents(25):
        await subject.append(sid, text)
    assert await subject.read(sid, 20) == contents(20, start=5)  # cached now
    await subject.expire_cache(sid)
    await subject.append(sid, "message 25")
    assert await subject.read(sid, 20) == contents(20, start=6)
    assert await subject.read(sid, 20) == contents(20, start=6)  # and again, now from whatever was cached


# ----------------------------------------------------------------------------- (b) concurrent writers

WRITERS, PER_WRITER = 4, 25


def _writer_thread(kind: str, database_url: str, redis_url: str, sid: str, w: int, barrier: threading.Barrier) -> None:
    """One worker process' worth of appends: its own event loop, its own store and pools."""

    async def run() -> None:
        async with AsyncExitStack() as stack:
            if kind == "hybrid":
                store = await open_store("hybrid?cache_size=100", database_url=database_url, redis_url=redis_url)
                stack.push_async_callback(store.close)

                async def append(text: str) -> None:
                    await store.add_message(sid, "user", text)
            else:
                seed = await open_seed_baseline(database_url, redis_url)
                stack.push_async_callback(seed.close)

                async def append(text: str) -> None:
                    await seed.add_message(sid, "user", text)

            barrier.wait(timeout=30)
            for i in range(PER_WRITER):
                await append(f"w{w}-{i}")

    asyncio.run(run())


@pytest.mark.parametrize("kind", ["hybrid", seed_xfail("read-modify-write of one blob loses appends (seed L263-L278)")])
async def test_concurrent_writers_lose_nothing_and_keep_order(kind: str, database_url: str, redis_url: str) -> None:
    """4 workers x 25 concurrent appends to one session: a read of all 100 misses none and keeps each writer's order."""
    sid = str(uuid.uuid4())
    async with AsyncExitStack() as stack:
        subject = await open_subject(kind, database_url, redis_url, stack, size=100)
        await subject.create(sid)
        await subject.read(sid, 20)  # the (empty) history is cached before the writers start
        barrier = threading.Barrier(WRITERS)
        await asyncio.gather(
            *(asyncio.to_thread(_writer_thread, kind, database_url, redis_url, sid, w, barrier) for w in range(WRITERS))
        )
        expected = {w: [f"w{w}-{i}" for i in range(PER_WRITER)] for w in range(WRITERS)}
        tail = await subject.read(sid, 50)  # within both designs' cache windows
        assert len(tail) == 50
        for w, mine in expected.items():
            seen = [c for c in tail if c.startswith(f"w{w}-")]
            assert seen == mine[len(mine) - len(seen) :], f"writer {w}: a message is missing from the last 50"
        everything = await subject.read(sid, 100)
        for w, mine in expected.items():
            assert [c for c in everything if c.startswith(f"w{w}-")] == mine
        assert len(everything) == WRITERS * PER_WRITER
        assert everything[-50:] == tail


# ----------------------------------------------------------------------------- (c) stale populate


@pytest.mark.parametrize(
    "subject", ["hybrid", seed_xfail("a populate after a miss overwrites a newer append (seed L218)")], indirect=True
)
async def test_stale_populate_racing_an_append_is_discarded(subject: Subject) -> None:
    """A read that missed and read PostgreSQL before an append cannot cache its older snapshot over the append."""
    sid = str(uuid.uuid4())
    await subject.create(sid)
    for text in contents(3):
        await subject.append(sid, text)
    await subject.expire_cache(sid)

    gate = subject.gate()
    gate.armed = True
    reader = asyncio.create_task(subject.read(sid, 20))
    await asyncio.wait_for(gate.read_done.wait(), 10)  # missed, (leased,) read 3 messages, populate pending
    await subject.append(sid, "message 3")  # committed and acknowledged while the populate is pending
    gate.release.set()
    snapshot = await asyncio.wait_for(reader, 10)
    assert snapshot == contents(3)  # the racing read itself may return what it read

    assert await subject.read(sid, 20) == contents(4)
    if isinstance(subject, HybridSubject):
        assert subject.events.populates == ["discarded", "stored"]


# ----------------------------------------------------------------------------- (d) DB failure


@pytest.mark.faults
@pytest.mark.parametrize(
    "subject", ["hybrid", seed_xfail("a failed database write is swallowed and cached (seed L251-L255)")], indirect=True
)
async def test_db_write_failure_raises_and_leaves_cache_untouched(
    subject: Subject, embedded_postgres: EmbeddedPostgres
) -> None:
    """With PostgreSQL down an append raises StoreUnavailable and Redis holds exactly what it held before."""
    sid = str(uuid.uuid4())
    await subject.create(sid)
    for text in contents(5):
        await subject.append(sid, text)
    assert await subject.read(sid, 20) == contents(5)
    before = await subject.cache_dump(sid)
    assert before[0], "the history should be cached before the failure"
    embedded_postgres.kill()
    try:
        with pytest.raises(StoreUnavailable):
            await subject.append(sid, "lost while PostgreSQL is down")
        assert await subject.cache_dump(sid) == before
    finally:
        embedded_postgres.restart()
    assert await _eventually(lambda: subject.read(sid, 20)) == contents(5)


async def _eventually(read: Callable[[], Any]) -> Any:
    """The first answer after PostgreSQL restarted (pooled connections from before it died fail once)."""
    for _ in range(20):
        try:
            return await read()
        except StoreUnavailable:
            await asyncio.sleep(0.05)
    return await read()


# ----------------------------------------------------------------------------- the baseline stays the seed


async def test_seed_baseline_runs_two_statements_per_append(database_url: str, redis_url: str) -> None:
    """The baseline keeps the seed's shape: an append is an INSERT plus a separate UPDATE, outside a transaction."""
    seed = await open_seed_baseline(database_url, redis_url)
    try:
        await seed.reset()
        sid = await seed.create_session()
        seen: list[str] = []
        conns = [await seed.pool.acquire() for _ in range(seed.pool.get_size())]
        for conn in conns:
            conn.add_query_logger(lambda record: seen.append(" ".join(record.query.split())))
        for conn in conns:
            await seed.pool.release(conn)
        await asyncio.sleep(0)
        seen.clear()
        await seed.add_message(sid, "user", "hello")
        await asyncio.sleep(0)  # query loggers are called soon, not inline
        statements = [q for q in seen if not q.startswith("SELECT pg_advisory_unlock_all()")]
        assert [q.split()[0] for q in statements] == ["INSERT", "UPDATE"]
        assert not any(q.startswith(("BEGIN", "COMMIT")) for q in seen)
        cached = seed.redis.get(seed._redis_key(sid)) if seed.redis else None
        assert cached is not None
        assert "metadata" not in cached  # the cache's shape differs from the database's
    finally:
        await seed.close()


# ----------------------------------------------------------------------------- (a) in two keys


async def test_list_lost_alone_never_becomes_an_entry_of_only_the_newest(database_url: str, redis_url: str) -> None:
    """When only the message list of an entry vanishes (LRU eviction, a stray DEL), the entry is dropped, not extended.

    The seed's defect (a) in the hybrid's two-key layout: extending the surviving hash
    with a fresh list would cache only the newest message, and sliding TTL would keep
    that entry answering reads as bypasses.
    """
    async with AsyncExitStack() as stack:
        subject = await open_subject("hybrid", database_url, redis_url, stack)
        assert isinstance(subject, HybridSubject)
        for case in ("append", "read"):
            sid = str(uuid.uuid4())
            list_key, hash_key, _ = cache_keys(sid)
            for text in contents(25):
                await subject.append(sid, text)
            assert await subject.read(sid, 20) == contents(20, start=5)
            await subject.admin.delete(list_key)  # the hash survives
            if case == "append":
                await subject.append(sid, "message 25")
                assert await subject.admin.exists(list_key, hash_key) == 0, "an entry holding only the newest"
                assert subject.events.invalidations[-1] == "lost"
                assert await subject.read(sid, 20) == contents(20, start=6)
            else:
                assert await subject.read(sid, 20) == contents(20, start=5)
                assert subject.events.results[-1] == "miss"  # dropped and refilled, not a bypass
            assert await subject.read(sid, 20) == await subject.read(sid, 20)
            assert subject.events.results[-1] == "hit"
            assert await subject.admin.llen(list_key) == (26 if case == "append" else 25)  # the whole history
