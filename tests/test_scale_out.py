"""Several processes, one truth (the hybrid contract's rule 7), on the real servers.

Two hybrid stores with their own clients stand for two service processes sharing
PostgreSQL and Redis.  Writer A cannot reach Redis at all (its client points at a
port nothing listens on): its appends commit and are acknowledged but cannot touch the
cache, so A records them in PostgreSQL; reader B, healthy, serves the cached windows.
The property: no window B serves later than ``4 x sync_interval`` after A's
acknowledgement misses A's write, and this holds when A is closed (dies) right after
writing.  The sync interval is 0.1 s here, so the bound is 0.4 s.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import asyncpg
import pytest

from sessionbench.store import StoreUnavailable
from sessionbench.store.backends.hybrid import HybridStore
from sessionbench.store.settings import CacheSettings, RedisSettings
from tests.hybrid_support import open_hybrid

INTERVAL = 0.1
BOUND = 4 * INTERVAL
#: One read may be in flight when B's poll lands, and B's loop may start late on a busy machine.
SLACK = 0.25
SESSIONS = 20


def _dead_redis_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"  # closed again: connections are refused


async def _warm(store: HybridStore, sids: list[str]) -> None:
    for sid in sids:
        await store.add_messages(sid, [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}])
        await store.get_messages(sid)  # miss: populates
        assert (await store.read(sid)).cache == "hit"


async def _watch(reader: HybridStore, sids: list[str], acked: dict[str, float], seconds: float) -> list[float]:
    """Read every session until ``seconds`` pass; return how long after its ack each stale window was served."""
    stale: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for sid in sids:
            result = await reader.read(sid)
            if result.messages[-1].content != "from A":
                stale.append(time.monotonic() - acked[sid])
        await asyncio.sleep(0.005)
    return stale


async def test_writes_of_a_process_cut_off_from_redis_reach_every_window_within_the_bound(
    database_url: str, redis_url: str
) -> None:
    """A's acknowledged appends (A cut off from Redis, then closed) are in B's windows at most 0.4 s (+ slack) later."""
    cache = CacheSettings(size=20, sync_interval=INTERVAL)
    fast = RedisSettings(socket_timeout=0.1, connect_timeout=0.1)
    sids = [str(uuid.uuid4()) for _ in range(SESSIONS)]
    async with open_hybrid(database_url, redis_url, cache=cache) as reader:
        await _warm(reader, sids)
        acked: dict[str, float] = {}
        async with open_hybrid(database_url, _dead_redis_url(), cache=cache, redis_settings=fast) as writer:
            for sid in sids:
                await writer.add_message(sid, "user", "from A")
                acked[sid] = time.monotonic()
        # The writer is gone (closed: its sync loop stopped); only the reader is left to apply its records.
        stale = await _watch(reader, sids, acked, 4 * BOUND)
        late = [round(s, 3) for s in stale if s > BOUND + SLACK]
        print(f"\nstale windows served: {len(stale)}, latest {max(stale, default=0):.3f} s after the ack")
        assert not late, f"stale windows served later than the bound: {late}"
        for sid in sids:
            assert [m.content for m in (await reader.read(sid)).messages] == ["hello", "hi", "from A"]
        conn = await asyncpg.connect(database_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM sessionstore_cache_invalidations") == 0
        finally:
            await conn.close()


async def test_a_failed_write_does_not_stop_the_cache_for_other_sessions(database_url: str, redis_url: str) -> None:
    """A write that PostgreSQL refuses marks nothing, and one whose cache update fails marks only its own session."""
    async with open_hybrid(database_url, redis_url, cache=CacheSettings(size=20)) as store:
        sids = [str(uuid.uuid4()) for _ in range(3)]
        await _warm(store, sids)
        conn = await asyncpg.connect(database_url)
        try:  # the server refuses appends to this session: nothing is in doubt
            await conn.execute(
                "CREATE OR REPLACE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'refused'; END $$"
            )
            await conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON chat_messages FOR EACH ROW "
                f"WHEN (NEW.session_id = '{sids[0]}') EXECUTE FUNCTION refuse()"
            )
            for _ in range(5):
                with pytest.raises(StoreUnavailable) as caught:
                    await store.add_message(sids[0], "user", "refused")
                assert caught.value.in_doubt is False
        finally:
            await conn.execute("DROP TRIGGER IF EXISTS refuse ON chat_messages")
            await conn.close()
        assert store.dirty_sessions == 0
        for sid in sids:
            assert (await store.read(sid)).cache == "hit"
