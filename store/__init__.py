"""sessionstore: a chat-session store with memory, PostgreSQL and Redis + PostgreSQL backends.

>>> store = await open_store("hybrid", database_url=..., redis_url=...)   # doctest: +SKIP
>>> await store.add_message(session_id, "user", "Hi, my name is Alice")     # doctest: +SKIP
>>> await store.get_messages(session_id, limit=20)                           # doctest: +SKIP
"""

from __future__ import annotations

from store.errors import SessionNotFound, StoreClosed, StoreError, StoreUnavailable, ValidationError
from store.events import NullEvents, StoreEvents, last_cache_result
from store.factory import open_store
from store.models import ROLES, Message, NewMessage, ReadResult, Session
from store.protocol import SessionStore
from store.settings import CacheSettings, MemorySettings, PostgresSettings, RedisSettings, Settings
from store.validation import Limits

__all__ = [
    "ROLES",
    "CacheSettings",
    "Limits",
    "MemorySettings",
    "Message",
    "NewMessage",
    "NullEvents",
    "PostgresSettings",
    "ReadResult",
    "RedisSettings",
    "Session",
    "SessionNotFound",
    "SessionStore",
    "Settings",
    "StoreClosed",
    "StoreError",
    "StoreEvents",
    "StoreUnavailable",
    "ValidationError",
    "last_cache_result",
    "open_store",
]
