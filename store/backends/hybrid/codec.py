"""How a message is encoded in the cache: a compact JSON array per message.

A cached message is ``[seq, role, content, created_at, metadata]``; the read script
returns a whole window as one JSON array of those, decoded in one call.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from store.models import Message


def encode_message(m: Message) -> str:
    """A cached message: the JSON array ``[seq, role, content, created_at, metadata]``."""
    return json.dumps(
        [m.seq, m.role, m.content, m.created_at.isoformat(), m.metadata], ensure_ascii=False, separators=(",", ":")
    )


def decode_window(session_id: str, blob: str) -> list[Message]:
    """Messages from a JSON array of encoded messages (what the read script returns)."""
    fromiso = datetime.fromisoformat
    return [Message(session_id, s, r, c, fromiso(t), m) for s, r, c, t, m in json.loads(blob)]


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
