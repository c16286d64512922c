"""The one interface every backend implements: :class:`SessionStore`.

Backends get the public methods from :class:`sessionbench.store.backends.base.BaseStore` (which
validates once); wrappers such as :class:`sessionbench.store.instrumentation.InstrumentedStore`
implement the Protocol by forwarding.  Every store is an async context manager.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Protocol, Self, overload, runtime_checkable

from sessionbench.store.models import Message, NewMessage, ReadResult, Session, TextExportFormat, Turn


@runtime_checkable
class SessionStore(Protocol):
    """An async store of chat sessions.  Every backend has the same semantics.

    Session ids are UUIDs (``str`` or :class:`uuid.UUID` in, canonical ``str`` out).
    Where a method takes ``user_id`` for a session that already exists, passing it
    makes the call act as that user: a session owned by someone else behaves
    exactly like a missing one (:class:`SessionNotFound`).
    """

    async def create_session(
        self,
        session_id: str | uuid.UUID | None = None,
        user_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Session:
        """Create a session (a new UUID when ``session_id`` is None).  Idempotent: an
        existing session is returned unchanged (or :class:`SessionNotFound` if it is
        another user's)."""
        ...

    async def add_message(
        self,
        session_id: str | uuid.UUID,
        role: str,
        content: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        user_id: str | None = None,
    ) -> Message:
        """Append one message; creates the session (owned by ``user_id``) if unknown."""
        ...

    async def add_messages(
        self,
        session_id: str | uuid.UUID,
        messages: Sequence[NewMessage | Mapping[str, Any]],
        *,
        user_id: str | None = None,
    ) -> list[Message]:
        """Append a whole turn atomically, in order; creates the session if unknown."""
        ...

    async def add_and_read(
        self,
        session_id: str | uuid.UUID,
        messages: Sequence[NewMessage | Mapping[str, Any]],
        limit: int = 20,
        *,
        user_id: str | None = None,
    ) -> Turn:
        """:meth:`add_messages`, then the last ``limit`` messages: a chat turn's "store the
        user's message, give me the context" in one call.  The window is what
        :meth:`read` would return right after the append (it holds the appended messages,
        and may hold later ones of concurrent writers).  Where a backend can, it saves a
        round trip: the hybrid sends its append and read scripts in one Redis round trip."""
        ...

    async def get_messages(
        self,
        session_id: str | uuid.UUID,
        limit: int = 20,
        before_seq: int | None = None,
        *,
        user_id: str | None = None,
    ) -> list[Message]:
        """The last ``limit`` messages with ``seq < before_seq`` (all when None), oldest
        first.  An unknown session yields ``[]`` unless ``user_id`` is given, in which
        case it raises :class:`SessionNotFound`."""
        ...

    async def read(
        self,
        session_id: str | uuid.UUID,
        limit: int = 20,
        before_seq: int | None = None,
        *,
        user_id: str | None = None,
    ) -> ReadResult:
        """:meth:`get_messages` together with how the cache answered it (``ReadResult.cache``)."""
        ...

    async def get_session(self, session_id: str | uuid.UUID, *, user_id: str | None = None) -> Session:
        """The session, or :class:`SessionNotFound`."""
        ...

    async def list_sessions(
        self, user_id: str | None, limit: int = 20, before: datetime | None = None
    ) -> list[Session]:
        """A user's sessions (``None``: sessions without a user), most recent
        ``last_message_at`` first, strictly before ``before`` when given."""
        ...

    async def search(self, query: str, user_id: str | None = None, limit: int = 20) -> list[Message]:
        """Messages matching ``query`` (PostgreSQL full-text search; substring in memory),
        restricted to ``user_id``'s sessions when given, best matches first."""
        ...

    @overload
    def export(
        self, session_id: str | uuid.UUID, format: TextExportFormat = "jsonl", *, user_id: str | None = None
    ) -> AsyncIterator[str]: ...

    @overload
    def export(
        self, session_id: str | uuid.UUID, format: Literal["pdf"], *, user_id: str | None = None
    ) -> AsyncIterator[bytes]: ...

    @overload
    def export(
        self, session_id: str | uuid.UUID, format: str, *, user_id: str | None = None
    ) -> AsyncIterator[str] | AsyncIterator[bytes]: ...

    def export(
        self, session_id: str | uuid.UUID, format: str = "jsonl", *, user_id: str | None = None
    ) -> AsyncIterator[str] | AsyncIterator[bytes]:
        """Stream the whole history as CSV, JSON Lines or Markdown text chunks (``str``), or
        as a PDF document (``bytes``; needs the ``pdf`` extra).  Validation and
        :class:`SessionNotFound` are raised on first iteration."""
        ...

    async def pop_message(self, session_id: str | uuid.UUID, *, user_id: str | None = None) -> Message | None:
        """Remove the session's newest message and return it; None when it has none.

        Durable once it returns, and no cache serves the message afterwards.  The seq
        is not given out again (the next append takes the following one), so
        ``Session.last_seq`` is unchanged.  An unknown session gives None unless
        ``user_id`` is given, in which case it raises :class:`SessionNotFound`."""
        ...

    async def delete_session(self, session_id: str | uuid.UUID, *, user_id: str | None = None) -> bool:
        """Delete a session and its messages (and cache entries); False if it did not exist."""
        ...

    async def cleanup_inactive(self, older_than: float, batch_size: int = 1000) -> int:
        """Delete sessions whose last message is older than ``older_than`` seconds, in
        batches of ``batch_size``; return how many were deleted."""
        ...

    async def health(self, seconds: float = 1.0) -> dict[str, str]:
        """Reachability of each server behind the store (``{"postgres": "ok", "redis": ...}``),
        each checked within ``seconds``; never raises for a server fault."""
        ...

    async def close(self) -> None:
        """Release what the store owns (idempotent); a closed store raises ``StoreClosed``.
        Clients passed in are closed by whoever made them."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
