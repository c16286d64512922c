"""The one settings object, read from the environment at entry points only.

Every timeout and bound is a setting with a sane default.  Groups:

* :class:`~sessionbench.store.validation.Limits` — input limits (content bytes, metadata bytes, ``limit`` range).
* :class:`CacheSettings` — the hybrid cache window, TTL and lease.
* :class:`RedisSettings` — Redis client timeouts, pool and circuit breaker.
* :class:`PostgresSettings` — asyncpg pool size and timeouts.
* :class:`MemorySettings` — bounds of the in-process backend.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import parse_qsl

from sessionbench.store.errors import ValidationError
from sessionbench.store.validation import Limits

BACKENDS: tuple[str, ...] = ("memory", "postgres", "hybrid")


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """The hybrid cache: ``size`` messages per session, ``ttl`` seconds, sliding or fixed.

    ``lease_ttl``: how long a read that missed holds its populate lease; ``dirty_max``:
    stale sessions one process tracks before it invalidates the whole cache (an epoch
    bump); ``sync_interval``: see :mod:`sessionbench.store.backends.hybrid.sync`.
    """

    size: int = 50
    ttl: float = 24 * 3600.0
    sliding: bool = True
    lease_ttl: float = 5.0
    dirty_max: int = 10_000
    key_prefix: str = "sb"
    #: Every process polls PostgreSQL for invalidations this often and trusts the cache only
    #: while its last poll started less than 4 x this ago: the cross-process staleness bound.
    sync_interval: float = 0.5


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """redis-py client settings: no retries, short timeouts, a bounded pool, a breaker."""

    socket_timeout: float = 0.25
    connect_timeout: float = 0.25
    max_connections: int = 64
    breaker_failures: int = 3
    breaker_reset: float = 1.0
    #: ``auto`` (ask the server), ``on`` (Redis Cluster) or ``off`` (a single server).
    cluster: str = "auto"


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    """asyncpg pool settings."""

    min_size: int = 2
    max_size: int = 20
    acquire_timeout: float = 2.0
    command_timeout: float = 10.0
    connect_timeout: float = 5.0
    #: how long close() waits for borrowed connections before terminating them
    close_timeout: float = 10.0
    #: asyncpg's prepared-statement cache per connection; 0 behind PgBouncer in transaction
    #: mode (its servers are shared between clients, so named statements go missing).
    statement_cache_size: int = 100


@dataclass(frozen=True, slots=True)
class MemorySettings:
    """Bounds of the in-process backend: it never grows without limit."""

    max_sessions: int = 100_000
    idle_ttl: float = 24 * 3600.0
    max_messages: int = 1000


@dataclass(frozen=True, slots=True)
class Settings:
    backend: str = "hybrid"
    database_url: str | None = None
    redis_url: str | None = None
    limits: Limits = field(default_factory=Limits)
    cache: CacheSettings = field(default_factory=CacheSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    postgres: PostgresSettings = field(default_factory=PostgresSettings)
    memory: MemorySettings = field(default_factory=MemorySettings)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValidationError("backend", f"must be one of {', '.join(BACKENDS)}, not {self.backend!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``SESSIONSTORE_*`` variables plus ``DATABASE_URL`` and ``REDIS_URL``.

        ``SESSIONSTORE_BACKEND``; ``SESSIONSTORE_CACHE_SIZE``, ``_CACHE_TTL``,
        ``_CACHE_SLIDING``, ``_CACHE_SYNC_INTERVAL``; ``SESSIONSTORE_REDIS_TIMEOUT``,
        ``_REDIS_CLUSTER``; ``SESSIONSTORE_PG_POOL_MAX``, ``_PG_ACQUIRE_TIMEOUT``,
        ``_PG_STATEMENT_CACHE_SIZE``; ``SESSIONSTORE_CONTENT_BYTES``;
        ``SESSIONSTORE_MEMORY_MAX_SESSIONS``.
        """
        env = os.environ if environ is None else environ
        overrides: dict[str, str] = {}
        for key, name in _ENV_KEYS.items():
            if env.get(key):
                overrides[name] = env[key]
        base = cls(
            backend=env.get("SESSIONSTORE_BACKEND", "hybrid"),
            database_url=env.get("DATABASE_URL") or None,
            redis_url=env.get("REDIS_URL") or None,
        )
        return base.with_options(overrides)

    def with_options(self, options: Mapping[str, Any]) -> Settings:
        """A copy with dotted options applied, e.g. ``{"cache.size": "20", "cache.ttl": "3600"}``.

        Short aliases: ``cache_size``, ``ttl``, ``sliding``.
        """
        groups: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for raw_key, value in options.items():
            key = _ALIASES.get(raw_key, raw_key)
            group, _, name = key.partition(".")
            if not name:
                if group not in {"backend", "database_url", "redis_url"}:
                    raise ValidationError(raw_key, "is not a setting")
                top[group] = value
                continue
            current = getattr(self, group, None)
            if current is None or group in {"backend", "database_url", "redis_url"}:
                raise ValidationError(raw_key, "is not a setting")
            kinds = {f.name: f.type for f in fields(current)}
            if name not in kinds:
                raise ValidationError(raw_key, "is not a setting")
            groups.setdefault(group, {})[name] = _coerce(raw_key, value, getattr(current, name))
        updated = {g: replace(getattr(self, g), **vals) for g, vals in groups.items()}
        return replace(self, **top, **updated)

    @classmethod
    def from_spec(cls, spec: str, base: Settings | None = None) -> Settings:
        """``"hybrid"``, ``"postgres"``, ``"memory"``, optionally with ``?cache_size=20&ttl=3600``."""
        backend, _, query = spec.partition("?")
        start = base or cls()
        settings = replace(start, backend=backend.strip() or start.backend)
        settings.__post_init__()
        return settings.with_options(dict(parse_qsl(query, keep_blank_values=True)))


_ALIASES = {"cache_size": "cache.size", "ttl": "cache.ttl", "sliding": "cache.sliding"}
_ENV_KEYS = {
    "SESSIONSTORE_CACHE_SIZE": "cache.size",
    "SESSIONSTORE_CACHE_TTL": "cache.ttl",
    "SESSIONSTORE_CACHE_SLIDING": "cache.sliding",
    "SESSIONSTORE_CACHE_SYNC_INTERVAL": "cache.sync_interval",
    "SESSIONSTORE_REDIS_TIMEOUT": "redis.socket_timeout",
    "SESSIONSTORE_PG_POOL_MAX": "postgres.max_size",
    "SESSIONSTORE_PG_ACQUIRE_TIMEOUT": "postgres.acquire_timeout",
    "SESSIONSTORE_PG_STATEMENT_CACHE_SIZE": "postgres.statement_cache_size",
    "SESSIONSTORE_REDIS_CLUSTER": "redis.cluster",
    "SESSIONSTORE_CONTENT_BYTES": "limits.content_bytes",
    "SESSIONSTORE_MEMORY_MAX_SESSIONS": "memory.max_sessions",
}


def _coerce(name: str, value: Any, current: Any) -> Any:
    try:
        if isinstance(current, bool):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                raise ValueError(value)
            return text in {"1", "true", "yes", "on"}
        if isinstance(current, int):
            result_int = int(value)
            if result_int < 0:
                raise ValueError(value)
            return result_int
        if isinstance(current, float):
            result_float = float(value)
            if not result_float >= 0:
                raise ValueError(value)
            return result_float
        return str(value)
    except (TypeError, ValueError):
        raise ValidationError(name, f"has an invalid value {value!r}") from None
