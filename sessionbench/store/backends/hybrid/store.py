"""Hybrid backend: a Redis cache of each session's recent window in front of PostgreSQL.

PostgreSQL (the ``durable`` store) is the source of truth; Redis holds, per session,
a **contiguous suffix** of the history (at most ``cache.size`` messages, each tagged
with its ``seq``).  The consistency contract (ARCHITECTURE.md, "The hybrid contract"):

1. A write returns only after PostgreSQL committed it; if PostgreSQL fails the call
   raises and the cache is not touched.  (A failure whose outcome is unknown, the
   reply lost, marks the session's entry stale: it is dropped before it is used again.)
2. An append extends the cached window in one Lua script only if its first ``seq`` is
   exactly the cached last ``seq`` + 1; otherwise the entry is dropped.  No gap, no
   misorder, never an entry holding only the newest message: an entry whose list
   vanished on its own (evicted, deleted) is dropped, never extended or served.
3. A populate after a miss holds a lease taken by the read that missed; any append or
   delete in between deletes the lease, so the populate is discarded.  The append's
   script runs after its commit, so a populate whose snapshot predates that commit
   can land just before the script; the script then extends it (or drops it).  No
   acknowledged write is ever missing from an entry, but a reader that went to
   PostgreSQL may briefly see a committed, not yet acknowledged append that the cache
   does not show yet (the window memcache leases leave between the write and the delete).
4. Requests the window cannot answer in full go to PostgreSQL as ``bypass``.
5. Redis errors never fail a call: reads fall back to PostgreSQL, writes still succeed,
   a circuit breaker stops waiting on a dead Redis.  A committed write whose entry
   could not be updated is recorded in PostgreSQL before it is acknowledged, and every
   process drops such entries before trusting them again (:mod:`.sync`).
6. TTL is sliding by default (refreshed on read and write) or fixed; delete, cleanup
   and pop remove cache entries too.
7. Many processes: an acknowledged write is in every window any process serves more
   than ``4 x cache.sync_interval`` seconds (2 s by default) after it, even if the writer
   was cut off from Redis or died (:mod:`.sync` states the mechanism and the bound).

Pops.  ``pop_message`` deletes the newest message in PostgreSQL and then the whole
entry (its lease too, so a populate read before the pop is discarded), recording the
session like any other write when Redis cannot do it.  PostgreSQL never gives the
popped seq out again (``last_seq`` stays), and an entry always ends at ``last_seq``:
a populate stores only the newest run of consecutive seqs ending there, and nothing
when the newest message was popped since the last append.  So an append script
delayed past the pop, carrying the popped message, finds the entry absent or already
at or past that seq (``present``): it can never put the popped message back, and a
later append (the next seq) is never mistaken for it.  Reads reaching below such a
gap go to PostgreSQL (``bypass``) until enough messages follow it.

Keys (:mod:`.keys`): three per session, one hash tag, so every script touches one Redis
Cluster slot; the cache epoch lives in PostgreSQL and is passed to the scripts.

Round trips:

* ``get_messages`` hit: **1 Redis** (one EVALSHA).  Miss: **1 Redis + 1 PG + 1 Redis**
  (the lookup that takes the lease, the PostgreSQL read, the populate).  Bypass:
  1 Redis + 1 PG.
* ``add_and_read``: **1 PG + 1 Redis** on a hit (the append and read scripts pipelined);
  1 PG + 1 Redis + 1 PG + 1 Redis on a miss (the read, the populate).
* ``add_message`` / ``add_messages`` (a turn): **1 PG + 1 Redis**.  When the entry
  cannot be updated (Redis down, the breaker open, the session marked stale): 1 PG + 1 PG
  (the write, then its invalidation record) and no Redis.
* ``pop_message``: **1 PG + 1 Redis** (the delete, then the entry's); 1 PG + 1 PG when
  Redis cannot delete it (the invalidation record); 1 PG alone when nothing was popped.
* In the background, per process: 1 PG round trip every ``cache.sync_interval``
  (0.5 s); after an outage, 1 Redis + 1 PG round trip to drop the stale entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sessionbench.store.backends.base import BaseStore, Batch
from sessionbench.store.backends.hybrid import scripts
from sessionbench.store.backends.hybrid.breaker import CircuitBreaker
from sessionbench.store.backends.hybrid.client import RedisClient, redis_kind
from sessionbench.store.backends.hybrid.codec import CacheEntry, decode_entries, encode_message
from sessionbench.store.backends.hybrid.keys import EPOCH, LAST, OWNER, KeyLayout
from sessionbench.store.backends.hybrid.rules import servable
from sessionbench.store.backends.hybrid.sync import CacheSync
from sessionbench.store.backends.postgres import PostgresStore, probe
from sessionbench.store.errors import SessionNotFound, StoreUnavailable
from sessionbench.store.events import NULL_EVENTS, StoreEvents
from sessionbench.store.models import CacheResult, Message, ReadResult, Session, Turn
from sessionbench.store.settings import CacheSettings, RedisSettings
from sessionbench.store.validation import validate_session_id

BACKEND = "hybrid"
T = TypeVar("T")


class HybridStore(BaseStore):
    """Redis in front of a :class:`PostgresStore`.  Both are borrowed unless ``owns_clients``
    (then ``close()`` closes the Redis client and the durable store)."""

    backend = BACKEND

    def __init__(
        self,
        redis: RedisClient,
        durable: PostgresStore,
        *,
        cache: CacheSettings | None = None,
        breaker: RedisSettings | None = None,
        events: StoreEvents = NULL_EVENTS,
        owns_clients: bool = False,
    ) -> None:
        super().__init__(limits=durable.limits)
        self.redis = redis
        self.durable = durable
        self.owns_clients = owns_clients
        self.cache = cache or CacheSettings()
        breaker_cfg = breaker or RedisSettings()
        self.events = events
        self.breaker = CircuitBreaker(breaker_cfg.breaker_failures, breaker_cfg.breaker_reset, events)
        self._read_script = scripts.LuaScript(redis, "read")
        self._append_script = scripts.LuaScript(redis, "append")
        self._populate_script = scripts.LuaScript(redis, "populate")
        self._ttl_ms = str(max(1, int(self.cache.ttl * 1000)))
        self._lease_ms = str(max(1, int(self.cache.lease_ttl * 1000)))
        self._sliding = "1" if self.cache.sliding else "0"
        self.layout = KeyLayout(self.cache.key_prefix)
        self._token_prefix = secrets.token_hex(8) + ":"
        self._leases = 0
        self.sync = CacheSync(
            durable._run,
            self._delete_entries,
            self.breaker.allow,
            events,
            layout=self.layout,
            interval=self.cache.sync_interval,
            dirty_max=self.cache.dirty_max,
        )

    async def load_scripts(self) -> bool:
        """SCRIPT LOAD the Lua scripts so the first calls do not pay for NOSCRIPT.

        Returns False (and stays usable) when Redis is unreachable; scripts are then
        loaded on first use.
        """
        try:
            for script in (self._read_script, self._append_script, self._populate_script):
                await script.load()
        except Exception as exc:  # noqa: BLE001 - any redis-py error (RedisError, RedisClusterException, OSError)
            self.events.error("redis", "load_scripts", redis_kind(exc))
            return False
        return True

    def _keys(self, sid: str) -> list[str]:
        return self.layout.script_keys(sid)

    def _lease_token(self) -> str:
        """Unique across processes and reads: a random per-store prefix and a counter (no syscall per read)."""
        self._leases += 1
        return f"{self._token_prefix}{self._leases}"

    # -- Redis plumbing ----------------------------------------------------------------------
    def _redis_failed(self, operation: str, exc: BaseException) -> None:
        self.breaker.failure()
        self.events.error("redis", operation, redis_kind(exc))

    async def _trusts(self, sid: str) -> bool:
        """May the cache be used for ``sid`` now (no I/O after the first call)?"""
        if not self.sync.running:
            await self.sync.start()
        return self.sync.trusts(sid) and self.breaker.allow()

    async def _delete_entries(self, sids: list[str]) -> None:
        """Delete the cache entries of ``sids`` (1 Redis round trip); raises on failure."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for sid in sids:
                    pipe.delete(*self.layout.session(sid).entry)
                await pipe.execute()
        except Exception as exc:
            self._redis_failed("invalidate", exc)
            raise
        self.breaker.success()

    async def _drop(self, sids: Sequence[str], reason: str, operation: str) -> None:
        """Delete cache entries after PostgreSQL deleted their sessions (before acknowledging).

        If Redis cannot do it, the sessions are recorded in PostgreSQL instead (:mod:`.sync`).
        """
        if not sids:
            return
        try:
            if self.breaker.allow():
                with contextlib.suppress(Exception):  # counted by _delete_entries; recorded below
                    await self._delete_entries(list(sids))
                    for _ in sids:
                        self.events.cache_invalidation(reason)
                    return
        except BaseException:  # cancelled: the deletes may not have run
            self.sync.mark(sids)
            raise
        await self.sync.record(list(sids), operation)

    # -- reads -------------------------------------------------------------------------------
    async def _read(self, sid: str, uid: str | None, limit: int, before_seq: int | None) -> ReadResult:
        keys = self._keys(sid)
        if not await self._trusts(sid):
            return await self._read_through(sid, uid, limit, before_seq, keys, "error", "")
        token = self._lease_token() if before_seq is None else ""
        try:
            reply = await self._read_script(keys=keys, args=self._read_args(limit, before_seq, uid, token))
        except Exception as exc:  # noqa: BLE001 - any redis-py error: the read goes to PostgreSQL
            self._redis_failed("get_messages", exc)
            return await self._read_through(sid, uid, limit, before_seq, keys, "error", "")
        self.breaker.success()
        return await self._answer(sid, uid, limit, before_seq, keys, token, reply)

    def _read_args(self, limit: int, before_seq: int | None, uid: str | None, token: str) -> list[Any]:
        return [limit, "" if before_seq is None else before_seq, self._ttl_ms, self._sliding, uid or "", token,
                self._lease_ms, self.sync.epoch]  # fmt: skip

    async def _answer(self, sid: str, uid: str | None, limit: int, before_seq: int | None, keys: list[str],
                      token: str, reply: Any) -> ReadResult:  # fmt: skip
        """What the read script's ``reply`` means: a hit served, or PostgreSQL asked."""
        kind = reply[0]
        if kind == "hit":
            self.events.cache_result("hit")
            return ReadResult(decode_entries(sid, reply[2]), "hit")
        if kind == "forbidden":
            self.events.cache_result("hit")
            raise SessionNotFound(sid)
        if kind == "bypass":
            return await self._read_through(sid, uid, limit, before_seq, keys, "bypass", "")
        if reply[2]:
            self.events.cache_invalidation("epoch")
        return await self._read_through(sid, uid, limit, before_seq, keys, "miss", token if reply[1] else "")

    async def _read_through(self, sid: str, uid: str | None, limit: int, before_seq: int | None, keys: list[str],
                            result: CacheResult, token: str) -> ReadResult:  # fmt: skip
        """Read from PostgreSQL (1 PG); with a lease ``token``, populate the entry (1 Redis)."""
        self.events.cache_result(result)
        fetch = max(limit, self.cache.size) if token else limit
        window = await self.durable.read_window(sid, fetch, before_seq)
        if window is None:
            if uid is None:
                return ReadResult([], result)
            raise SessionNotFound(sid)
        if token:
            cacheable = cacheable_suffix(window.messages[-self.cache.size :], window.last_seq)
            if cacheable is not None:
                await self._fill(sid, keys, token, window.last_seq, window.user_id, cacheable)
        if uid is not None and window.user_id != uid:
            raise SessionNotFound(sid)
        return ReadResult(window.messages[-limit:], result)

    async def _fill(self, sid: str, keys: list[str], token: str, last_seq: int, owner: str | None,
                    messages: list[Message]) -> None:  # fmt: skip
        args: list[str | int | bytes] = [token, last_seq, owner or "", self._ttl_ms, self.sync.epoch]
        args.extend(map(encode_message, messages))
        try:
            stored = await self._populate_script(keys=keys, args=args)
        except Exception as exc:  # noqa: BLE001 - any redis-py error: the populate is simply lost
            self._redis_failed("populate", exc)
            return
        self.breaker.success()
        self.events.cache_populate("stored" if stored == "stored" else "discarded")

    # -- writes ------------------------------------------------------------------------------
    async def _durably(self, sid: str, write: Awaitable[T]) -> T:
        """Run a PostgreSQL write of ``sid``; when its outcome is unknown (the reply lost, or the
        call cancelled mid-flight) the session's entry stops being trusted before we re-raise."""
        try:
            return await write
        except StoreUnavailable as exc:
            if exc.in_doubt:
                self.sync.mark([sid])
            raise
        except asyncio.CancelledError:
            self.sync.mark([sid])
            raise

    async def _append(self, sid: str, uid: str | None, batch: Batch) -> list[Message]:
        stored = await self._durably(sid, self.durable._append(sid, uid, batch))
        try:
            extended = await self._extend(sid, stored)
        except BaseException:  # cancelled after the commit: the entry may lack these messages
            self.sync.mark([sid])
            raise
        if not extended:
            await self.sync.record([sid], "add_messages")
        return stored

    async def _extend(self, sid: str, stored: list[Message]) -> bool:
        """Append committed messages to the cached window (1 Redis round trip).

        False when the entry may now miss them (Redis not usable or failed): the caller
        records the session before acknowledging.
        """
        if not await self._trusts(sid):
            return False
        try:
            outcome = await self._append_script(keys=self._keys(sid), args=self._append_args(stored))
        except Exception as exc:  # noqa: BLE001 - any redis-py error: the script may or may not have run
            self._redis_failed("add_messages", exc)
            return False
        self._appended(outcome)
        return True

    def _append_args(self, stored: list[Message]) -> list[str | int | bytes]:
        return [stored[0].seq, self._ttl_ms, self._sliding, self.cache.size, self.sync.epoch,
                *map(encode_message, stored)]  # fmt: skip

    def _appended(self, outcome: Any) -> None:
        """The append script ran: the entry holds the messages, or it was dropped."""
        self.breaker.success()
        if outcome in ("gap", "epoch", "lost"):
            self.events.cache_invalidation(outcome)

    async def _append_and_read(self, sid: str, uid: str | None, batch: Batch, limit: int) -> Turn:
        """``_append`` and ``_read`` with their two scripts in one pipeline: **1 PG + 1 Redis** on a
        hit (against 1 PG + 2 Redis for the two calls), 1 PG + 1 Redis + 1 PG + 1 Redis on a miss.

        The read script runs right after the append script on the same connection, so it sees
        the entry the append left (extended, or dropped: a miss).  When the append script
        failed, its entry may lack the messages: the session is recorded as for any such write
        and read from PostgreSQL, whatever the read script answered.
        """
        stored = await self._durably(sid, self.durable._append(sid, uid, batch))
        keys = self._keys(sid)
        try:
            if not await self._trusts(sid):
                outcome: Any = None
            else:
                token = self._lease_token()
                outcome, reply = await scripts.run_pipelined(
                    self.redis,
                    [(self._append_script, keys, self._append_args(stored)),
                     (self._read_script, keys, self._read_args(limit, None, uid, token))],
                )  # fmt: skip
        except BaseException:  # cancelled after the commit: the entry may lack these messages
            self.sync.mark([sid])
            raise
        if outcome is None or isinstance(outcome, Exception):
            if outcome is not None:
                self._redis_failed("add_messages", outcome)
            await self.sync.record([sid], "add_messages")
            read = await self._read_through(sid, uid, limit, None, keys, "error", "")
            return Turn(stored, read.messages, read.cache)
        self._appended(outcome)
        if isinstance(reply, Exception):
            self._redis_failed("get_messages", reply)
            read = await self._read_through(sid, uid, limit, None, keys, "error", "")
        else:
            read = await self._answer(sid, uid, limit, None, keys, token, reply)
        return Turn(stored, read.messages, read.cache)

    # -- the rest is PostgreSQL's --------------------------------------------------------------
    async def _create(self, sid: str, uid: str | None, meta: dict[str, Any]) -> Session:
        return await self.durable._create(sid, uid, meta)

    async def _get_session(self, sid: str, uid: str | None) -> Session:
        return await self.durable._get_session(sid, uid)

    async def _list_sessions(self, uid: str | None, limit: int, before: datetime | None) -> list[Session]:
        return await self.durable._list_sessions(uid, limit, before)

    async def _search(self, text: str, uid: str | None, limit: int) -> list[Message]:
        return await self.durable._search(text, uid, limit)

    def _history(self, sid: str) -> AsyncIterator[Message]:
        return self.durable._history(sid)

    async def _delete(self, sid: str, uid: str | None) -> bool:
        deleted = await self._durably(sid, self.durable._delete(sid, uid))
        if deleted:
            await self._drop([sid], "delete", "delete_session")
        return deleted

    async def _pop(self, sid: str, uid: str | None) -> Message | None:
        """The durable pop, then the entry is deleted (or the session recorded) before returning."""
        popped = await self._durably(sid, self.durable._pop(sid, uid))
        if popped is not None:
            await self._drop([sid], "pop", "pop_message")
        return popped

    async def _cleanup(self, older_than: float, batch_size: int) -> int:
        total = 0
        while True:
            try:
                batch = await self.durable.cleanup_batch(older_than, batch_size)
            except StoreUnavailable as exc:
                if exc.in_doubt:
                    self.sync.invalidate_all()  # we do not know which sessions went
                raise
            except asyncio.CancelledError:
                self.sync.invalidate_all()
                raise
            if not batch:
                break
            await self._drop(batch, "cleanup", "cleanup_inactive")
            total += len(batch)
            if len(batch) < batch_size:
                break
        return total

    async def _health(self, seconds: float) -> dict[str, str]:
        checks = await self.durable._health(seconds)
        checks["redis"] = await probe(self.redis.ping(), seconds)
        checks["cache_breaker"] = ("closed", "open", "half_open")[self.breaker.state]
        return checks

    # -- inspection ----------------------------------------------------------------------------
    async def inspect(self, session_id: str) -> CacheEntry:
        """The raw cache entry of ``session_id`` (1 Redis round trip; no TTL refresh, no lease).

        For checks and tools (the fault checker, tests): :meth:`servable` says whether a
        read would serve it.  Redis errors propagate (this is not a request path).
        """
        keys = self.layout.session(validate_session_id(session_id))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.meta, [LAST, OWNER, EPOCH])
            pipe.lrange(keys.messages, 0, -1)
            pipe.pttl(keys.meta)
            (last, owner, epoch), raw, pttl = await pipe.execute()
        return CacheEntry(
            None if last is None else int(last),
            owner,
            epoch,
            tuple(raw),
            pttl if pttl is not None and pttl >= 0 else None,
        )

    def servable(self, entry: CacheEntry) -> bool:
        """Whether a read now would serve ``entry`` (the read script's rule, :func:`.rules.servable`)."""
        return servable(entry.last, entry.epoch, len(entry.raw), self.sync.epoch)

    @property
    def dirty_sessions(self) -> int:
        """Sessions whose cache entries this process will drop before trusting them again."""
        return len(self.sync.dirty)

    async def _close(self) -> None:
        await self.sync.stop()
        if self.owns_clients:
            try:
                await self.redis.aclose()
            finally:
                await self.durable.close()


def cacheable_suffix(messages: list[Message], last_seq: int) -> list[Message] | None:
    """What of a PostgreSQL window (oldest first) a cache entry may hold, or None for nothing.

    An entry is a run of consecutive seqs ending at the session's ``last_seq`` (the read
    script counts positions from it).  Without pops that is the whole window; after one,
    only the messages above the newest gap, and None when the newest message itself was
    popped (``last_seq`` names a seq that no longer exists) or every message was.
    """
    if not messages:
        return [] if last_seq == 0 else None
    if messages[-1].seq != last_seq:
        return None
    if last_seq - messages[0].seq == len(messages) - 1:
        return messages  # seqs strictly increase, so this span means no gap: the usual case
    start = len(messages) - 1
    while start > 0 and messages[start - 1].seq == messages[start].seq - 1:
        start -= 1
    return messages[start:]
