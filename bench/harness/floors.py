"""The floors: the same chat operations done with bare driver calls and nothing else.

They answer "how much does the store cost over the driver?": issue 3 asks that the
hybrid store reach 0.8x the bare-asyncpg floor's turns per second and that a
hybrid cache-hit read take at most 1.3x a bare ``LRANGE`` of the same 20 messages.

``floor-asyncpg`` (:class:`AsyncpgFloor`)
    A pool that skips asyncpg's reset query on release (the default costs one more
    round trip per operation; nothing here leaves session state behind).  One table
    ``floor_messages (session_id uuid, seq bigint, role, content, created_at, primary
    key (session_id, seq))``, no session table, no validation, no cache.  ``seq`` is
    counted in this process (fine for a floor, wrong for a real service).  An append
    is one ``INSERT`` (a whole turn with ``unnest``), a read one ``SELECT ... ORDER BY
    seq DESC LIMIT n``: 1 round trip each.
``floor-redis`` (:class:`RedisFloor`)
    One list per session holding the last ``window`` messages, encoded as JSON like the
    hybrid cache's entries.  An append is ``RPUSH`` + ``LTRIM`` in one pipeline (1 round
    trip); a read is one ``LRANGE`` whose raw strings are returned undecoded: the bare
    cost of fetching 20 cached messages.

Both implement :class:`bench.harness.runner.Target` and own their client.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import redis.asyncio as aioredis

from bench.harness.runner import payload, session_uuid
from store.accesslog import LETTER_ROLES

__all__ = ["FLOORS", "AsyncpgFloor", "RedisFloor", "open_floor"]

FLOORS: tuple[str, ...] = ("floor-asyncpg", "floor-redis")

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


class AsyncpgFloor:
    """Bare asyncpg: one statement per append or read, on a pool sized like the store's."""

    name = "floor-asyncpg"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._seq: dict[str, int] = {}
        self._salt = 0

    @classmethod
    async def open(cls, database_url: str, *, min_size: int = 2, max_size: int = 20) -> AsyncpgFloor:
        # No reset on release: asyncpg's default sends a reset query (one more round trip)
        # every time a connection goes back to the pool; the floor leaves no session state.
        pool = await asyncpg.create_pool(database_url, min_size=min_size, max_size=max_size, reset=_no_reset)
        await pool.execute(_SCHEMA)
        return cls(pool)

    async def append(self, session: str, roles: str, sizes: Sequence[int]) -> None:
        sid = uuid.UUID(session_uuid(session))
        first = self._seq.get(session, 0) + 1
        self._seq[session] = first + len(roles) - 1
        self._salt += len(roles)
        if len(roles) == 1:
            await self.pool.execute(_INSERT_ONE, sid, first, LETTER_ROLES[roles], payload(sizes[0], self._salt))
            return
        contents = [payload(n, self._salt + i) for i, n in enumerate(sizes)]
        await self.pool.execute(_INSERT_MANY, sid, first, [LETTER_ROLES[r] for r in roles], contents)

    async def read(self, session: str, limit: int, before: int | None) -> str | None:
        rows = await self.pool.fetch(_READ, uuid.UUID(session_uuid(session)), limit, before or 2**62)
        rows.reverse()
        return None

    async def close(self) -> None:
        await self.pool.close()


class RedisFloor:
    """Bare redis-py: ``RPUSH`` + ``LTRIM`` per append, one ``LRANGE`` per read."""

    name = "floor-redis"

    def __init__(self, redis: aioredis.Redis, *, window: int = 50) -> None:
        self.redis = redis
        self.window = window
        self._seq: dict[str, int] = {}
        self._salt = 0

    @classmethod
    async def open(cls, redis_url: str, *, window: int = 50) -> RedisFloor:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True, max_connections=64)
        await client.ping()
        return cls(client, window=window)

    async def append(self, session: str, roles: str, sizes: Sequence[int]) -> None:
        key = f"floor:{{{session_uuid(session)}}}"
        first = self._seq.get(session, 0) + 1
        self._seq[session] = first + len(roles) - 1
        now = datetime.now(UTC).isoformat()
        encoded = []
        for i, (r, n) in enumerate(zip(roles, sizes, strict=True)):
            self._salt += 1
            item = {"s": first + i, "r": LETTER_ROLES[r], "c": payload(n, self._salt), "t": now, "m": {}}
            encoded.append(json.dumps(item, separators=(",", ":")))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.rpush(key, *encoded)
            pipe.ltrim(key, -self.window, -1)
            await pipe.execute()

    async def read(self, session: str, limit: int, before: int | None) -> str | None:
        key = f"floor:{{{session_uuid(session)}}}"
        if before is None:
            await self.redis.lrange(key, -limit, -1)
            return None
        last = self._seq.get(session, 0)
        first = max(1, last - self.window + 1)
        upper = min(last, before - 1)
        lower = max(first, upper - limit + 1)
        if upper >= lower:
            await self.redis.lrange(key, lower - first, upper - first)
        return None

    async def close(self) -> None:
        await self.redis.aclose()


async def open_floor(name: str, database_url: str, redis_url: str) -> AsyncpgFloor | RedisFloor:
    """Open the floor called ``name`` (one of :data:`FLOORS`)."""
    if name == "floor-asyncpg":
        return await AsyncpgFloor.open(database_url)
    if name == "floor-redis":
        return await RedisFloor.open(redis_url)
    raise ValueError(f"unknown floor {name!r}; choose one of {', '.join(FLOORS)}")
