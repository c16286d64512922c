"""The Redis client the hybrid store is given, and how its errors are classified.

One ``REDIS_URL`` works for a single server and for any node of a Redis Cluster:
``RedisSettings.cluster`` is ``auto`` (ask the node: ``INFO cluster`` says
``cluster_enabled:1``), ``on`` or ``off``.  On a cluster the client is redis-py's
:class:`~redis.asyncio.cluster.RedisCluster`: it follows ``MOVED``/``ASK`` redirects
itself, routes each script call to the master owning its keys' slot (every hybrid
script touches one session's hash-tagged keys, so one slot) and reloads a script on
``NOSCRIPT`` after a failover or a resharding.  ``rediss://`` URLs use TLS.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from sessionbench.store.errors import ValidationError
from sessionbench.store.settings import RedisSettings

log = logging.getLogger("sessionbench.store.hybrid")

#: What the hybrid store accepts: a single server's client or a cluster client.
RedisClient = aioredis.Redis | RedisCluster
CLUSTER_MODES = ("auto", "on", "off")


def create_redis(url: str, settings: RedisSettings, *, cluster: bool = False) -> Any:
    """A client with explicit timeouts and no retries (faults surface fast).

    ``cluster`` picks :class:`RedisCluster` (call :func:`open_redis` to decide it from
    the server).  The caller owns the client and closes it (``aclose()``).
    """
    common: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "retry": Retry(NoBackoff(), 0),
        "max_connections": settings.max_connections,
        "health_check_interval": 0,
        "decode_responses": True,
    }
    if cluster:
        return RedisCluster.from_url(url, **common)
    return aioredis.Redis.from_url(url, retry_on_timeout=False, **common)


#: ``INFO cluster`` attempts before ``auto`` gives up on asking (each within the Redis timeouts):
#: one slow answer from a busy server must not make a cluster look like a single server.
DETECT_ATTEMPTS = 3


async def is_cluster(url: str, settings: RedisSettings) -> bool | None:
    """Whether ``url`` is a Redis Cluster node (``INFO cluster``); None when it cannot be asked
    in :data:`DETECT_ATTEMPTS` tries."""
    probe = create_redis(url, settings)
    try:
        for _ in range(DETECT_ATTEMPTS):
            try:
                info = await probe.info("cluster")
            except Exception:  # noqa: BLE001, S112 - unreachable, refusing or slow: ask again, then the caller decides
                continue
            return int(info.get("cluster_enabled", 0)) == 1
        return None
    finally:
        await probe.aclose()


async def open_redis(url: str, settings: RedisSettings) -> Any:
    """The client for ``url``: a cluster client when ``settings.cluster`` says so or the node does.

    With ``auto`` and a server that does not answer yet, a single-server client is used
    (the store then degrades to PostgreSQL until it answers); set ``cluster=on`` to be sure.
    A cluster client learns the slot map now, so the first concurrent calls do not race it.
    """
    if settings.cluster not in CLUSTER_MODES:
        raise ValidationError("redis.cluster", f"must be one of {', '.join(CLUSTER_MODES)}")
    cluster = settings.cluster == "on"
    if settings.cluster == "auto":
        found = await is_cluster(url, settings)
        if found is None:
            log.warning("Redis at the configured URL did not answer; assuming a single server (set redis.cluster=on)")
        cluster = bool(found)
    client = create_redis(url, settings, cluster=cluster)
    if cluster:
        try:
            await client.initialize()
        except Exception as exc:  # noqa: BLE001 - the store works without Redis; the breaker takes over
            log.warning("Redis Cluster slot map not loaded yet: %s", exc)
    return client


def redis_kind(exc: BaseException) -> str:
    """The bounded ``kind`` label of a Redis error: timeout, connection, cluster or command."""
    name = type(exc).__name__.lower()
    if "timeout" in name:
        return "timeout"
    if "connection" in name or isinstance(exc, OSError):
        return "connection"
    if "cluster" in name or "slot" in name:
        return "cluster"
    return "command"
