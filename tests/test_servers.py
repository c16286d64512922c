"""The servers under every other test are real PostgreSQL and Redis, and can be faulted."""

from __future__ import annotations

import asyncpg
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from bench.servers import EmbeddedPostgres, EmbeddedRedis, ServerError, Servers, docker_engine, resolve_mode


async def test_postgres_is_real(servers: Servers) -> None:
    """`select version()` answers from a real PostgreSQL server."""
    conn = await asyncpg.connect(servers.database_url)
    try:
        version = await conn.fetchval("select version()")
    finally:
        await conn.close()
    print(f"\n{version}")
    assert version.startswith("PostgreSQL ")


async def test_redis_is_real(servers: Servers) -> None:
    """`INFO server` answers from a real Redis-protocol server."""
    client = aioredis.Redis.from_url(servers.redis_url)
    try:
        info = await client.info("server")
    finally:
        await client.aclose()
    version = info.get("valkey_version") or info.get("redis_version")
    print(f"\nredis_version={info.get('redis_version')} valkey_version={info.get('valkey_version')}")
    assert version


async def test_embedded_servers_bind_loopback(servers: Servers) -> None:
    """Embedded servers listen on 127.0.0.1 only."""
    if servers.mode != "embedded":
        pytest.skip(f"mode is {servers.mode}")
    assert "127.0.0.1" in servers.database_url
    assert "127.0.0.1" in servers.redis_url
    client = aioredis.Redis.from_url(servers.redis_url)
    try:
        bind = await client.config_get("bind")
    finally:
        await client.aclose()
    assert bind["bind"].split() == ["127.0.0.1"]


async def test_redis_kill_and_restart_on_same_port(embedded_redis: EmbeddedRedis) -> None:
    """After kill -9 the port refuses connections; restart brings Redis back on the same port, empty."""
    client = aioredis.Redis.from_url(embedded_redis.url, socket_timeout=1, retry=None)
    port = embedded_redis.port
    try:
        await client.set("k", "v")
        embedded_redis.kill()
        with pytest.raises(RedisConnectionError):
            await client.get("k")
        embedded_redis.restart()
        assert embedded_redis.port == port
        assert await client.get("k") is None
    finally:
        await client.aclose()


async def test_postgres_kill_and_restart_keeps_committed_data(embedded_postgres: EmbeddedPostgres) -> None:
    """SIGKILL of the postmaster group, then restart on the same port: committed rows survive."""
    url = embedded_postgres.url
    conn = await asyncpg.connect(url)
    await conn.execute("create table if not exists smoke(x int)")
    await conn.execute("insert into smoke values (42)")
    await conn.close()
    embedded_postgres.kill()
    with pytest.raises(OSError, match=r"[Cc]onnect"):
        await asyncpg.connect(url, timeout=2)
    embedded_postgres.restart()
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("select count(*) from smoke where x = 42") >= 1
        await conn.execute("drop table smoke")
    finally:
        await conn.close()


def test_auto_mode_prefers_urls_from_environment() -> None:
    """`auto` becomes `external` only when both URLs are set, `embedded` otherwise."""
    assert resolve_mode("auto", {"DATABASE_URL": "postgresql://x", "REDIS_URL": "redis://y"}) == "external"
    assert resolve_mode("auto", {"DATABASE_URL": "postgresql://x"}) == "embedded"
    assert resolve_mode("auto", {}) == "embedded"
    with pytest.raises(ServerError, match="unknown server mode"):
        resolve_mode("cloud", {})


def test_docker_probe_answers_quickly_with_a_reason() -> None:
    """The Docker probe asks the engine and returns a one-line reason either way."""
    ok, why = docker_engine()
    print(f"\ndocker: {ok} ({why})")
    assert isinstance(ok, bool)
    assert why
    assert "\n" not in why
