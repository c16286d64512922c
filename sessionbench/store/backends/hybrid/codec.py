"""How a message is encoded in the cache: a compact JSON array per message.

A cached message is ``[seq, role, content, created_at, metadata]`` (UTF-8 JSON, written
by orjson); the read script returns a whole window as one JSON array of those, decoded
in one ``orjson.loads`` call.  Metadata is validated to JSON that every library reads the
same way (integers within 64 bits), so orjson and the stdlib agree on every entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson

from sessionbench.store.models import Message


def encode_message(m: Message) -> bytes:
    """A cached message: the JSON array ``[seq, role, content, created_at, metadata]``."""
    return orjson.dumps([m.seq, m.role, m.content, m.created_at.isoformat(), m.metadata])


def decode_window(session_id: str, blob: str | bytes) -> list[Message]:
    """Messages from a JSON array of encoded messages (what the read script returns)."""
    fromiso = datetime.fromisoformat
    return [Message(session_id, s, r, c, fromiso(t), m) for s, r, c, t, m in orjson.loads(blob)]


def decode_entries(session_id: str, entries: Sequence[str]) -> list[Message]:
    """Messages from a cache list's raw entries (as ``LRANGE`` returns them)."""
    return decode_window(session_id, "[" + ",".join(entries) + "]")


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One session's cache entry as Redis holds it (what :meth:`HybridStore.inspect` returns).

    ``last`` is None when there is no hash; ``raw`` are the list's encoded messages,
    oldest first; ``ttl_ms`` is the hash's remaining TTL (None: no hash or no TTL).
    """

    last: int | None
    owner: str | None
    epoch: str | None
    raw: tuple[str, ...]
    ttl_ms: int | None

    def messages(self, session_id: str) -> list[Message]:
        return decode_entries(session_id, self.raw)
