"""The seed's ``SessionManager``, reproduced faithfully as a comparison baseline.

Source: ``shared/seeds/000_0510607bba889f8b.txt`` (the original design note), lines
169-310 (``SessionManager``) and 348-388 (its ``DatabaseService`` methods).  "seed
L<n>" below points at a line of that file.  This module is **never fixed**: every
defect is kept on purpose so the harness measures the design as written, and
``tests/test_seed_defects.py`` pins the defects (its baseline cases must keep failing).

Defects kept, each with the seed line it comes from:

1. **Sync Redis inside async methods** (seed L181, L204, L263, L274): a blocking
   ``redis.Redis`` client, no socket timeouts; every cache call stalls the event loop
   (and a frozen Redis stalls it forever).
2. **One JSON blob per session, read-modify-write per append** (seed L263-L278):
   GET, decode, append, encode, SETEX: O(window) work per append, and two workers
   appending at once lose one of the appends in the cache (last SETEX wins).
3. **Keep last 50, 24 h SETEX** (seed L270-L277, L220-L223): fixed TTL refreshed only
   by writes; a read of more than the blob holds is answered from the blob anyway
   (``messages[-limit:]``, seed L208), truncated, as a hit.
4. **Cache rebuilt from only the new message after expiry** (seed L264): an append
   to an expired key caches a blob holding just that message, and reads are then
   served from it as hits: the history "disappears" until the key expires again.
5. **DB write failure swallowed** (seed L251-L255): the error is logged, the cache is
   updated anyway; the caller is told nothing (silent data loss).  Reads swallow DB
   errors too and return ``[]`` (seed L229-L231).
6. **Two SQL statements per append, no transaction** (seed L361-L373): INSERT into
   ``chat_messages`` then a separate UPDATE of ``chat_sessions``; appending to a
   session that was never created fails the foreign key and, by 5, is lost silently
   (the seed's ChatService never calls ``create_session``).  The harness must call
   :meth:`SeedNaiveStore.create_session` first to measure real writes.
7. **``ORDER BY created_at``** (seed L381): ties (same ``now()``) order arbitrarily;
   ``id SERIAL`` is global, there is no per-session sequence (seed L101).
8. **Naive timestamps** (seed L247, L88, L105): ``utcnow()`` in the cache and
   ``TIMESTAMP`` (without time zone) columns in the database.
9. **Different shapes from cache and database** (seed L244-L248 vs L384-L388): cached
   messages have no ``metadata``; database rows do.
10. **Populate without a lease** (seed L218-L224): a read that missed writes what it
    read from PostgreSQL with SETEX, overwriting any append that landed meanwhile.

Deviations, none of which helps the seed look worse:

* No synchronous PostgreSQL driver is installed, so ``DatabaseService`` is rebuilt on
  an asyncpg pool; its calls are awaited (the seed's blocked the loop), so this
  baseline is, if anything, faster than the original under concurrency.
* Tables are prefixed ``seed_`` so they never collide with the store's; the seed's
  ``user_id INTEGER REFERENCES users(id)`` is ``TEXT`` without a foreign key (there is
  no ``users`` table, and the harness's user ids are strings).
* ``redis.setex(...)`` is sent as the same ``SETEX`` command through
  ``execute_command`` (redis-py 8 deprecates the method).
* ``datetime.utcnow()`` is written ``datetime.now(UTC).replace(tzinfo=None)`` (the same
  naive value; ``utcnow`` warns on newer Pythons).
* Harness additions the seed lacked: ``create_session`` generates an id when given
  none and returns it; ``add_messages`` is a loop of ``add_message`` (what the seed's
  ChatService does per turn); ``get_messages(before_seq=...)`` pages through the
  database (the seed could not page); ``reset()`` and ``close()``.

Round trips, as in the seed: append = 2 PG + 2 Redis (GET + SETEX); read hit = 1
Redis; read miss = 1 Redis + 1 PG + 1 Redis (SETEX).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import redis

logger = logging.getLogger(__name__)

BACKEND = "seed"

# The seed's schema (seed L84-L110), prefixed.  Executed statement by statement.
_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS seed_chat_sessions (
        session_id UUID PRIMARY KEY,
        user_id TEXT,
        created_at TIMESTAMP DEFAULT NOW(),
        last_message_at TIMESTAMP DEFAULT NOW(),
        metadata JSONB,
        is_active BOOLEAN DEFAULT TRUE
    )
    """,
    "CREATE INDEX IF NOT EXISTS seed_idx_sessions_user ON seed_chat_sessions(user_id)",
    "CREATE INDEX IF NOT EXISTS seed_idx_sessions_last_message ON seed_chat_sessions(last_message_at)",
    """
    CREATE TABLE IF NOT EXISTS seed_chat_messages (
        id SERIAL PRIMARY KEY,
        session_id UUID REFERENCES seed_chat_sessions(session_id) ON DELETE CASCADE,
        role VARCHAR(20) NOT NULL,
        content TEXT NOT NULL,
        created_at TIMESTAMP DEFAULT NOW(),
        metadata JSONB
    )
    """,
    "CREATE INDEX IF NOT EXISTS seed_idx_messages_session ON seed_chat_messages(session_id, created_at)",
)

_CACHE_PATTERN = "session:*:messages"


async def _init_connection(conn: Any) -> None:
    # psycopg (the seed's driver) decodes JSONB to dicts; the seed passes JSON text in.
    await conn.set_type_codec("jsonb", encoder=str, decoder=json.loads, schema="pg_catalog")


class _SeedDatabase:
    """The seed's ``DatabaseService`` methods (seed L348-L388), one statement per ``execute``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create_session(self, session_id: str, user_id: str | None, metadata: Mapping[str, Any] | None) -> None:
        query = """
            INSERT INTO seed_chat_sessions (session_id, user_id, metadata)
            VALUES ($1, $2, $3)
            ON CONFLICT (session_id) DO NOTHING
        """
        await self.pool.execute(query, session_id, user_id, json.dumps(metadata or {}))

    async def add_message(self, session_id: str, role: str, content: str, metadata: Mapping[str, Any] | None) -> None:
        query = """
            INSERT INTO seed_chat_messages (session_id, role, content, metadata)
            VALUES ($1, $2, $3, $4)
        """
        await self.pool.execute(query, session_id, role, content, json.dumps(metadata or {}))
        # Update last_message_at: a second statement, no transaction (seed L369-L373).
        update_query = """
            UPDATE seed_chat_sessions
            SET last_message_at = NOW()
            WHERE session_id = $1
        """
        await self.pool.execute(update_query, session_id)

    async def get_session_messages(self, session_id: str, limit: int = 20) -> list[dict[str, Any]]:
        query = """
            SELECT role, content, created_at, metadata
            FROM seed_chat_messages
            WHERE session_id = $1
            ORDER BY created_at DESC
            LIMIT $2
        """
        rows = await self.pool.fetch(query, session_id, limit)
        return [_row_dict(row) for row in reversed(rows)]  # Return chronological order

    async def get_session_messages_before(self, session_id: str, limit: int, before_seq: int) -> list[dict[str, Any]]:
        """Paging for the harness (the seed had none): position by ``created_at`` order."""
        query = """
            SELECT role, content, created_at, metadata FROM (
                SELECT role, content, created_at, metadata,
                       row_number() OVER (ORDER BY created_at) AS seq
                FROM seed_chat_messages WHERE session_id = $1
            ) numbered
            WHERE seq < $3
            ORDER BY seq DESC
            LIMIT $2
        """
        rows = await self.pool.fetch(query, session_id, limit, before_seq)
        return [_row_dict(row) for row in reversed(rows)]


def _setex(client: redis.Redis, key: str, ttl: timedelta, value: str) -> None:
    """The seed's ``redis.setex(key, ttl, value)``: the same SETEX command on the wire.

    redis-py 8 deprecates ``Redis.setex`` with a warning (an error under the test
    suite's ``filterwarnings = error``, which the seed's ``except`` would swallow).
    """
    client.execute_command("SETEX", key, int(ttl.total_seconds()), value)  # type: ignore[no-untyped-call]


def _row_dict(row: Any) -> dict[str, Any]:
    return {
        "role": row[0],
        "content": row[1],
        "created_at": row[2].isoformat(),
        "metadata": row[3],
    }


class SeedNaiveStore:
    """The seed's ``SessionManager`` (seed L169-L310), defects intact; see the module docstring.

    ``pool`` and the sync Redis client are created by :func:`open_seed_baseline` and
    owned (closed) by this object, like the seed's manager owned its connections.
    """

    backend = BACKEND

    def __init__(self, pool: asyncpg.Pool, redis_url: str | None = None, use_redis: bool = True) -> None:
        self.use_redis = use_redis
        self.pool = pool
        self.db = _SeedDatabase(pool)
        self.redis: redis.Redis | None
        if use_redis and redis_url:
            try:
                self.redis = redis.from_url(redis_url, decode_responses=True)
                self.redis.ping()
                logger.info("Redis connected for session cache")
            except Exception as e:  # noqa: BLE001 - the seed swallows it (seed L184-L187)
                logger.warning(f"Redis unavailable: {e}, using DB only")
                self.use_redis = False
                self.redis = None
        else:
            self.redis = None
            self.use_redis = False

    def _redis_key(self, session_id: str) -> str:
        """Generate Redis key for session."""
        return f"session:{session_id}:messages"

    async def get_messages(
        self, session_id: str, limit: int = 20, before_seq: int | None = None
    ) -> list[dict[str, Any]]:
        """Tries Redis first (sync GET), falls back to the DB and caches what it read (no lease)."""
        session_id = str(session_id)
        if before_seq is not None:
            # Not in the seed: the blob cannot page, so paging goes to the database.
            try:
                return await self.db.get_session_messages_before(session_id, limit, before_seq)
            except Exception as e:  # noqa: BLE001 - swallowed like every seed DB error
                logger.error(f"Failed to load messages from DB: {e}")
                return []
        # Try Redis cache first
        if self.use_redis and self.redis:
            try:
                cached = self.redis.get(self._redis_key(session_id))
                if cached:
                    messages: list[dict[str, Any]] = json.loads(cached)
                    logger.info(f"Cache HIT: {len(messages)} messages from Redis")
                    return messages[-limit:]  # Return last N messages
            except Exception as e:  # noqa: BLE001 - seed L209-L210
                logger.warning(f"Redis read failed: {e}")

        # Fallback to database
        try:
            messages = await self.db.get_session_messages(session_id, limit=limit)
            logger.info(f"Cache MISS: {len(messages)} messages from DB")

            # Cache in Redis for next time
            if self.use_redis and self.redis and messages:
                try:
                    _setex(
                        self.redis,
                        self._redis_key(session_id),
                        timedelta(hours=24),  # Expire after 24 hours
                        json.dumps(messages),
                    )
                except Exception as e:  # noqa: BLE001 - seed L225-L226
                    logger.warning(f"Redis cache write failed: {e}")

            return messages
        except Exception as e:  # noqa: BLE001 - seed L229-L231
            logger.error(f"Failed to load messages from DB: {e}")
            return []

    async def add_message(
        self, session_id: str, role: str, content: str, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """DB insert + update (errors swallowed), then a read-modify-write of the cached blob."""
        session_id = str(session_id)
        message = {
            "role": role,
            "content": content,
            "created_at": datetime.now(UTC).replace(tzinfo=None).isoformat(),  # = utcnow(), seed L247
        }

        # 1. Save to database (persistence)
        try:
            await self.db.add_message(session_id, role, content, metadata)
            logger.info("Message saved to DB")
        except Exception as e:  # noqa: BLE001 - the seed's silent data loss (seed L254-L255)
            logger.error(f"Failed to save message to DB: {e}")

        # 2. Update Redis cache
        if self.use_redis and self.redis:
            try:
                key = self._redis_key(session_id)

                # Get current messages
                cached = self.redis.get(key)
                messages: list[dict[str, Any]] = json.loads(cached) if cached else []

                # Append new message
                messages.append(message)

                # Keep only last 50 messages in cache
                if len(messages) > 50:
                    messages = messages[-50:]

                # Save back to Redis
                _setex(self.redis, key, timedelta(hours=24), json.dumps(messages))
                logger.info("Cache updated")
            except Exception as e:  # noqa: BLE001 - seed L280-L281
                logger.warning(f"Redis cache update failed: {e}")

    async def add_messages(self, session_id: str, messages: Sequence[Mapping[str, Any]]) -> None:
        """A turn, the way the seed's ChatService appends it: one ``add_message`` per message."""
        for m in messages:
            await self.add_message(session_id, m["role"], m["content"], m.get("metadata"))

    async def create_session(
        self, session_id: str | None = None, user_id: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> str:
        """Create a new session in the database (errors swallowed); returns its id."""
        session_id = str(session_id) if session_id is not None else str(uuid.uuid4())
        try:
            await self.db.create_session(session_id, user_id, metadata)
            logger.info(f"Session {session_id} created")
        except Exception as e:  # noqa: BLE001 - seed L293-L294
            logger.error(f"Failed to create session: {e}")
        return session_id

    async def reset(self) -> None:
        """Drop the seed's tables and cache keys, then recreate the empty schema."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7410932)")
            await conn.execute("DROP TABLE IF EXISTS seed_chat_messages, seed_chat_sessions CASCADE")
            for statement in _SCHEMA:
                await conn.execute(statement)
        if self.redis is not None:
            keys = list(self.redis.scan_iter(match=_CACHE_PATTERN, count=1000))
            for start in range(0, len(keys), 1000):
                self.redis.delete(*keys[start : start + 1000])

    async def close(self) -> None:
        """Close the pool and the Redis client this object owns."""
        try:
            if self.redis is not None:
                self.redis.close()
        finally:
            await self.pool.close()


async def open_seed_baseline(database_url: str, redis_url: str, *, statement_cache_size: int = 100) -> SeedNaiveStore:
    """Create the seed's schema (prefixed ``seed_``) and return a :class:`SeedNaiveStore`.

    ``statement_cache_size``: asyncpg's, 0 behind PgBouncer in transaction mode (a deployment
    setting, not one of the seed's defects).
    """
    pool = await asyncpg.create_pool(
        database_url, min_size=2, max_size=20, init=_init_connection, statement_cache_size=statement_cache_size
    )
    try:
        async with pool.acquire() as conn, conn.transaction():
            # Several workers may open the baseline at once; concurrent CREATE TABLE IF NOT
            # EXISTS can collide in the catalog, so serialise it (the seed ran it by hand).
            await conn.execute("SELECT pg_advisory_xact_lock(7410932)")
            for statement in _SCHEMA:
                await conn.execute(statement)
        return SeedNaiveStore(pool, redis_url)
    except BaseException:
        await pool.close()
        raise
