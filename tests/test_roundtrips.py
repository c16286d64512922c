"""The round-trip table of ARCHITECTURE.md, proven by counting real wire traffic.

Nothing here trusts what a store says about itself:

* **Redis** is counted on the server: ``INFO stats`` ``total_writes_processed`` grows by
  one per reply flushed to a client, i.e. per round trip (a pipeline is one), and
  ``total_reads_processed`` by one per request read.  The counters are sampled with
  ``INFO`` from a separate connection; the first sample's own reply lands in the delta
  and the second sample's own request too, so each delta is reduced by exactly one.
  ``INFO commandstats`` also shows that every round trip was one ``EVALSHA`` (no
  ``EVAL`` fallback, no ``SCRIPT LOAD``).  Commands run *inside* a script are counted
  by Redis as commands too, which is why round trips come from the I/O counters.
* **PostgreSQL** is counted with asyncpg's ``Connection.add_query_logger`` on every
  connection of the store's own pool (built by ``sessionbench.store.backends.postgres.create_pool``): every
  query sent is logged.  asyncpg's default reset-on-release query would be one more
  round trip per operation; ``test_pool_release_costs_no_round_trip`` pins its absence.

Every measurement is preceded by one warm-up run of the same operation, so statement
preparation (asyncpg's Parse/Describe round trip, type introspection), script loading
and connection set-up (HELLO, CLIENT SETINFO) are excluded: the table is about the
steady state.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from sessionbench.store import NewMessage, SessionStore, open_store
from sessionbench.store.backends.hybrid import HybridStore, create_redis
from sessionbench.store.backends.postgres import PostgresStore, create_pool, migrate
from sessionbench.store.settings import CacheSettings, RedisSettings
from tests.hybrid_support import RecordingEvents

TURN = [NewMessage("user", "what is my name?"), NewMessage("assistant", "Alice.")]


@dataclass
class Counts:
    redis_round_trips: int
    redis_requests: int
    redis_commands: dict[str, int]
    pg_queries: list[str]
    pg_resets: int


class WireCounter:
    """Counts Redis round trips on the server and every PostgreSQL query on the pool's connections."""

    def __init__(self, admin: aioredis.Redis, pool: asyncpg.Pool | None) -> None:
        self.admin = admin
        self.pool = pool
        self.queries: list[str] = []
        self.reset_query: str | None = None

    async def attach(self) -> None:
        """Add a query logger to every connection the pool has (the tests use a pool of one)."""
        if self.pool is None:
            return
        conns = [await self.pool.acquire() for _ in range(self.pool.get_size())]
        for conn in conns:
            self.reset_query = conn.get_reset_query()
            conn.add_query_logger(lambda record: self.queries.append(record.query))
        for conn in conns:
            await self.pool.release(conn)

    async def _sample(self) -> dict[str, Any]:
        info: dict[str, Any] = await self.admin.info("stats", "commandstats")
        return info

    async def count(self, op: Callable[[], Awaitable[Any]]) -> Counts:
        await asyncio.sleep(0)  # deliver query-log callbacks still pending from earlier calls
        self.queries.clear()
        before = await self._sample()
        await op()
        after = await self._sample()
        await asyncio.sleep(0)  # query loggers are called soon after the query, not inline
        commands = {
            key.removeprefix("cmdstat_"): value["calls"] - before.get(key, {"calls": 0})["calls"]
            for key, value in after.items()
            if key.startswith("cmdstat_") and key != "cmdstat_info"
        }
        resets = sum(1 for q in self.queries if q == self.reset_query)
        return Counts(
            redis_round_trips=after["total_writes_processed"] - before["total_writes_processed"] - 1,
            redis_requests=after["total_reads_processed"] - before["total_reads_processed"] - 1,
            redis_commands={k: v for k, v in commands.items() if v},
            pg_queries=[q for q in self.queries if q != self.reset_query],
            pg_resets=resets,
        )


@dataclass
class Rig:
    store: SessionStore
    counter: WireCounter
    events: RecordingEvents


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A separate Redis connection for sampling the server's counters."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
    await client.ping()
    yield client
    await client.aclose()


@pytest.fixture
async def rig(
    request: pytest.FixtureRequest, database_url: str, redis_url: str, admin: aioredis.Redis
) -> AsyncIterator[Rig]:
    """The backend named by the parameter, on a single-connection pool from the store's own factory."""
    events = RecordingEvents()
    async with AsyncExitStack() as stack:
        pool: asyncpg.Pool | None = None
        store: SessionStore
        if request.param == "memory":
            store = await open_store("memory")
            stack.push_async_callback(store.close)
        else:
            pool = await create_pool(database_url, min_size=1, max_size=1)
            stack.push_async_callback(pool.close)
            await migrate(pool)
            durable = PostgresStore(pool)
            store = durable
            if request.param == "hybrid":
                client = create_redis(redis_url, RedisSettings())
                stack.push_async_callback(client.aclose)
                hybrid = HybridStore(client, durable, cache=CacheSettings(size=50), events=events)
                await hybrid.load_scripts()
                store = hybrid
        counter = WireCounter(admin, pool)
        await counter.attach()
        yield Rig(store, counter, events)


def new_sid() -> str:
    return str(uuid.uuid4())


async def seeded(store: SessionStore, n: int) -> str:
    """A session holding ``n`` messages (appended in turns of two)."""
    sid = new_sid()
    for i in range(0, n, 2):
        await store.add_messages(sid, [NewMessage("user", f"q{i}"), NewMessage("assistant", f"a{i}")])
    return sid


def assert_counts(counts: Counts, *, pg: int, redis: int) -> None:
    assert len(counts.pg_queries) == pg, counts.pg_queries
    assert counts.redis_round_trips == redis, counts
    assert counts.redis_requests == redis, counts
    assert counts.redis_commands.get("evalsha", 0) == redis, counts.redis_commands
    for command in ("eval", "script|load"):
        assert command not in counts.redis_commands, counts.redis_commands


# ----------------------------------------------------------------------------- memory and postgres


@pytest.mark.parametrize("rig", ["memory", "postgres"], indirect=True)
@pytest.mark.parametrize("operation", ["get_messages", "add_message", "add_messages", "add_and_read"])
async def test_single_backend_round_trips(rig: Rig, operation: str, database_url: str) -> None:
    """memory makes 0 calls to either server; postgres makes exactly 1 query per read, append and turn,
    and 2 for ``add_and_read`` (the append, then the read: one statement would miss a concurrent append
    that committed while it waited for the session's row, see PostgresStore)."""
    store = rig.store
    expected_pg = (2 if operation == "add_and_read" else 1) if isinstance(store, PostgresStore) else 0
    sid, warm = await seeded(store, 6), await seeded(store, 6)

    def op(target: str) -> Callable[[], Awaitable[Any]]:
        if operation == "get_messages":
            return lambda: store.get_messages(target, limit=20)
        if operation == "add_message":
            return lambda: store.add_message(target, "user", "one more")
        if operation == "add_and_read":
            return lambda: store.add_and_read(target, TURN, 20)
        return lambda: store.add_messages(target, TURN)

    await op(warm)()  # warm-up: statements prepared, connections open
    activity_before = await _pg_activity(database_url)
    counts = await rig.counter.count(op(sid))
    assert_counts(counts, pg=expected_pg, redis=0)
    if expected_pg == 0:
        # Server side too: no PostgreSQL backend started a statement or appeared meanwhile.
        assert await _pg_activity(database_url) == activity_before


async def _pg_activity(database_url: str) -> set[tuple[int, Any]]:
    """``(pid, query_start)`` of every other client backend, read live from pg_stat_activity."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT pid, query_start FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND state <> 'idle in transaction'"
        )
    finally:
        await conn.close()
    return {(r["pid"], r["query_start"]) for r in rows}


# ----------------------------------------------------------------------------- hybrid


@pytest.mark.parametrize("rig", ["hybrid"], indirect=True)
async def test_hybrid_hit_is_one_redis_call(rig: Rig) -> None:
    """A cache hit is 1 Redis round trip (one EVALSHA) and no PostgreSQL query."""
    sid, warm = await seeded(rig.store, 6), await seeded(rig.store, 6)
    for target in (sid, warm, warm):  # populate both; the second read of warm is the warm-up hit
        await rig.store.get_messages(target, limit=20)
    counts = await rig.counter.count(lambda: rig.store.get_messages(sid, limit=20))
    assert rig.events.results[-1] == "hit"
    assert_counts(counts, pg=0, redis=1)


@pytest.mark.parametrize("rig", ["hybrid"], indirect=True)
async def test_hybrid_miss_is_one_pg_and_two_redis_calls(rig: Rig) -> None:
    """A miss is 1 PostgreSQL query + 2 Redis round trips: the lookup that takes the lease, then the populate.

    The failed lookup counts as a round trip of its own, so the wire total is 1 PG + 2 Redis
    (ARCHITECTURE.md's round-trip table says the same).
    """
    sid, warm = await seeded(rig.store, 6), await seeded(rig.store, 6)  # appends do not create entries
    await rig.store.get_messages(warm, limit=20)  # warm-up miss
    counts = await rig.counter.count(lambda: rig.store.get_messages(sid, limit=20))
    assert rig.events.results[-1] == "miss"
    assert rig.events.populates[-1] == "stored"
    assert_counts(counts, pg=1, redis=2)


@pytest.mark.parametrize("rig", ["hybrid"], indirect=True)
async def test_hybrid_bypass_is_one_redis_and_one_pg_call(rig: Rig) -> None:
    """A read the window cannot answer (limit beyond the 50 cached) is 1 Redis lookup + 1 PostgreSQL query."""
    sid, warm = await seeded(rig.store, 60), await seeded(rig.store, 60)
    for target in (sid, warm):
        await rig.store.get_messages(target, limit=20)  # populate the 50-message windows
    await rig.store.get_messages(warm, limit=55)  # warm-up bypass
    counts = await rig.counter.count(lambda: rig.store.get_messages(sid, limit=55))
    assert rig.events.results[-1] == "bypass"
    assert_counts(counts, pg=1, redis=1)


@pytest.mark.parametrize("rig", ["hybrid"], indirect=True)
@pytest.mark.parametrize("operation", ["add_message", "add_messages"])
async def test_hybrid_append_is_one_pg_and_one_redis_call(rig: Rig, operation: str) -> None:
    """An append, single or a whole turn, is 1 PostgreSQL query + 1 Redis round trip (the extending script)."""
    sid, warm = await seeded(rig.store, 6), await seeded(rig.store, 6)
    for target in (sid, warm):
        await rig.store.get_messages(target, limit=20)  # cached, so the append really extends an entry

    def op(target: str) -> Callable[[], Awaitable[Any]]:
        if operation == "add_message":
            return lambda: rig.store.add_message(target, "user", "one more")
        return lambda: rig.store.add_messages(target, TURN)

    await op(warm)()
    counts = await rig.counter.count(op(sid))
    assert_counts(counts, pg=1, redis=1)
    assert [m.content for m in await rig.store.get_messages(sid, limit=2)][-1] in {"one more", "Alice."}
    assert rig.events.results[-1] == "hit"  # the append extended the window instead of dropping it


@pytest.mark.parametrize("rig", ["hybrid"], indirect=True)
async def test_hybrid_add_and_read_is_one_pg_and_one_redis_call(rig: Rig) -> None:
    """``add_and_read`` on a cached session is 1 PostgreSQL query + 1 Redis round trip: the append and
    read scripts go in one pipeline (two EVALSHA, one write of replies), against 1 PG + 2 Redis for
    ``add_messages`` then ``read``; the window is a hit that ends with the new messages."""
    sid, warm = await seeded(rig.store, 6), await seeded(rig.store, 6)
    for target in (sid, warm):
        await rig.store.get_messages(target, limit=20)  # cached, so the append extends and the read hits
    await rig.store.add_and_read(warm, TURN, 20)
    turn: list[Any] = []

    async def op() -> None:
        turn.append(await rig.store.add_and_read(sid, TURN, 20))

    counts = await rig.counter.count(op)
    assert len(counts.pg_queries) == 1, counts.pg_queries
    assert counts.redis_round_trips == 1, counts
    assert counts.redis_commands.get("evalsha", 0) == 2, counts.redis_commands
    (result,) = turn
    assert result.cache == "hit"
    assert [m.seq for m in result.window] == list(range(1, 9))
    assert [m.content for m in result.window[-2:]] == [m.content for m in result.added]
    assert result.window == await rig.store.get_messages(sid, limit=20)


# ----------------------------------------------------------------------------- the pool's release


@pytest.mark.parametrize("rig", ["postgres"], indirect=True)
async def test_pool_release_costs_no_round_trip(rig: Rig) -> None:
    """Returning a connection to the store's pool sends nothing (no reset query), so an operation really is 1 query."""
    sid = await seeded(rig.store, 2)
    await rig.store.get_messages(sid, limit=20)
    counts = await rig.counter.count(lambda: rig.store.get_messages(sid, limit=20))
    assert len(counts.pg_queries) == 1
    assert counts.pg_resets == 0
