"""The Redis client the hybrid store is given, and how its errors are classified."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from store.settings import RedisSettings


def create_redis(url: str, settings: RedisSettings) -> aioredis.Redis:
    """A pooled asyncio client with explicit timeouts and no retries (faults surface fast).

    ``rediss://`` URLs use TLS.  The caller owns the client and closes it.
    """
    return aioredis.Redis.from_url(
        url,
        socket_timeout=settings.socket_timeout,
        socket_connect_timeout=settings.connect_timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        max_connections=settings.max_connections,
        health_check_interval=0,
        decode_responses=True,
    )


def redis_kind(exc: BaseException) -> str:
    name = type(exc).__name__.lower()
    if "timeout" in name:
        return "timeout"
    if "connection" in name or isinstance(exc, OSError):
        return "connection"
    return "command"
