"""sessionstore: a chat-session store with memory, PostgreSQL and Redis + PostgreSQL backends.

>>> store = await open_store("hybrid", database_url=..., redis_url=...)   # doctest: +SKIP
>>> await store.add_message(session_id, "user", "Hi, my name is Alice")     # doctest: +SKIP
>>> await store.get_messages(session_id, limit=20)                           # doctest: +SKIP
"""

from __future__ import annotations

from sessionbench.store.errors import SessionNotFound, StoreClosed, StoreError, StoreUnavailable, ValidationError
from sessionbench.store.events import NullEvents, StoreEvents, last_cache_result
from sessionbench.store.factory import open_store
from sessionbench.store.models import ROLES, Message, NewMessage, ReadResult, Session, Turn
from sessionbench.store.protocol import SessionStore
from sessionbench.store.settings import CacheSettings, MemorySettings, PostgresSettings, RedisSettings, Settings
from sessionbench.store.validation import Limits

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
    "Turn",
    "ValidationError",
    "last_cache_result",
    "open_store",
]
