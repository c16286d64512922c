"""The hybrid backend: a Redis cache of each session's recent window in front of PostgreSQL.

:class:`HybridStore` (``store.py``) composes a Redis client and a
:class:`~sessionbench.store.backends.postgres.PostgresStore`; its cache rules are the Lua scripts
(``*.lua``, loaded by :mod:`.scripts`), restated in Python by :mod:`.rules`; the key
layout is :mod:`.keys`, the message encoding :mod:`.codec`, the breaker :mod:`.breaker`.
"""

from sessionbench.store.backends.hybrid import scripts
from sessionbench.store.backends.hybrid.breaker import CircuitBreaker
from sessionbench.store.backends.hybrid.client import create_redis, is_cluster, open_redis
from sessionbench.store.backends.hybrid.codec import CacheEntry, decode_entries, decode_window, encode_message
from sessionbench.store.backends.hybrid.keys import KeyLayout, SessionKeys
from sessionbench.store.backends.hybrid.rules import CacheModel, servable
from sessionbench.store.backends.hybrid.store import HybridStore

__all__ = [
    "CacheEntry",
    "CacheModel",
    "CircuitBreaker",
    "HybridStore",
    "KeyLayout",
    "SessionKeys",
    "create_redis",
    "decode_entries",
    "decode_window",
    "encode_message",
    "is_cluster",
    "open_redis",
    "scripts",
    "servable",
]
