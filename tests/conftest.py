"""Shared fixtures: real PostgreSQL and Redis for the whole session, clean state per test.

Servers come from :mod:`sessionbench.bench.servers`: embedded by default, ``DATABASE_URL`` /
``REDIS_URL`` to use existing ones, ``SESSIONBENCH_SERVERS=docker`` for
testcontainers.  A server that cannot be started fails the run; it is never
skipped silently.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from sessionbench.bench.servers import (
    EmbeddedPgBouncer,
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedRedisCluster,
    ServerError,
    Servers,
    find_pgbouncer,
    open_servers,
)
from sessionbench.store import SessionStore, open_store
from sessionbench.store.tasks import stop_task


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    """One PostgreSQL and one Redis for the whole test session."""
    with open_servers(os.environ.get("SESSIONBENCH_SERVERS", "auto"), environ=os.environ) as running:
        yield running


@pytest.fixture
def embedded_redis(servers: Servers) -> EmbeddedRedis:
    """The embedded Redis, for tests that kill or freeze it (skipped on external servers)."""
    if servers.redis is None:
        pytest.skip(f"fault injection needs embedded servers; mode is {servers.mode}")
    return servers.redis


@pytest.fixture
def embedded_postgres(servers: Servers) -> EmbeddedPostgres:
    """The embedded PostgreSQL, for tests that kill or restart it (skipped on external servers)."""
    if servers.postgres is None:
        pytest.skip(f"fault injection needs embedded servers; mode is {servers.mode}")
    return servers.postgres


async def _reset_postgres(url: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(
            """
            DO $$ BEGIN
              IF to_regclass('chat_sessions') IS NOT NULL THEN
                TRUNCATE chat_sessions CASCADE;
              END IF;
            END $$;
            """
        )
    finally:
        await conn.close()


@pytest.fixture
async def database_url(servers: Servers) -> AsyncIterator[str]:
    """A PostgreSQL URL whose session tables (if any) are empty."""
    await _reset_postgres(servers.database_url)
    yield servers.database_url


@pytest.fixture
async def redis_url(servers: Servers) -> AsyncIterator[str]:
    """A Redis URL whose keyspace is empty."""
    client = aioredis.Redis.from_url(servers.redis_url, socket_timeout=5)
    try:
        await client.flushall()
    finally:
        await client.aclose()
    yield servers.redis_url


# ----------------------------------------------------------------------------- stores
# One contract suite over every backend: adding a backend means adding one fixture here
# and its name to STORE_FIXTURES.
STORE_FIXTURES = (
    "memory_store",
    "postgres_store",
    "hybrid_store",
    "hybrid_cluster_store",
    "postgres_pgbouncer_store",
    "hybrid_pgbouncer_store",
)


@pytest.fixture
async def memory_store() -> AsyncIterator[SessionStore]:
    """The in-process backend with default bounds."""
    store = await open_store("memory")
    yield store
    await store.close()


@pytest.fixture
async def postgres_store(database_url: str) -> AsyncIterator[SessionStore]:
    """The PostgreSQL backend on the session's real server, empty tables."""
    store = await open_store("postgres", database_url=database_url)
    yield store
    await store.close()


@pytest.fixture
async def hybrid_store(database_url: str, redis_url: str) -> AsyncIterator[SessionStore]:
    """Redis in front of PostgreSQL, both real, both empty; default cache settings."""
    store = await open_store("hybrid", database_url=database_url, redis_url=redis_url)
    yield store
    await store.close()


@pytest.fixture(params=STORE_FIXTURES)
def store(request: pytest.FixtureRequest) -> SessionStore:
    """Each backend in turn (the contract suite runs every test against all three)."""
    backend: SessionStore = request.getfixturevalue(request.param)
    return backend


# ----------------------------------------------------------------------------- cluster and pooler


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[EmbeddedRedisCluster]:
    """A 3-master embedded Valkey cluster per test module (about 2 s to start); tests may kill and restart nodes."""
    cluster = EmbeddedRedisCluster(3)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pgbouncer_binary() -> Path:
    """Debian's pgbouncer: skipped with the install hint when missing, a failure under CI=true (.ci/run installs it)."""
    try:
        return find_pgbouncer()
    except ServerError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{exc} -- required under CI=true")
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def pgbouncer(servers: Servers, pgbouncer_binary: Path) -> Iterator[EmbeddedPgBouncer]:
    """PgBouncer in transaction mode in front of the session's embedded PostgreSQL, one per test module."""
    if servers.postgres is None:
        pytest.skip(f"PgBouncer runs in front of the embedded PostgreSQL; mode is {servers.mode}")
    bouncer = EmbeddedPgBouncer(servers.postgres, binary=pgbouncer_binary)
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.stop()


# ----------------------------------------------------------------------------- the contract on deployment shapes


async def _flush_cluster(cluster: EmbeddedRedisCluster) -> None:
    for node in cluster.nodes:
        client = aioredis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5)
        try:
            await client.flushall()
        finally:
            await client.aclose()


@pytest.fixture
async def hybrid_cluster_store(database_url: str, redis_cluster: EmbeddedRedisCluster) -> AsyncIterator[SessionStore]:
    """The hybrid backend on a 3-master Valkey cluster (REDIS_URL = one node; cluster mode detected)."""
    await _flush_cluster(redis_cluster)
    store = await open_store("hybrid", database_url=database_url, redis_url=redis_cluster.url)
    assert type(store.redis).__name__ == "RedisCluster"  # type: ignore[attr-defined]
    yield store
    await store.close()


def _through(bouncer: EmbeddedPgBouncer, database_url: str) -> str:
    """``database_url``'s database, reached through ``bouncer``."""
    assert database_url.rsplit("/", 1)[-1] == bouncer.url.rsplit("/", 1)[-1]
    return bouncer.url


@pytest.fixture
async def postgres_pgbouncer_store(database_url: str, pgbouncer: EmbeddedPgBouncer) -> AsyncIterator[SessionStore]:
    """The PostgreSQL backend through PgBouncer in transaction mode (statement_cache_size=0)."""
    store = await open_store("postgres?postgres.statement_cache_size=0", database_url=_through(pgbouncer, database_url))
    yield store
    await store.close()


@pytest.fixture
async def hybrid_pgbouncer_store(
    database_url: str, redis_url: str, pgbouncer: EmbeddedPgBouncer
) -> AsyncIterator[SessionStore]:
    """The hybrid backend with its PostgreSQL behind PgBouncer in transaction mode."""
    store = await open_store(
        "hybrid?postgres.statement_cache_size=0", database_url=_through(pgbouncer, database_url), redis_url=redis_url
    )
    yield store
    await store.close()


# ----------------------------------------------------------------------------- sessionbench compare on the test servers


@pytest.fixture
def external(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> Servers:
    """Point compare at the test session's servers (it drops their tables and flushes Redis)."""
    monkeypatch.setenv("DATABASE_URL", servers.database_url)
    monkeypatch.setenv("REDIS_URL", servers.redis_url)
    return servers


def result_dir(root: Path) -> Path:
    """The one results/<time>/ folder a compare run wrote under ``root``."""
    (directory,) = [p for p in root.iterdir() if p.is_dir()]
    return directory


# ----------------------------------------------------------------------------- tasks a test leaves behind


@pytest.fixture
async def _stop_leftover_tasks() -> AsyncIterator[None]:
    """After an async test, stop the tasks it left in its loop within a bound (sessionbench/store/tasks.py).

    pytest-asyncio's runner cancels leftover tasks once and waits for them without a limit; a
    task that survives the cancel (redis-py can swallow one) or a test interrupted by
    pytest-timeout would then hang the whole run.  Here a task that will not stop fails the test.
    """
    yield
    me = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    stopped = await asyncio.gather(*(stop_task(t, seconds=10.0) for t in left))
    stuck = [t.get_name() for t, ok in zip(left, stopped, strict=True) if not ok]
    assert not stuck, f"tasks still running 10 s after being cancelled: {stuck}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.fixturenames.insert(0, "_stop_leftover_tasks")  # set up first, torn down last
