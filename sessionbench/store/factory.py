"""``open_store``: build a store from a :class:`Settings` or a spec, owning its clients.

Library code below this receives clients; this entry-point helper creates the asyncpg
pool and the Redis client, applies migrations, and hands them to a store that owns
them (``owns_pool`` / ``owns_clients``), so ``close()`` — or the end of
``async with`` — closes them.  The result is the backend itself, not a proxy.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sessionbench.store.errors import ValidationError
from sessionbench.store.events import NULL_EVENTS, StoreEvents
from sessionbench.store.protocol import SessionStore
from sessionbench.store.settings import Settings


async def open_store(
    settings: Settings | str = "hybrid",
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
    events: StoreEvents = NULL_EVENTS,
    **options: Any,
) -> SessionStore:
    """Open a store.  ``settings`` is a :class:`Settings` or a spec such as
    ``"hybrid?cache_size=20&ttl=3600"``; keyword options (``cache_size=20``,
    ``**{"redis.socket_timeout": 0.1}``) override it.  The result owns its pools::

        async with await open_store("hybrid", database_url=..., redis_url=...) as store:
            await store.add_message(session_id, "user", "Hi")
    """
    cfg = Settings.from_spec(settings) if isinstance(settings, str) else settings
    if options:
        cfg = cfg.with_options(options)
    if database_url is not None or redis_url is not None:
        cfg = replace(cfg, database_url=database_url or cfg.database_url, redis_url=redis_url or cfg.redis_url)

    if cfg.backend == "memory":
        from sessionbench.store.backends.memory import MemoryStore

        return MemoryStore(settings=cfg.memory, limits=cfg.limits)

    from sessionbench.store.backends.postgres import PostgresStore, close_pool, create_pool, migrate

    if not cfg.database_url:
        raise ValidationError("database_url", f"the {cfg.backend} backend needs DATABASE_URL")
    if cfg.backend == "hybrid" and not cfg.redis_url:
        raise ValidationError("redis_url", "the hybrid backend needs REDIS_URL")
    pg = cfg.postgres
    pool = await create_pool(
        cfg.database_url,
        min_size=min(pg.min_size, pg.max_size),  # a pool of max 1 must not ask for 2
        max_size=pg.max_size,
        command_timeout=pg.command_timeout,
        connect_timeout=pg.connect_timeout,
        statement_cache_size=pg.statement_cache_size,
    )
    try:
        await migrate(pool)
    except BaseException:
        await close_pool(pool, pg.close_timeout)
        raise
    durable = PostgresStore(pool, limits=cfg.limits, acquire_timeout=pg.acquire_timeout,
                           close_timeout=pg.close_timeout, events=events, owns_pool=True)  # fmt: skip
    if cfg.backend == "postgres":
        return durable
    from sessionbench.store.backends.hybrid import HybridStore, open_redis

    try:
        redis = await open_redis(cfg.redis_url, cfg.redis)  # type: ignore[arg-type]
    except BaseException:
        await durable.close()
        raise
    hybrid = HybridStore(redis, durable, cache=cfg.cache, breaker=cfg.redis, events=events, owns_clients=True)
    try:
        await hybrid.load_scripts()
        await hybrid.sync.start()  # the first invalidation poll (1 PG round trip), so the first reads may hit
    except BaseException:
        await hybrid.close()
        raise
    return hybrid
