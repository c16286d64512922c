"""Which cache entries a process may trust, kept in step across processes through PostgreSQL.

The contract's rule 7: an acknowledged write is never missing from a window that *any*
process serves later than a stated bound after the acknowledgement, even when the
writing process is cut off from Redis or dies.  The mechanism, with what it costs:

* **Record on failure.**  A write that PostgreSQL committed but whose cache entry this
  process could not extend or delete (Redis unreachable, slow, the breaker open, or the
  session already marked stale here) is recorded in ``sessionstore_cache_invalidations``
  *before the call returns*: 1 PostgreSQL round trip, on the failure path only.  The
  success path of a hit or an append gains nothing.
* **Poll.**  Every hybrid process runs a sync loop: every ``sync_interval`` seconds one
  PostgreSQL round trip reads the cache epoch and the pending rows.  Sessions named
  there are not trusted by this process until it has deleted their entries in Redis
  (1 Redis round trip for the batch); it then deletes the rows it applied (1 PostgreSQL
  round trip).  A process that starts later reads whatever is still pending.
* **Freshness.**  A process trusts the cache only while the last poll that succeeded
  *started* less than ``stale_after = 4 x sync_interval`` seconds ago.

The bound: a window served more than ``stale_after`` seconds (2 s by default) after an
acknowledgement comes from a process whose last poll started after that write was
recorded, so either it saw the row (and does not trust the entry until it deleted it)
or someone had already applied the row (the entry was deleted after the write, and any
entry now was filled from PostgreSQL after it, under a populate lease the delete did
not cancel).  Add the one read that may be in flight when the poll lands.

The **epoch** is the cache namespace generation, a row in PostgreSQL (there is no
global Redis key: under Redis Cluster it would live in another slot).  Every entry
records the epoch it was filled under; the scripts drop an entry whose epoch differs
from the one they are given.  A process bumps it when it cannot tell which sessions
missed writes (more than ``dirty_max`` stale sessions, or a cleanup batch whose outcome
is unknown); the bump also deletes the rows it makes redundant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from sessionbench.store.backends.hybrid.keys import KeyLayout
from sessionbench.store.errors import StoreUnavailable
from sessionbench.store.events import StoreEvents
from sessionbench.store.tasks import stop_task

log = logging.getLogger("sessionbench.store.hybrid.sync")

_POLL = """
SELECT e.epoch, i.id, i.session_id
FROM sessionstore_cache_epoch e
LEFT JOIN LATERAL (
    SELECT id, session_id FROM sessionstore_cache_invalidations ORDER BY id LIMIT $1
) i ON true
"""
_RECORD = "INSERT INTO sessionstore_cache_invalidations (session_id) SELECT unnest($1::uuid[])"
_FORGET = "DELETE FROM sessionstore_cache_invalidations WHERE id = ANY($1::bigint[])"
# Every row visible now was committed before the bump, so the new epoch covers its write.
_BUMP = """
WITH bumped AS (UPDATE sessionstore_cache_epoch SET epoch = epoch + 1 RETURNING epoch),
     forgotten AS (DELETE FROM sessionstore_cache_invalidations)
SELECT epoch FROM bumped
"""

#: ``(operation, fn(conn))`` -> result, with driver errors mapped to StoreUnavailable.
Runner = Callable[[str, Callable[[Any], Awaitable[Any]]], Awaitable[Any]]
#: Deletes the cache entries of the given sessions in Redis; raises on failure.
Deleter = Callable[[list[str]], Awaitable[None]]


class CacheSync:
    """This process's view of which cache entries it may trust (one per :class:`HybridStore`).

    ``run`` performs PostgreSQL statements (``PostgresStore._run``); ``delete`` drops
    entries in Redis; ``redis_allowed`` says whether the breaker lets Redis be tried.
    """

    def __init__(
        self,
        run: Runner,
        delete: Deleter,
        redis_allowed: Callable[[], bool],
        events: StoreEvents,
        *,
        layout: KeyLayout,
        interval: float,
        dirty_max: int,
    ) -> None:
        self._run = run
        self._delete = delete
        self._redis_allowed = redis_allowed
        self.events = events
        self.layout = layout
        self.interval = interval
        self.stale_after = 4 * interval
        self.dirty_max = max(1, dirty_max)
        self.epoch = "0"
        self.synced_at = float("-inf")  # monotonic start of the last successful poll
        # Sessions whose entry may have missed a write, with the number of the mark that put
        # them there (a mark made while their deletion is in flight must survive it).
        self.dirty: dict[str, int] = {}
        self._rows: dict[int, str] = {}  # pending log rows this process has seen: id -> session
        self._marks = 0
        self.bump_pending = False
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Task[None] | None = None
        self._stopping = False  # stop() was called: the loop ends even if a cancellation is lost
        self.running = False  # the first poll has been made (whether or not it succeeded)
        self._lock = asyncio.Lock()

    # -- the hot path --------------------------------------------------------------------
    def trusts(self, sid: str) -> bool:
        """May this process serve (or extend) ``sid``'s entry now?  No I/O."""
        return not self.bump_pending and sid not in self.dirty and time.monotonic() - self.synced_at <= self.stale_after

    async def start(self) -> None:
        """First use: one poll (so the first reads may hit), then the loop in the background.

        Calls that arrive while the first poll is in flight wait for it rather than going
        around the cache; the poll runs in its own task, so cancelling one caller does not
        cancel it for the others.
        """
        if self._first is None:
            self._first = asyncio.get_running_loop().create_task(self._first_round(), name="sessionstore-cache-sync")
        await asyncio.shield(self._first)

    async def _first_round(self) -> None:
        try:
            await self.tick()
        except Exception:  # the loop keeps trying; until a poll succeeds the cache is not trusted
            log.exception("cache sync failed")
        self.running = True
        if not self._stopping:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="sessionstore-cache-sync")

    async def stop(self) -> None:
        """End the background polling (a cancellation redis-py swallows does not keep it alive)."""
        self._stopping = True
        await stop_task(self._first)
        await stop_task(self._task)
        self._task = None

    # -- marks ---------------------------------------------------------------------------
    def mark(self, sids: Iterable[str]) -> None:
        """This process stops trusting ``sids`` until it has deleted their entries (no I/O)."""
        for sid in sids:
            self._marks += 1
            self.dirty[sid] = self._marks
        if len(self.dirty) > self.dirty_max:
            self.invalidate_all()

    def invalidate_all(self) -> None:
        """Stop trusting every entry until the epoch has been bumped in PostgreSQL."""
        self.bump_pending = True
        self.dirty.clear()

    async def record(self, sids: list[str], operation: str) -> None:
        """Durably note that ``sids``' entries may miss committed writes (1 PostgreSQL round trip).

        Called before a write that could not update the cache is acknowledged.  Raises
        StoreUnavailable (in doubt: the write itself committed) if PostgreSQL fails.
        """
        self.mark(sids)
        ids = [uuid.UUID(s) for s in sids]
        try:
            await self._run(operation, lambda c: c.execute(_RECORD, ids))
        except StoreUnavailable as exc:
            raise StoreUnavailable(
                f"the write committed but its cache invalidation could not be recorded: {exc}", in_doubt=True
            ) from exc

    # -- the loop ------------------------------------------------------------------------
    async def _loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.interval)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep syncing whatever happened; a fault surfaces as staleness
                log.exception("cache sync failed")

    async def tick(self) -> None:
        """One round: poll PostgreSQL, bump the epoch if asked to, delete stale entries."""
        async with self._lock:
            await self._poll()
            if self.bump_pending:
                await self._bump()
            if self.dirty and self._redis_allowed():
                await self._apply()

    async def _poll(self) -> None:
        started = time.monotonic()
        try:
            rows = await self._run("cache_sync", lambda c: c.fetch(_POLL, self.dirty_max + 1))
        except StoreUnavailable:
            return
        epoch = str(rows[0]["epoch"]) if rows else self.epoch
        if epoch != self.epoch:
            self.epoch = epoch
            self.events.cache_invalidation("epoch")
        pending = {r["id"]: str(r["session_id"]) for r in rows if r["id"] is not None}
        if len(pending) > self.dirty_max:
            self.invalidate_all()  # too many to track: a new epoch covers them all
        else:
            self.mark(sid for row_id, sid in pending.items() if row_id not in self._rows)
        self._rows = pending
        self.synced_at = started

    async def _bump(self) -> None:
        try:
            epoch = await self._run("cache_sync", lambda c: c.fetchval(_BUMP))
        except StoreUnavailable:
            return
        self.epoch = str(epoch)
        self._rows.clear()
        self.bump_pending = False
        self.events.cache_invalidation("epoch_bump")

    async def _apply(self) -> None:
        dirty = dict(self.dirty)
        try:
            await self._delete(list(dirty))
        except Exception:  # noqa: BLE001 - Redis failed: the breaker and error count were told by delete
            return
        for sid, mark in dirty.items():
            if self.dirty.get(sid) == mark:  # not marked again while the deletes were in flight
                del self.dirty[sid]
            self.events.cache_invalidation("outage")
        applied = [row_id for row_id, sid in self._rows.items() if sid in dirty]
        if applied:
            with contextlib.suppress(StoreUnavailable):  # the rows stay; someone deletes them again
                await self._run("cache_sync", lambda c: c.execute(_FORGET, applied))
            for row_id in applied:
                self._rows.pop(row_id, None)
