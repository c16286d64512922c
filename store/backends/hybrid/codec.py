"""How a message is encoded in the cache: a compact JSON array per message.

A cached message is ``[seq, role, content, created_at, metadata]``; the read script
returns a whole window as one JSON array of those, decoded in one call.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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
