"""Concurrency stress: 64 writers and readers on a handful of sessions, one hybrid store.

During the run every read must be a contiguous window holding every write that was
acknowledged (to any client) before the read started.  Reads are *not* required to be
monotonic for writes still in flight: a read that misses while another read holds the
populate lease goes to PostgreSQL and may see a committed, not yet acknowledged
append, while the lease holder's older snapshot is cached until that append's own
script extends it (the same window memcache leases leave between the database write
and the delete).  At the end
PostgreSQL holds every acknowledged message once, in each writer's order, and every
cache entry (read straight from Redis and decoded) is exactly PostgreSQL's newest
messages: a contiguous suffix ending at ``last_seq``.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid

import asyncpg
import redis.asyncio as aioredis

from sessionbench.store.models import Message, NewMessage
from sessionbench.store.settings import CacheSettings
from tests.hybrid_support import CacheEntry, RecordingEvents, open_hybrid, read_cache_entries

SESSIONS = 4
TASKS = 64
OPS_PER_TASK = 30
CACHE_SIZE = 20


async def _pg_messages(database_url: str, sid: str) -> tuple[int, list[Message]]:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        await conn.set_type_codec("jsonb", encoder=str, decoder=json.loads, schema="pg_catalog")
        last = await conn.fetchval("SELECT last_seq FROM chat_sessions WHERE session_id = $1::uuid", sid)
        rows = await conn.fetch(
            "SELECT seq, role, content, created_at, metadata FROM chat_messages "
            "WHERE session_id = $1::uuid ORDER BY seq",
            sid,
        )
    finally:
        await conn.close()
    return int(last), [Message(sid, r["seq"], r["role"], r["content"], r["created_at"], r["metadata"]) for r in rows]


def _assert_window(got: list[Message], limit: int) -> None:
    seqs = [m.seq for m in got]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else True, f"not contiguous: {seqs}"
    if seqs:
        assert len(seqs) == min(limit, seqs[-1]), f"short window: {seqs} for limit {limit}"


async def _check_cache(admin: aioredis.Redis, database_url: str, sids: list[str], epoch: str) -> int:
    """Every cache entry equals PostgreSQL's newest messages; returns how many entries exist."""
    entries = await read_cache_entries(admin, sids)
    present = 0
    for sid, entry in zip(sids, entries, strict=True):
        last, history = await _pg_messages(database_url, sid)
        assert [m.seq for m in history] == list(range(1, last + 1))
        if entry is None:
            continue
        present += 1
        _assert_entry(entry, epoch, last, history)
    return present


def _assert_entry(entry: CacheEntry, epoch: str, last: int, history: list[Message]) -> None:
    assert entry.epoch == epoch
    assert entry.last == last, f"cache says last {entry.last}, PostgreSQL {last}"
    assert len(entry.messages) == min(last, CACHE_SIZE)
    assert entry.messages == history[len(history) - len(entry.messages) :]


async def test_64_concurrent_clients_leave_cache_equal_to_postgres(database_url: str, redis_url: str) -> None:
    """64 concurrent clients: reads are whole and hold acknowledged writes; cache entries end equal to PostgreSQL."""
    events = RecordingEvents()
    sids = [str(uuid.uuid4()) for _ in range(SESSIONS)]
    acked: dict[str, list[tuple[int, str]]] = {sid: [] for sid in sids}  # (seq, content) acknowledged
    acked_max = dict.fromkeys(sids, 0)  # newest acknowledged seq per session

    async with open_hybrid(
        database_url, redis_url, cache=CacheSettings(size=CACHE_SIZE), events=events, pool_max=20
    ) as store:
        for sid in sids:
            await store.create_session(sid)

        async def client(t: int) -> None:
            rng = random.Random(t)
            for i in range(OPS_PER_TASK):
                sid = rng.choice(sids)
                if t % 2 == 0 and rng.random() < 0.7:
                    if rng.random() < 0.5:
                        stored = [await store.add_message(sid, "user", f"t{t}-{i}-0")]
                    else:
                        turn = [NewMessage("user", f"t{t}-{i}-0"), NewMessage("assistant", f"t{t}-{i}-1")]
                        stored = await store.add_messages(sid, turn)
                    acked[sid].extend((m.seq, m.content) for m in stored)
                    acked_max[sid] = max(acked_max[sid], stored[-1].seq)
                limit = rng.choice((1, 5, 10, 20, 40))
                floor = acked_max[sid]
                got = await store.get_messages(sid, limit=limit)
                _assert_window(got, limit)
                newest = got[-1].seq if got else 0
                assert newest >= floor, f"client {t} read up to seq {newest}; seq {floor} was acknowledged before"

        async with asyncio.timeout(120), asyncio.TaskGroup() as clients:  # a failure cancels the others
            for t in range(TASKS):
                clients.create_task(client(t))

        admin = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
        try:
            await _check_cache(admin, database_url, sids, store.sync.epoch)  # as the workload left it
            # Entries are served and populated only while this process's last invalidation poll is
            # at most 4 x cache.sync_interval old (rule 7); on a loaded machine the background poll
            # can be late, so poll now rather than hope.
            await store.sync.tick()
            for sid in sids:
                await store.get_messages(sid, limit=CACHE_SIZE)  # a quiet read caches every session
            assert await _check_cache(admin, database_url, sids, store.sync.epoch) == SESSIONS
        finally:
            await admin.aclose()

    for sid in sids:
        _, history = await _pg_messages(database_url, sid)
        assert sorted(acked[sid]) == [(m.seq, m.content) for m in history], "acknowledged writes != PostgreSQL"
        _assert_writer_order(history)
    assert events.results.count("hit") > 0, "the run never used the cache"


def _assert_writer_order(history: list[Message]) -> None:
    """Within a session, each writer's messages appear in the order it wrote them."""
    by_writer: dict[str, list[tuple[int, int]]] = {}
    for m in history:
        t, i, k = m.content.split("-")
        by_writer.setdefault(t, []).append((int(i), int(k)))
    for writer, order in by_writer.items():
        assert order == sorted(order), f"writer {writer} out of order"
