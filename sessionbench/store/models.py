"""The store's data: messages, sessions, roles and the small literal types.

Every backend (and the cache) returns these same objects, so callers see one shape
whichever backend produced them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
ROLES: frozenset[str] = frozenset({"system", "user", "assistant", "tool"})
#: Formats ``export`` renders as text chunks (``str``); ``pdf`` is rendered as ``bytes``.
TextExportFormat = Literal["csv", "jsonl", "markdown"]
ExportFormat = Literal["csv", "jsonl", "markdown", "pdf"]
EXPORT_FORMATS: frozenset[str] = frozenset({"csv", "jsonl", "markdown", "pdf"})
CacheResult = Literal["hit", "miss", "bypass", "error"]


@dataclass(slots=True)
class Message:
    """One stored message.  ``seq`` is 1, 2, 3, ... per session, in append order.

    A seq is never given out twice while the session exists: after ``pop_message``
    removed the newest message, the next append gets the following number, leaving a
    gap (a deleted session that is created again starts over at 1).

    Plain data, built fresh for every result (a window of 20 is decoded on every cache
    hit, and a frozen dataclass costs about three times as much to build): what a store
    returns belongs to the caller, and changing it changes nothing stored.
    """

    session_id: str
    seq: int
    role: str
    content: str
    created_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; the same shape whichever backend (or cache) produced it."""
        return {
            "session_id": self.session_id,
            "seq": self.seq,
            "role": self.role,
            "content": self.content,
            "created_at": self.created_at.isoformat(),
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        return cls(
            session_id=str(data["session_id"]),
            seq=int(data["seq"]),
            role=str(data["role"]),
            content=str(data["content"]),
            created_at=datetime.fromisoformat(str(data["created_at"])),
            metadata=dict(data.get("metadata") or {}),
        )


@dataclass(slots=True)
class Session:
    """A conversation.  ``last_seq`` is the number of messages ever appended, popped ones
    included (plain data, like Message)."""

    session_id: str
    user_id: str | None
    created_at: datetime
    last_message_at: datetime
    last_seq: int
    metadata: dict[str, Any] = field(default_factory=dict)
    is_active: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "user_id": self.user_id,
            "created_at": self.created_at.isoformat(),
            "last_message_at": self.last_message_at.isoformat(),
            "last_seq": self.last_seq,
            "metadata": self.metadata,
            "is_active": self.is_active,
        }


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to append (validated by :func:`validate_new_messages`)."""

    role: str
    content: str
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ReadResult:
    """What a read returns: the messages (oldest first) and how the cache answered.

    ``cache`` is the hybrid's real result (``hit``, ``miss``, ``bypass``: the window
    cannot answer that range, ``error``: Redis could not be used); ``hit`` for the memory
    backend (it is all cache) and ``bypass`` for PostgreSQL alone.
    """

    messages: list[Message]
    cache: CacheResult


@dataclass(frozen=True, slots=True)
class Turn:
    """What :meth:`~sessionbench.store.protocol.SessionStore.add_and_read` returns.

    ``added``: the messages it appended (with their seqs); ``window``: the last ``limit``
    messages right after them (oldest first: the added ones last when ``limit`` covers them,
    and any message a concurrent writer appended after them too); ``cache``: how the read
    was answered, as :attr:`ReadResult.cache`.
    """

    added: list[Message]
    window: list[Message]
    cache: CacheResult
