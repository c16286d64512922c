"""The floors: the same chat operations done with bare driver calls and nothing else.

They answer "how much does the store cost over the driver?": each store column of
``sessionbench compare`` is divided by the floor that makes the same round trips
(:data:`FLOOR_OF`), so the table shows what the store adds over its drivers.

``floor-asyncpg`` (:class:`AsyncpgFloor`)
    A pool that skips asyncpg's reset query on release (the default costs one more
    round trip per operation; nothing here leaves session state behind).  One table
    ``floor_messages (session_id uuid, seq bigint, role, content, created_at, primary
    key (session_id, seq))``, no session table, no validation, no cache.  ``seq`` is
    counted in this process (fine for a floor, wrong for a real service).  An append
    is one ``INSERT`` (a whole turn with ``unnest``), a read one ``SELECT ... ORDER BY
    seq DESC LIMIT n``: 1 round trip each.
``floor-redis`` (:class:`RedisFloor`)
    One list per session holding the last ``window`` messages, encoded as JSON arrays
    like the hybrid cache's entries.  An append is ``RPUSH`` + ``LTRIM`` in one
    pipeline (1 round trip); a read is one ``LRANGE`` whose raw strings are returned
    undecoded: the bare cost of fetching 20 cached messages.
``floor-hybrid`` (:class:`HybridFloor`)
    The least work of the hybrid design with the same drivers: an append is the
    ``floor-asyncpg`` ``INSERT`` then one Redis pipeline of ``RPUSH`` + ``LTRIM`` +
    ``EXPIRE`` (1 PostgreSQL + 1 Redis round trip, one after the other, as the hybrid
    writes through); a read is one ``LRANGE`` (1 Redis round trip, a hit by
    construction).

All implement :class:`sessionbench.bench.harness.runner.Target` and own their clients.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import redis.asyncio as aioredis

from sessionbench.bench.harness.runner import payload, session_uuid
from sessionbench.store.accesslog import LETTER_ROLES

__all__ = ["FLOORS", "FLOOR_OF", "AsyncpgFloor", "HybridFloor", "RedisFloor", "open_floor"]

FLOORS: tuple[str, ...] = ("floor-asyncpg", "floor-redis", "floor-hybrid")

#: The floor of the round trips a backend's operation makes:
#: ``(backend, histogram) -> (floor, the floor's histogram)``.  A hybrid read is only
#: comparable when it hits (one Redis round trip); a miss also reads PostgreSQL.
FLOOR_OF: dict[tuple[str, str], tuple[str, str]] = {
    ("hybrid", "read.hit"): ("floor-redis", "read"),
    ("hybrid", "append"): ("floor-hybrid", "append"),
    ("hybrid", "turn"): ("floor-hybrid", "turn"),
    ("postgres", "read"): ("floor-asyncpg", "read"),
    ("postgres", "append"): ("floor-asyncpg", "append"),
    ("postgres", "turn"): ("floor-asyncpg", "turn"),
}

DEFAULT_WINDOW = 50
_SCHEMA = """
CREATE TABLE IF NOT EXISTS floor_messages (
    session_id uuid NOT NULL,
    seq        bigint NOT NULL,
    role       text NOT NULL,
    content    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, seq)
)
"""
_INSERT_ONE = "INSERT INTO floor_messages (session_id, seq, role, content) VALUES ($1, $2, $3, $4)"
_INSERT_MANY = """
INSERT INTO floor_messages (session_id, seq, role, content)
SELECT $1, $2 + i - 1, r, c FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS m(r, c, i)
"""
_READ = """
SELECT seq, role, content, created_at FROM floor_messages
WHERE session_id = $1 AND seq < $3 ORDER BY seq DESC LIMIT $2
"""


async def _no_reset(conn: asyncpg.Connection) -> None:
    return None


def _entry(seq: int, role: str, content: str, created_at: str) -> str:
    """A cached message as the hybrid encodes it: ``[seq, role, content, created_at, metadata]``."""
    return json.dumps([seq, role, content, created_at, {}], ensure_ascii=False, separators=(",", ":"))


class _Messages:
    """What a floor appends: per-session sequence numbers (counted here) and payloads."""

    def __init__(self) -> None:
        self._seq: dict[str, int] = {}
        self._salt = 0

    def take(self, session: str, sizes: Sequence[int]) -> tuple[int, list[str]]:
        """The first seq of the next ``len(sizes)`` messages of ``session``, and their contents."""
        first = self._seq.get(session, 0) + 1
        self._seq[session] = first + len(sizes) - 1
        contents = [payload(n, self._salt + i + 1) for i, n in enumerate(sizes)]
        self._salt += len(sizes)
        return first, contents

    def last(self, session: str) -> int:
        return self._seq.get(session, 0)


class AsyncpgFloor:
    """Bare asyncpg: one statement per append or read, on a pool sized like the store's."""

    name = "floor-asyncpg"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._messages = _Messages()

    @staticmethod
    async def create_pool(
        database_url: str, *, min_size: int = 2, max_size: int = 20, statement_cache_size: int = 100
    ) -> asyncpg.Pool:
        # No reset on release: asyncpg's default sends a reset query (one more round trip)
        # every time a connection goes back to the pool; the floor leaves no session state.
        # statement_cache_size=0 behind PgBouncer in transaction mode (named statements go missing).
        pool = await asyncpg.create_pool(
            database_url,
            min_size=min_size,
            max_size=max_size,
            reset=_no_reset,
            statement_cache_size=statement_cache_size,
        )
        await pool.execute(_SCHEMA)
        return pool

    @classmethod
    async def open(cls, database_url: str, *, statement_cache_size: int = 100) -> AsyncpgFloor:
        return cls(await cls.create_pool(database_url, statement_cache_size=statement_cache_size))

    async def insert(self, session: str, first: int, roles: str, contents: Sequence[str]) -> None:
        """One ``INSERT`` of the messages (1 round trip)."""
        sid = uuid.UUID(session_uuid(session))
        if len(roles) == 1:
            await self.pool.execute(_INSERT_ONE, sid, first, LETTER_ROLES[roles], contents[0])
            return
        await self.pool.execute(_INSERT_MANY, sid, first, [LETTER_ROLES[r] for r in roles], list(contents))

    async def append(self, session: str, roles: str, sizes: Sequence[int]) -> None:
        first, contents = self._messages.take(session, sizes)
        await self.insert(session, first, roles, contents)

    async def read(self, session: str, limit: int, before: int | None) -> str | None:
        rows = await self.pool.fetch(_READ, uuid.UUID(session_uuid(session)), limit, before or 2**62)
        rows.reverse()
        return None

    async def append_and_read(self, session: str, roles: str, sizes: Sequence[int], limit: int) -> str | None:
        """The ``INSERT``, then the ``SELECT`` (2 round trips, as the postgres store's ``add_and_read``)."""
        await self.append(session, roles, sizes)
        return await self.read(session, limit, None)

    async def close(self) -> None:
        await self.pool.close()


class RedisFloor:
    """Bare redis-py: ``RPUSH`` + ``LTRIM`` (+ ``PEXPIRE`` with a TTL) per append, one ``LRANGE`` per read."""

    name = "floor-redis"

    def __init__(
        self, redis: aioredis.Redis, *, window: int = DEFAULT_WINDOW, ttl: float | None = None, prefix: str = "floor"
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.window = window
        self.ttl_ms = max(1, int(ttl * 1000)) if ttl is not None else None
        self._messages = _Messages()

    @staticmethod
    async def create_client(redis_url: str) -> aioredis.Redis:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True, max_connections=64)
        await client.ping()
        return client

    @classmethod
    async def open(cls, redis_url: str, *, window: int = DEFAULT_WINDOW) -> RedisFloor:
        return cls(await cls.create_client(redis_url), window=window)

    def key(self, session: str) -> str:
        return f"{self.prefix}:{{{session_uuid(session)}}}"

    async def push(
        self, session: str, first: int, roles: str, contents: Sequence[str], *, read_limit: int | None = None
    ) -> None:
        """One pipeline: ``RPUSH`` the encoded messages, ``LTRIM`` to the window, ``PEXPIRE`` (1 round trip);
        with ``read_limit``, the ``LRANGE`` of the last ``read_limit`` too (still 1 round trip)."""
        key = self.key(session)
        now = datetime.now(UTC).isoformat()
        encoded = [
            _entry(first + i, LETTER_ROLES[r], c, now) for i, (r, c) in enumerate(zip(roles, contents, strict=True))
        ]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.rpush(key, *encoded)
            pipe.ltrim(key, -self.window, -1)
            if self.ttl_ms is not None:
                pipe.pexpire(key, self.ttl_ms)
            if read_limit is not None:
                pipe.lrange(key, -read_limit, -1)
            await pipe.execute()

    async def append(self, session: str, roles: str, sizes: Sequence[int]) -> None:
        first, contents = self._messages.take(session, sizes)
        await self.push(session, first, roles, contents)

    async def window_range(self, session: str, last: int, limit: int, before: int | None) -> None:
        """One ``LRANGE`` of the last ``limit`` cached messages (before seq ``before``); none if out of the window."""
        key = self.key(session)
        if before is None:
            await self.redis.lrange(key, -limit, -1)
            return
        first = max(1, last - self.window + 1)
        upper = min(last, before - 1)
        lower = max(first, upper - limit + 1)
        if upper >= lower:
            await self.redis.lrange(key, lower - first, upper - first)

    async def read(self, session: str, limit: int, before: int | None) -> str | None:
        await self.window_range(session, self._messages.last(session), limit, before)
        return None

    async def append_and_read(self, session: str, roles: str, sizes: Sequence[int], limit: int) -> str | None:
        """The append's pipeline with the read's ``LRANGE`` in it (1 round trip)."""
        first, contents = self._messages.take(session, sizes)
        await self.push(session, first, roles, contents, read_limit=limit)
        return None

    async def close(self) -> None:
        await self.redis.aclose()


class HybridFloor:
    """The hybrid design at its floor: append = ``INSERT`` then one Redis pipeline; read = one ``LRANGE``."""

    name = "floor-hybrid"

    def __init__(self, database: AsyncpgFloor, cache: RedisFloor) -> None:
        self.database = database
        self.cache = cache
        self._messages = _Messages()

    @classmethod
    async def open(
        cls,
        database_url: str,
        redis_url: str,
        *,
        window: int = DEFAULT_WINDOW,
        ttl: float = 86400.0,
        statement_cache_size: int = 100,
    ) -> HybridFloor:
        pool = await AsyncpgFloor.create_pool(database_url, statement_cache_size=statement_cache_size)
        try:
            client = await RedisFloor.create_client(redis_url)
        except BaseException:
            await pool.close()
            raise
        return cls(AsyncpgFloor(pool), RedisFloor(client, window=window, ttl=ttl, prefix="floorh"))

    async def append(self, session: str, roles: str, sizes: Sequence[int]) -> None:
        first, contents = self._messages.take(session, sizes)
        await self.database.insert(session, first, roles, contents)  # committed first, as the hybrid does
        await self.cache.push(session, first, roles, contents)

    async def read(self, session: str, limit: int, before: int | None) -> str | None:
        await self.cache.window_range(session, self._messages.last(session), limit, before)
        return None

    async def append_and_read(self, session: str, roles: str, sizes: Sequence[int], limit: int) -> str | None:
        """``INSERT``, then one pipeline that appends to the cache and reads the window (1 PG + 1 Redis)."""
        first, contents = self._messages.take(session, sizes)
        await self.database.insert(session, first, roles, contents)
        await self.cache.push(session, first, roles, contents, read_limit=limit)
        return None

    async def close(self) -> None:
        try:
            await self.database.close()
        finally:
            await self.cache.close()


Floor = AsyncpgFloor | RedisFloor | HybridFloor


async def open_floor(
    name: str,
    database_url: str,
    redis_url: str,
    *,
    window: int | None = None,
    ttl: float | None = None,
    statement_cache_size: int = 100,
) -> Floor:
    """Open the floor called ``name`` (one of :data:`FLOORS`); ``window``/``ttl`` as the hybrid's cache.

    ``statement_cache_size``: asyncpg's, 0 behind PgBouncer in transaction mode.
    """
    size = window or DEFAULT_WINDOW
    cache = statement_cache_size
    if name == "floor-asyncpg":
        return await AsyncpgFloor.open(database_url, statement_cache_size=cache)
    if name == "floor-redis":
        return await RedisFloor.open(redis_url, window=size)
    if name == "floor-hybrid":
        ttl = ttl if ttl is not None else 86400.0
        return await HybridFloor.open(database_url, redis_url, window=size, ttl=ttl, statement_cache_size=cache)
    raise ValueError(f"unknown floor {name!r}; choose one of {', '.join(FLOORS)}")
