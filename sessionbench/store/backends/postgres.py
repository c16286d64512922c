"""PostgreSQL backend: the durable source of truth.

Round trips (steady state, prepared statements cached on the connection):

* ``add_message`` / ``add_messages`` (a whole turn): **1** — one statement bumps
  ``chat_sessions.last_seq`` (creating the session if needed, checking the owner)
  and inserts the messages with the seqs it returned (scalar parameters for one
  message, arrays with ``unnest`` for a turn).
* ``get_messages``: **1** — one statement returns the session's owner and
  ``last_seq`` and the requested window (a LATERAL join).
* ``create_session``, ``get_session``, ``list_sessions``, ``search``,
  ``delete_session``, ``pop_message``: **1** each (a pop that loses a race with
  another pop of the same session asks again: one more); ``cleanup_inactive``: 1 per batch; ``export``: a
  server-side cursor in one transaction.

The pool is passed in; whoever created it closes it (see :func:`sessionbench.store.open_store`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any, TypeVar

import asyncpg
import orjson

from sessionbench.store.backends.base import BaseStore, Batch
from sessionbench.store.errors import SessionNotFound, StoreUnavailable
from sessionbench.store.events import NULL_EVENTS, StoreEvents
from sessionbench.store.models import Message, ReadResult, Session
from sessionbench.store.validation import DEFAULT_LIMITS, Limits

T = TypeVar("T")
BACKEND = "postgres"

_CREATE = """
WITH ins AS (
    INSERT INTO chat_sessions (session_id, user_id, metadata) VALUES ($1, $2, $3)
    ON CONFLICT (session_id) DO NOTHING
    RETURNING session_id, user_id, created_at, last_message_at, last_seq, metadata, is_active
)
SELECT * FROM ins
UNION ALL
SELECT session_id, user_id, created_at, last_message_at, last_seq, metadata, is_active
FROM chat_sessions WHERE session_id = $1 AND NOT EXISTS (SELECT 1 FROM ins)
"""

# One statement: create-or-bump the session row (row lock serialises appends per session,
# so seqs are contiguous), then insert the batch with the seqs it returned.  When $2 (the
# acting user) is given and the session belongs to someone else, nothing is written.
_APPEND = """
WITH s AS (
    INSERT INTO chat_sessions AS cs (session_id, user_id, last_seq, last_message_at)
    VALUES ($1, $2, $3, now())
    ON CONFLICT (session_id) DO UPDATE
        SET last_seq = cs.last_seq + $3, last_message_at = now(), is_active = true
        WHERE $2::text IS NULL OR cs.user_id IS NOT DISTINCT FROM $2::text
    RETURNING cs.last_seq, cs.user_id
)
INSERT INTO chat_messages (session_id, seq, role, content, created_at, metadata)
SELECT $1, s.last_seq - $3 + m.ord, m.role, m.content, now(), m.metadata
FROM s, unnest($4::text[], $5::text[], $6::jsonb[]) WITH ORDINALITY AS m(role, content, metadata, ord)
RETURNING seq, created_at
"""

# The same for one message, with scalar parameters: no arrays to encode or unnest (the
# message-at-a-time pattern of most chat apps; ~10% less server and client work).
_APPEND_ONE = """
WITH s AS (
    INSERT INTO chat_sessions AS cs (session_id, user_id, last_seq, last_message_at)
    VALUES ($1, $2, 1, now())
    ON CONFLICT (session_id) DO UPDATE
        SET last_seq = cs.last_seq + 1, last_message_at = now(), is_active = true
        WHERE $2::text IS NULL OR cs.user_id IS NOT DISTINCT FROM $2::text
    RETURNING cs.last_seq
)
INSERT INTO chat_messages (session_id, seq, role, content, created_at, metadata)
SELECT $1, s.last_seq, $3, $4, now(), $5::jsonb FROM s
RETURNING seq, created_at
"""

_WINDOW = """
SELECT s.user_id, s.last_seq, m.seq, m.role, m.content, m.created_at, m.metadata
FROM chat_sessions s
LEFT JOIN LATERAL (
    SELECT seq, role, content, created_at, metadata FROM chat_messages
    WHERE session_id = s.session_id AND ($3::bigint IS NULL OR seq < $3)
    ORDER BY seq DESC LIMIT $2
) m ON true
WHERE s.session_id = $1
ORDER BY m.seq
"""

# Delete the session's newest message (if the acting user $2 may) and say what was found:
# no row: no session; ``newest`` NULL: no message; ``newest`` set but nothing deleted: a
# concurrent pop deleted that row first (this statement's snapshot predates it), so the
# caller asks again.  ``last_seq`` is left alone: the seq is never given out again.
_POP = """
WITH s AS (SELECT user_id FROM chat_sessions WHERE session_id = $1),
v AS (SELECT seq FROM chat_messages WHERE session_id = $1 ORDER BY seq DESC LIMIT 1),
d AS (
    DELETE FROM chat_messages m USING s, v
    WHERE m.session_id = $1 AND m.seq = v.seq AND ($2::text IS NULL OR s.user_id = $2)
    RETURNING m.seq, m.role, m.content, m.created_at, m.metadata
)
SELECT s.user_id, v.seq AS newest, d.seq, d.role, d.content, d.created_at, d.metadata
FROM s LEFT JOIN v ON true LEFT JOIN d ON true
"""

_SESSION_COLUMNS = "session_id, user_id, created_at, last_message_at, last_seq, metadata, is_active"


@dataclass(frozen=True, slots=True)
class HistoryWindow:
    """What one ``_WINDOW`` read returns: the owner, ``last_seq`` and messages (oldest first)."""

    user_id: str | None
    last_seq: int
    messages: list[Message]


async def _no_reset(conn: Any) -> None:
    """Skip asyncpg's reset-on-release query: the store keeps no session state on a
    connection (no SET, LISTEN, advisory session locks or open cursors outside a
    transaction), and the default reset costs one more round trip per operation."""


def _encode_jsonb(value: Any) -> str:
    """A jsonb parameter: validated metadata (a JSON object of plain values, integers within 64 bits)."""
    return orjson.dumps(value).decode()


def _decode_jsonb(text: str) -> Any:
    """A jsonb value: a fresh ``{}`` for the empty object (most rows), otherwise orjson.

    orjson reads JSON the way the stdlib does for everything the store writes (validated:
    integers within 64 bits); a value it refuses (a wider integer written by someone
    else) is left to the stdlib.  About 0.05 µs per empty object and 4x faster than
    ``json.loads`` otherwise; a window of 20 decodes 20 of these.
    """
    if text == "{}":
        return {}
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


async def _init_connection(conn: Any) -> None:
    await conn.set_type_codec("jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb, schema="pg_catalog")


class _QuietReconnects(logging.Filter):
    """asyncpg's pool logs a warning with a traceback every time it fails to reopen its
    ``min_size`` connections, which is every second of a PostgreSQL outage: keep the
    first one of each outage (a minute apart at most), drop the repeats."""

    MESSAGE = "Failed to restore the pool connection floor"

    def __init__(self, every: float = 60.0) -> None:
        super().__init__()
        self.every = every
        self._last = float("-inf")

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.MESSAGE):
            return True
        now = time.monotonic()
        if now - self._last < self.every:
            return False
        self._last = now
        return True


def _quiet_pool_logs() -> None:
    logger = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, _QuietReconnects) for f in logger.filters):
        logger.addFilter(_QuietReconnects())


async def create_pool(
    url: str,
    *,
    min_size: int = 2,
    max_size: int = 20,
    command_timeout: float = 10.0,
    connect_timeout: float = 5.0,
    statement_cache_size: int = 100,
) -> asyncpg.Pool:
    """An asyncpg pool with the JSON codec the store expects.  The caller owns it.

    ``statement_cache_size=0`` for PgBouncer in transaction mode (no named statements
    survive between transactions there).
    """
    _quiet_pool_logs()
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            command_timeout=command_timeout,
            timeout=connect_timeout,
            init=_init_connection,
            reset=_no_reset,
            statement_cache_size=statement_cache_size,
        )
    except Exception as exc:  # a driver exception never escapes
        raise StoreUnavailable(f"cannot connect to PostgreSQL: {type(exc).__name__}: {exc}") from exc
    assert pool is not None
    return pool


async def migrate(pool: asyncpg.Pool) -> list[int]:
    """Apply the versioned SQL files in ``sessionbench/store/migrations`` once each; return those applied.

    Safe to run from several processes at once (an advisory lock serialises them).
    """
    files = sorted(
        (int(f.name.split("_", 1)[0]), f.read_text())
        for f in resources.files("sessionbench.store").joinpath("migrations").iterdir()
        if f.name.endswith(".sql")
    )
    applied: list[int] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(7410931)")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS sessionstore_migrations "
            "(version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM sessionstore_migrations")}
        for version, sql in files:
            if version not in done:
                await conn.execute(sql)
                await conn.execute("INSERT INTO sessionstore_migrations (version) VALUES ($1)", version)
                applied.append(version)
    return applied


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError)):
        return "connection"
    if isinstance(exc, asyncpg.PostgresError):
        return "query"
    return "driver"  # anything else asyncpg raised (InternalClientError, ...)


def _discard(conn: Any) -> None:
    """Close a pooled connection in an unknown state so no caller gets it again.

    asyncpg may already have released a connection it saw break; then there is nothing
    left to do.
    """
    with contextlib.suppress(Exception):
        conn.terminate()


def _server_refused(exc: BaseException) -> bool:
    """The server answered with an error: nothing was committed and the connection is sound."""
    return isinstance(exc, asyncpg.PostgresError) and not isinstance(exc, asyncpg.PostgresConnectionError)


class PostgresStore(BaseStore):
    """The PostgreSQL backend.  ``pool`` is borrowed unless ``owns_pool`` (then ``close()`` closes it)."""

    backend = BACKEND

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        limits: Limits = DEFAULT_LIMITS,
        acquire_timeout: float = 2.0,
        close_timeout: float = 10.0,
        events: StoreEvents = NULL_EVENTS,
        owns_pool: bool = False,
    ) -> None:
        super().__init__(limits=limits)
        self.pool = pool
        self.acquire_timeout = acquire_timeout
        self.close_timeout = close_timeout
        self.events = events
        self.owns_pool = owns_pool

    async def _run(self, operation: str, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``fn`` on a pooled connection; every driver error becomes StoreUnavailable.

        A connection that failed other than by a server error (lost, timed out, in an
        unknown protocol state) is terminated, never handed to the next caller.
        """
        conn = await self._acquire(operation)
        try:
            return await fn(conn)
        except Exception as exc:  # a driver exception never escapes
            refused = _server_refused(exc)
            if not refused:
                _discard(conn)
            raise self._unavailable(operation, exc, in_doubt=not refused) from exc
        finally:
            await self._release(conn)

    async def _acquire(self, operation: str) -> Any:
        """A pooled connection within ``acquire_timeout`` (an ``asyncio.timeout`` scope: one timer,
        where asyncpg's own ``acquire(timeout=...)`` runs ``wait_for``, a task per call)."""
        try:
            async with asyncio.timeout(self.acquire_timeout):
                return await self.pool.acquire()
        except Exception as exc:  # a driver exception never escapes
            raise self._unavailable(operation, exc, in_doubt=False) from exc

    async def _release(self, conn: Any) -> None:
        try:
            await self.pool.release(conn)
        except Exception:  # noqa: BLE001 - the connection is lost either way
            _discard(conn)

    def _unavailable(self, operation: str, exc: BaseException, *, in_doubt: bool) -> StoreUnavailable:
        kind = _error_kind(exc)
        self.events.error(BACKEND, operation, kind)
        return StoreUnavailable(f"PostgreSQL {operation} failed ({kind}): {type(exc).__name__}", in_doubt=in_doubt)

    # -- sessions --------------------------------------------------------------------------
    async def _create(self, sid: str, uid: str | None, meta: dict[str, Any]) -> Session:
        row = None
        for _ in range(3):
            row = await self._run("create_session", lambda c: c.fetchrow(_CREATE, uuid.UUID(sid), uid, meta))
            if row is not None:
                break
            # No row: a concurrent create committed after this statement's snapshot, so the
            # INSERT waited and did nothing and the SELECT arm could not see the row.  A
            # new statement (new snapshot) sees it; this extra round trip happens only
            # when the race is lost.
        if row is None:
            raise StoreUnavailable(f"PostgreSQL create_session kept racing on session {sid}")
        session = _session(row)
        if uid is not None and session.user_id != uid:
            raise SessionNotFound(sid)
        return session

    async def _get_session(self, sid: str, uid: str | None) -> Session:
        q = f"SELECT {_SESSION_COLUMNS} FROM chat_sessions WHERE session_id = $1"
        row = await self._run("get_session", lambda c: c.fetchrow(q, uuid.UUID(sid)))
        if row is None or (uid is not None and row["user_id"] != uid):
            raise SessionNotFound(sid)
        return _session(row)

    async def _list_sessions(self, uid: str | None, limit: int, before: datetime | None) -> list[Session]:
        q = (
            f"SELECT {_SESSION_COLUMNS} FROM chat_sessions WHERE user_id IS NOT DISTINCT FROM $1 "
            "AND ($3::timestamptz IS NULL OR last_message_at < $3) ORDER BY last_message_at DESC LIMIT $2"
        )
        rows = await self._run("list_sessions", lambda c: c.fetch(q, uid, limit, before))
        return [_session(r) for r in rows]

    async def _delete(self, sid: str, uid: str | None) -> bool:
        q = "DELETE FROM chat_sessions WHERE session_id = $1 AND ($2::text IS NULL OR user_id = $2) RETURNING 1"
        return await self._run("delete_session", lambda c: c.fetchval(q, uuid.UUID(sid), uid)) is not None

    async def cleanup_batch(self, older_than: float, batch_size: int) -> list[str]:
        """Delete up to ``batch_size`` inactive sessions; return their ids (one short transaction)."""
        q = """
        DELETE FROM chat_sessions WHERE session_id IN (
            SELECT session_id FROM chat_sessions
            WHERE last_message_at < now() - make_interval(secs => $1)
            ORDER BY last_message_at LIMIT $2 FOR UPDATE SKIP LOCKED
        ) RETURNING session_id
        """
        rows = await self._run("cleanup_inactive", lambda c: c.fetch(q, older_than, batch_size))
        return [str(r["session_id"]) for r in rows]

    async def _cleanup(self, older_than: float, batch_size: int) -> int:
        total = 0
        while batch := await self.cleanup_batch(older_than, batch_size):
            total += len(batch)
            if len(batch) < batch_size:
                break
        return total

    # -- messages --------------------------------------------------------------------------
    async def _append(self, sid: str, uid: str | None, batch: Batch) -> list[Message]:
        key = sid  # canonical (validated): asyncpg encodes a uuid parameter from its string
        if len(batch) == 1:
            role, content, meta = batch[0]
            row = await self._run("add_messages", lambda c: c.fetchrow(_APPEND_ONE, key, uid, role, content, meta))
            if row is None:
                raise SessionNotFound(sid)
            return [Message(sid, row[0], role, content, row[1], meta)]
        roles, contents, metas = zip(*batch, strict=True)
        rows = await self._run(
            "add_messages", lambda c: c.fetch(_APPEND, key, uid, len(batch), list(roles), list(contents), list(metas))
        )
        if not rows:
            raise SessionNotFound(sid)
        rows = sorted(rows, key=lambda r: r["seq"])
        return [
            Message(sid, r["seq"], role, content, r["created_at"], meta)
            for r, (role, content, meta) in zip(rows, batch, strict=True)
        ]

    async def read_window(self, session_id: str, limit: int, before_seq: int | None) -> HistoryWindow | None:
        """The last ``limit`` messages before ``before_seq`` plus owner and ``last_seq``, in 1 round trip.

        ``None`` when the session does not exist.  Arguments must already be validated.
        """
        rows = await self._run("get_messages", lambda c: c.fetch(_WINDOW, session_id, limit, before_seq))
        if not rows:
            return None
        # columns by position (user_id, last_seq, seq, role, content, created_at, metadata): no name lookups
        msgs = [Message(session_id, r[2], r[3], r[4], r[5], r[6]) for r in rows if r[2] is not None]
        first = rows[0]
        return HistoryWindow(first[0], first[1], msgs)

    async def _read(self, sid: str, uid: str | None, limit: int, before_seq: int | None) -> ReadResult:
        window = await self.read_window(sid, limit, before_seq)
        if window is None or (uid is not None and window.user_id != uid):
            if uid is None:
                return ReadResult([], "bypass")
            raise SessionNotFound(sid)
        return ReadResult(window.messages, "bypass")

    async def _pop(self, sid: str, uid: str | None) -> Message | None:
        for _ in range(8):
            row = await self._run("pop_message", lambda c: c.fetchrow(_POP, uuid.UUID(sid), uid))
            if row is None or (uid is not None and row["user_id"] != uid):
                if uid is None:
                    return None
                raise SessionNotFound(sid)
            if row["newest"] is None:
                return None
            if row["seq"] is not None:
                return Message(sid, row["seq"], row["role"], row["content"], row["created_at"], row["metadata"])
            # Another pop took that message after this statement's snapshot: a new statement
            # sees what is newest now (an extra round trip only when two pops race).
        raise StoreUnavailable(f"PostgreSQL pop_message kept racing on session {sid}")

    async def _search(self, text: str, uid: str | None, limit: int) -> list[Message]:
        q = """
        SELECT m.session_id, m.seq, m.role, m.content, m.created_at, m.metadata
        FROM chat_messages m JOIN chat_sessions s USING (session_id),
             websearch_to_tsquery('english', $1) AS query
        WHERE to_tsvector('english', m.content) @@ query AND ($2::text IS NULL OR s.user_id = $2)
        ORDER BY ts_rank(to_tsvector('english', m.content), query) DESC, m.created_at DESC, m.seq DESC
        LIMIT $3
        """
        rows = await self._run("search", lambda c: c.fetch(q, text, uid, limit))
        return [_message(r) for r in rows]

    async def _history(self, sid: str) -> AsyncIterator[Message]:
        q = (
            "SELECT session_id, seq, role, content, created_at, metadata FROM chat_messages "
            "WHERE session_id = $1 ORDER BY seq"
        )
        conn = await self._acquire("export")
        try:
            async with conn.transaction():
                async for row in conn.cursor(q, uuid.UUID(sid), prefetch=500):
                    yield _message(row)
        except Exception as exc:  # a driver exception never escapes
            if not _server_refused(exc):
                _discard(conn)
            raise self._unavailable("export", exc, in_doubt=False) from exc
        finally:
            await self._release(conn)

    async def _health(self, seconds: float) -> dict[str, str]:
        return {"postgres": await probe(self._ping(), seconds)}

    async def _ping(self) -> None:
        async with self.pool.acquire() as conn:  # bounded by probe(); not counted as an operation error
            await conn.fetchval("SELECT 1")

    async def _close(self) -> None:
        if self.owns_pool:
            await close_pool(self.pool, self.close_timeout)


async def close_pool(pool: asyncpg.Pool, seconds: float) -> None:
    """Close ``pool`` gracefully, waiting at most ``seconds`` for borrowed connections to come
    back, then terminate what is left: asyncpg's own ``close()`` waits for them forever, so a
    caller holding a connection (or a task destroyed while holding one) would hang ``close()``."""
    try:
        async with asyncio.timeout(seconds):
            await pool.close()
    except TimeoutError:
        logging.getLogger(__name__).warning("PostgreSQL pool still in use after %g s: terminated", seconds)
        pool.terminate()


async def probe(check: Awaitable[Any], seconds: float) -> str:
    """``ok``, or ``unavailable (<error type>)`` when ``check`` fails or takes over ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            await check
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"unavailable ({type(exc).__name__})"
    return "ok"


def _session(row: Any) -> Session:
    return Session(
        session_id=str(row["session_id"]),
        user_id=row["user_id"],
        created_at=row["created_at"],
        last_message_at=row["last_message_at"],
        last_seq=row["last_seq"],
        metadata=row["metadata"] or {},
        is_active=row["is_active"],
    )


def _message(row: Any) -> Message:
    return Message(
        str(row["session_id"]), row["seq"], row["role"], row["content"], row["created_at"], row["metadata"] or {}
    )
