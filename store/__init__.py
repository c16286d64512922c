"""sessionstore: a chat-session store with memory, PostgreSQL and Redis + PostgreSQL backends.

>>> store = await open_store("hybrid", database_url=..., redis_url=...)   # doctest: +SKIP
>>> await store.add_message(session_id, "user", "Hi, my name is Alice")     # doctest: +SKIP
>>> await store.get_messages(session_id, limit=20)                           # doctest: +SKIP
"""

from __future__ import annotations

from store.base import (
    ROLES,
    Limits,
    Message,
    NewMessage,
    NullEvents,
    Session,
    SessionNotFound,
    SessionStore,
    StoreError,
    StoreEvents,
    StoreUnavailable,
    ValidationError,
    last_cache_result,
)
from store.factory import open_store
from store.settings import CacheSettings, MemorySettings, PostgresSettings, RedisSettings, Settings

__all__ = [
    "ROLES",
    "CacheSettings",
    "Limits",
    "MemorySettings",
    "Message",
    "NewMessage",
    "NullEvents",
    "PostgresSettings",
    "RedisSettings",
    "Session",
    "SessionNotFound",
    "SessionStore",
    "Settings",
    "StoreError",
    "StoreEvents",
    "StoreUnavailable",
    "ValidationError",
    "last_cache_result",
    "open_store",
]
