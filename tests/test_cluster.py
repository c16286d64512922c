"""The hybrid store on a real 3-master Valkey cluster: slots, scripts, failures.

The same ``REDIS_URL`` (any node) opens a cluster client; every script's keys share a
slot, so entries land on every master; a script flushed from every node (a restarted or
failed-over master has none) is loaded again without the caller seeing it; a dead master
makes the cluster answer CLUSTERDOWN and the store falls back to PostgreSQL without an
exception escaping, then serves from the cache again once the master is back.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from sessionbench.bench.servers import EmbeddedRedisCluster
from sessionbench.store import open_store
from sessionbench.store.backends.hybrid import HybridStore

pytestmark = pytest.mark.faults


async def _node_clients(cluster: EmbeddedRedisCluster) -> list[aioredis.Redis]:
    return [aioredis.Redis(host="127.0.0.1", port=port, socket_timeout=5) for port in cluster.ports]


@pytest.fixture
async def hybrid(database_url: str, redis_cluster: EmbeddedRedisCluster) -> AsyncIterator[HybridStore]:
    for client in await _node_clients(redis_cluster):
        await client.flushall()
        await client.aclose()
    store = await open_store("hybrid", database_url=database_url, redis_url=redis_cluster.url)
    assert isinstance(store, HybridStore)
    yield store
    await store.close()


async def _sessions(store: HybridStore, n: int) -> list[str]:
    sids = [str(uuid.uuid4()) for _ in range(n)]
    for sid in sids:
        await store.add_messages(sid, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    return sids


async def test_hits_like_one_redis_with_keys_on_every_master(
    hybrid: HybridStore, redis_cluster: EmbeddedRedisCluster
) -> None:
    """200 sessions read 3 times: one miss then two hits each, as on a single server, and every master holds keys."""
    sids = await _sessions(hybrid, 200)
    results = [(await hybrid.read(sid)).cache for _ in range(3) for sid in sids]
    assert results.count("miss") == 200
    assert results.count("hit") == 400
    sizes = []
    for client in await _node_clients(redis_cluster):
        sizes.append(await client.dbsize())
        await client.aclose()
    print(f"\nkeys per master: {sizes}")
    assert all(size > 50 for size in sizes), sizes


async def test_scripts_flushed_from_every_node_are_loaded_again(
    hybrid: HybridStore, redis_cluster: EmbeddedRedisCluster
) -> None:
    """After SCRIPT FLUSH on every master (as after a restart or a failover) reads still hit, with no error."""
    sids = await _sessions(hybrid, 30)
    for sid in sids:
        await hybrid.read(sid)
    for client in await _node_clients(redis_cluster):
        await client.script_flush()
        await client.aclose()
    assert [(await hybrid.read(sid)).cache for sid in sids] == ["hit"] * len(sids)
    assert hybrid.breaker.state == hybrid.breaker.CLOSED


async def test_a_dead_master_degrades_to_postgresql_and_recovers(
    hybrid: HybridStore, redis_cluster: EmbeddedRedisCluster
) -> None:
    """With a master killed, reads and writes still succeed from PostgreSQL (no exception escapes); after the
    restart and a sync round, reads are hits again and hold every write made meanwhile."""
    sids = await _sessions(hybrid, 20)
    for sid in sids:
        await hybrid.read(sid)
    redis_cluster.kill(1)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # until the cluster notices and answers CLUSTERDOWN (about 2 s)
            for sid in sids:
                await hybrid.add_message(sid, "user", "during the outage")
                assert (await hybrid.read(sid)).messages[-1].content == "during the outage"
            await asyncio.sleep(0.2)
    finally:
        redis_cluster.restart(1)
    await asyncio.sleep(hybrid.breaker.reset + 0.1)
    await hybrid.sync.tick()
    for sid in sids:
        await hybrid.read(sid)  # a miss refills from PostgreSQL
    results = [(await hybrid.read(sid)) for sid in sids]
    assert [r.cache for r in results] == ["hit"] * len(sids)
    assert all(r.messages[-1].content == "during the outage" for r in results)


async def _io_counters(clients: list[aioredis.Redis]) -> list[tuple[int, int, int]]:
    """(replies written, requests read, EVALSHA calls) of every master, sampled on its open connection."""
    out = []
    for client in clients:
        info = await client.info("stats", "commandstats")
        evalsha = info.get("cmdstat_evalsha", {"calls": 0})["calls"]
        out.append((info["total_writes_processed"], info["total_reads_processed"], evalsha))
    return out


async def test_a_turn_on_a_cluster_is_one_redis_round_trip_to_the_sessions_master(
    hybrid: HybridStore, redis_cluster: EmbeddedRedisCluster
) -> None:
    """``add_and_read`` on a cached session sends its two scripts to the one master of the session's slot,
    in one round trip, as on a single server; a hit is one round trip too. Counted on the servers: each
    master's own sampling adds one reply (the first sample's) and one request (the second's)."""
    sid, warm = await _sessions(hybrid, 2)
    for target in (sid, warm):
        assert (await hybrid.read(target)).cache == "miss"  # populated: the append extends, the read hits
    await hybrid.add_and_read(warm, [{"role": "user", "content": "warm-up"}], 20)  # connections open
    masters = await _node_clients(redis_cluster)
    for client in masters:
        await client.ping()  # connected before the first sample

    async def per_master(op: Callable[[], Awaitable[object]]) -> list[tuple[int, int, int]]:
        before = await _io_counters(masters)
        await op()
        after = await _io_counters(masters)
        return [(w1 - w0 - 1, r1 - r0 - 1, e1 - e0) for (w0, r0, e0), (w1, r1, e1) in zip(before, after, strict=True)]

    try:
        turn = await per_master(lambda: hybrid.add_and_read(sid, [{"role": "user", "content": "one more"}], 20))
        hit = await per_master(lambda: hybrid.read(sid))
    finally:
        for client in masters:
            await client.aclose()
    assert [counts for counts in turn if counts != (0, 0, 0)] == [(1, 1, 2)], turn  # one reply, request, 2 EVALSHA
    assert [counts for counts in hit if counts != (0, 0, 0)] == [(1, 1, 1)], hit
    window = await hybrid.read(sid)
    assert window.cache == "hit"
    assert [m.content for m in window.messages] == ["hi", "hello", "one more"]
