"""Hybrid backend: a Redis cache of each session's recent window in front of PostgreSQL.

PostgreSQL (the ``durable`` store) is the source of truth; Redis holds, per session,
a **contiguous suffix** of the history (at most ``cache.size`` messages, each tagged
with its ``seq``).  The consistency contract (DESIGN.md §2):

1. A write returns only after PostgreSQL committed it; if PostgreSQL fails the call
   raises and the cache is not touched.  (A failed commit may still have happened,
   its reply lost: the session's entry is dropped before the cache is used again.)
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
   a circuit breaker stops waiting on a dead Redis, and sessions written while Redis
   was unreachable are remembered (bounded; on overflow the whole cache namespace is
   invalidated by bumping an epoch) and dropped from the cache before it serves again.
6. TTL is sliding by default (refreshed on read and write) or fixed; delete and cleanup
   remove cache entries too.

Keys per session share a hash tag so the three live in one Redis Cluster slot:
``{prefix}:{<sid>}:m`` (list of encoded messages), ``:h`` (hash: last, owner, epoch),
``:l`` (populate lease).  The epoch key ``{prefix}:epoch`` is read inside the scripts;
under Redis Cluster it lives in another slot (see the README's scaling notes).

Round trips:

* ``get_messages`` hit: **1 Redis** (one EVALSHA).  Miss: **1 Redis + 1 PG + 1 Redis**
  (the lookup that takes the lease, the PostgreSQL read, the populate).  Bypass:
  1 Redis + 1 PG.
* ``add_message`` / ``add_messages`` (a turn): **1 PG + 1 Redis**.
* Right after a Redis outage, the first cache operation adds 1 Redis round trip to
  drop the entries that missed writes.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from store.backends.base import BaseStore, Batch
from store.backends.hybrid import scripts
from store.backends.hybrid.breaker import CircuitBreaker
from store.backends.hybrid.client import redis_kind
from store.backends.hybrid.codec import decode_window, encode_message
from store.backends.hybrid.keys import KeyLayout
from store.backends.postgres import PostgresStore, probe
from store.errors import SessionNotFound, StoreUnavailable
from store.events import NULL_EVENTS, StoreEvents
from store.models import CacheResult, Message, ReadResult, Session
from store.settings import CacheSettings, RedisSettings

BACKEND = "hybrid"


class HybridStore(BaseStore):
    """Redis in front of a :class:`PostgresStore`.  Both are borrowed unless ``owns_clients``
    (then ``close()`` closes the Redis client and the durable store)."""

    backend = BACKEND

    def __init__(
        self,
        redis: aioredis.Redis,
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
        self._read_script = redis.register_script(scripts.source("read"))
        self._append_script = redis.register_script(scripts.source("append"))
        self._populate_script = redis.register_script(scripts.source("populate"))
        self._ttl_ms = str(max(1, int(self.cache.ttl * 1000)))
        self._lease_ms = str(max(1, int(self.cache.lease_ttl * 1000)))
        self._sliding = "1" if self.cache.sliding else "0"
        self.layout = KeyLayout(self.cache.key_prefix)
        self._epoch_key = self.layout.epoch
        # Sessions whose cache entry may have missed a write, each with the number of the
        # mark that put it there (a mark made while a cleanup is in flight must survive it).
        self._dirty: dict[str, int] = {}
        self._marks = 0
        self._bump_epoch = 0  # the mark that asked for an epoch bump; 0 = none pending
        self._cleaning = False

    async def load_scripts(self) -> bool:
        """SCRIPT LOAD the Lua scripts so the first calls do not pay for NOSCRIPT.

        Returns False (and stays usable) when Redis is unreachable; scripts are then
        loaded on first use.
        """
        try:
            for script in (self._read_script, self._append_script, self._populate_script):
                await self.redis.script_load(script.script)
        except (RedisError, OSError) as exc:
            self.events.error("redis", "load_scripts", redis_kind(exc))
            return False
        return True

    def _keys(self, sid: str) -> list[str]:
        return self.layout.script_keys(sid)

    # -- Redis plumbing ----------------------------------------------------------------------
    def _redis_failed(self, operation: str, exc: BaseException) -> None:
        self.breaker.failure()
        self.events.error("redis", operation, redis_kind(exc))

    def _mark_dirty(self, sid: str) -> None:
        """Remember a session whose cache entry may have missed a write (bounded)."""
        self._marks += 1
        self._dirty[sid] = self._marks
        if len(self._dirty) > self.cache.dirty_max:
            self._invalidate_all()

    def _invalidate_all(self) -> None:
        """Too many (or unknown) sessions missed writes: bump the epoch before the next use."""
        self._marks += 1
        self._dirty.clear()
        self._bump_epoch = self._marks

    async def _usable(self, operation: str) -> bool:
        """True when the cache may be used now: breaker allows and no entry that missed
        a write is left (they are dropped first, in one round trip).

        One cleanup runs at a time; calls that arrive meanwhile go around the cache
        (False) instead of piling up behind it or sending the same deletes again.
        """
        if not self.breaker.allow():
            return False
        if not self._dirty and not self._bump_epoch:
            return True
        if self._cleaning:
            return False
        dirty, bump = dict(self._dirty), self._bump_epoch
        self._cleaning = True
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for sid in dirty:
                    pipe.delete(*self.layout.session(sid).entry)
                if bump:
                    pipe.incr(self._epoch_key)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._redis_failed(operation, exc)
            return False
        finally:
            self._cleaning = False
        for sid, mark in dirty.items():
            if self._dirty.get(sid) == mark:  # not marked again while the deletes were in flight
                del self._dirty[sid]
        if bump:
            if self._bump_epoch == bump:
                self._bump_epoch = 0
            self.events.cache_invalidation("epoch_bump")
        for _ in dirty:
            self.events.cache_invalidation("outage")
        self.breaker.success()
        return True

    async def _drop(self, sids: Sequence[str], reason: str, operation: str) -> None:
        """Delete cache entries after PostgreSQL deleted their sessions."""
        if not sids:
            return
        try:
            if await self._usable(operation):
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for sid in sids:
                            pipe.delete(*self.layout.session(sid).entry)
                        await pipe.execute()
                    self.breaker.success()
                    for _ in sids:
                        self.events.cache_invalidation(reason)
                    return
                except (RedisError, OSError) as exc:
                    self._redis_failed(operation, exc)
        except BaseException:  # cancelled: the deletes may not have run
            for sid in sids:
                self._mark_dirty(sid)
            raise
        for sid in sids:
            self._mark_dirty(sid)

    # -- reads -------------------------------------------------------------------------------
    async def _read(self, sid: str, uid: str | None, limit: int, before_seq: int | None) -> ReadResult:
        keys = self._keys(sid)
        token = ""
        result: CacheResult = "error"
        if await self._usable("get_messages"):
            token = secrets.token_hex(8) if before_seq is None else ""
            args = [limit, "" if before_seq is None else before_seq, self._ttl_ms, self._sliding, uid or "", token,
                    self._lease_ms]  # fmt: skip
            try:
                reply = await self._read_script(keys=keys, args=args)
            except (RedisError, OSError) as exc:
                self._redis_failed("get_messages", exc)
                token = ""
            else:
                self.breaker.success()
                kind = reply[0]
                if kind == "hit":
                    self.events.cache_result("hit")
                    return ReadResult(decode_window(sid, reply[2]), "hit")
                if kind == "forbidden":
                    self.events.cache_result("hit")
                    raise SessionNotFound(sid)
                if kind == "bypass":
                    result, token = "bypass", ""
                else:
                    result = "miss"
                    if reply[2]:
                        self.events.cache_invalidation("epoch")
                    if not reply[1]:
                        token = ""
        self.events.cache_result(result)
        fetch = max(limit, self.cache.size) if token else limit
        window = await self.durable.read_window(sid, fetch, before_seq)
        if window is None:
            if uid is None:
                return ReadResult([], result)
            raise SessionNotFound(sid)
        if token:
            await self._fill(sid, keys, token, window.last_seq, window.user_id, window.messages[-self.cache.size :])
        if uid is not None and window.user_id != uid:
            raise SessionNotFound(sid)
        return ReadResult(window.messages[-limit:], result)

    async def _fill(self, sid: str, keys: list[str], token: str, last_seq: int, owner: str | None,
                    messages: list[Message]) -> None:  # fmt: skip
        try:
            stored = await self._populate_script(
                keys=keys, args=[token, last_seq, owner or "", self._ttl_ms, *map(encode_message, messages)]
            )
        except (RedisError, OSError) as exc:
            self._redis_failed("populate", exc)
            return
        self.breaker.success()
        self.events.cache_populate("stored" if stored == "stored" else "discarded")

    # -- writes ------------------------------------------------------------------------------
    async def _append(self, sid: str, uid: str | None, batch: Batch) -> list[Message]:
        try:
            stored = await self.durable._append(sid, uid, batch)
        except (StoreUnavailable, asyncio.CancelledError):
            # In doubt: the commit may have happened with its reply lost.  The cache is not
            # touched now; the entry is dropped before the cache is used again.
            self._mark_dirty(sid)
            raise
        try:
            await self._extend(sid, stored)
        except BaseException:  # cancelled after the commit: the entry may lack these messages
            self._mark_dirty(sid)
            raise
        return stored

    async def _extend(self, sid: str, stored: list[Message]) -> None:
        """Append committed messages to the cached window (1 Redis round trip)."""
        if not await self._usable("add_messages"):
            self._mark_dirty(sid)
            return
        args: list[str | int] = [
            stored[0].seq,
            self._ttl_ms,
            self._sliding,
            self.cache.size,
            *map(encode_message, stored),
        ]
        try:
            outcome = await self._append_script(keys=self._keys(sid), args=args)
        except (RedisError, OSError) as exc:
            self._mark_dirty(sid)
            self._redis_failed("add_messages", exc)
            return
        self.breaker.success()
        if outcome in ("gap", "epoch", "lost"):
            self.events.cache_invalidation(outcome)

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
        try:
            deleted = await self.durable._delete(sid, uid)
        except (StoreUnavailable, asyncio.CancelledError):
            self._mark_dirty(sid)  # in doubt: the delete may have committed
            raise
        if deleted:
            await self._drop([sid], "delete", "delete_session")
        return deleted

    async def _cleanup(self, older_than: float, batch_size: int) -> int:
        total = 0
        while True:
            try:
                batch = await self.durable.cleanup_batch(older_than, batch_size)
            except (StoreUnavailable, asyncio.CancelledError):
                self._invalidate_all()  # in doubt, and we do not know which sessions went
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

    @property
    def dirty_sessions(self) -> int:
        """Sessions whose cache entries will be dropped when Redis answers again."""
        return len(self._dirty)

    async def _close(self) -> None:
        if self.owns_clients:
            try:
                await self.redis.aclose()
            finally:
                await self.durable.close()
