"""Helpers for the hybrid-cache tests: build a HybridStore on the real servers, read its
cache entries straight from Redis, and record what it reports.

Nothing here fakes a server: stores talk to the session's PostgreSQL and Redis.
The cache layout read here is the public one of :mod:`sessionbench.store.backends.hybrid.keys`:
``{prefix}:{<sid>}:m`` (list of JSON messages), ``:h`` (hash: last, owner, epoch) and
``:l`` (populate lease); the current epoch is the store's (``store.sync.epoch``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from sessionbench.store.backends.hybrid import HybridStore, KeyLayout, create_redis, decode_entries
from sessionbench.store.backends.postgres import PostgresStore, create_pool, migrate
from sessionbench.store.models import CacheResult, Message
from sessionbench.store.settings import CacheSettings, RedisSettings


@dataclass
class RecordingEvents:
    """A StoreEvents sink that keeps everything it is told, in order."""

    results: list[str] = field(default_factory=list)
    populates: list[str] = field(default_factory=list)
    invalidations: list[str] = field(default_factory=list)
    errors: list[tuple[str, str, str]] = field(default_factory=list)
    breaker: list[int] = field(default_factory=list)

    def cache_result(self, result: CacheResult) -> None:
        self.results.append(result)

    def cache_populate(self, result: Literal["stored", "discarded"]) -> None:
        self.populates.append(result)

    def cache_invalidation(self, reason: str) -> None:
        self.invalidations.append(reason)

    def error(self, backend: str, operation: str, kind: str) -> None:
        self.errors.append((backend, operation, kind))

    def breaker_state(self, state: int) -> None:
        self.breaker.append(state)


def cache_keys(sid: str, prefix: str = "sb") -> tuple[str, str, str]:
    """The list, hash and lease keys of one session's cache entry."""
    return KeyLayout(prefix).session(sid).entry


@dataclass(frozen=True)
class CacheEntry:
    """One session's cache entry as Redis holds it, decoded."""

    last: int
    owner: str
    epoch: str
    messages: list[Message]


async def read_cache_entry(client: aioredis.Redis, sid: str, prefix: str = "sb") -> CacheEntry | None:
    """Decode a session's cache entry straight from Redis (``None`` when it has no hash)."""
    (entry,) = await read_cache_entries(client, [sid], prefix)
    return entry


async def read_cache_entries(client: Any, sids: list[str], prefix: str = "sb") -> list[CacheEntry | None]:
    """Several sessions' entries, read atomically (MULTI) in one round trip (one per session on a cluster,
    whose transactions cannot span slots)."""
    if isinstance(client, RedisCluster):
        return [(await _read_entries(client, [sid], prefix))[0] for sid in sids]
    return await _read_entries(client, sids, prefix)


async def _read_entries(client: Any, sids: list[str], prefix: str) -> list[CacheEntry | None]:
    async with client.pipeline(transaction=True) as pipe:
        for sid in sids:
            list_key, hash_key, _ = cache_keys(sid, prefix)
            pipe.hgetall(hash_key)
            pipe.lrange(list_key, 0, -1)
        replies = await pipe.execute()
    return [_entry(sid, replies[2 * i], replies[2 * i + 1]) for i, sid in enumerate(sids)]


def _entry(sid: str, raw_hash: dict[Any, Any], raw_list: list[Any]) -> CacheEntry | None:
    if not raw_hash:
        return None
    h = {_text(k): _text(v) for k, v in raw_hash.items()}
    messages = decode_entries(sid, [_text(raw) for raw in raw_list])
    return CacheEntry(int(h["last"]), h.get("owner", ""), h.get("epoch", "0"), messages)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@asynccontextmanager
async def open_hybrid(
    database_url: str,
    redis_url: str,
    *,
    cache: CacheSettings | None = None,
    redis_settings: RedisSettings | None = None,
    events: RecordingEvents | None = None,
    durable_cls: type[PostgresStore] = PostgresStore,
    pool_max: int = 10,
) -> AsyncIterator[HybridStore]:
    """A HybridStore built the way ``open_store`` builds one, with test-sized knobs."""
    settings = redis_settings or RedisSettings()
    pool = await create_pool(database_url, min_size=1, max_size=pool_max)
    client = create_redis(redis_url, settings)
    try:
        await migrate(pool)
        durable = durable_cls(pool)
        store = HybridStore(
            client, durable, cache=cache or CacheSettings(), breaker=settings, events=events or RecordingEvents()
        )
        await store.load_scripts()
        try:
            yield store
        finally:
            await store.close()  # stops its sync loop; the clients are closed below
    finally:
        await client.aclose()
        await pool.close()


async def pg_history(database_url: str, sid: str) -> tuple[int, list[tuple[int, str, str]]]:
    """PostgreSQL's own view of a session: ``last_seq`` and every ``(seq, role, content)``."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        last = await conn.fetchval("SELECT last_seq FROM chat_sessions WHERE session_id = $1::uuid", sid)
        rows = await conn.fetch(
            "SELECT seq, role, content FROM chat_messages WHERE session_id = $1::uuid ORDER BY seq", sid
        )
    finally:
        await conn.close()
    return int(last or 0), [(r["seq"], r["role"], r["content"]) for r in rows]
