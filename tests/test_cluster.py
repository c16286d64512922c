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
from collections.abc import AsyncIterator

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
