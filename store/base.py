"""The session-store interface: models, limits, validation, errors and the events sink.

Error tree (every error the store raises; a driver exception never escapes)::

    StoreError
    ├── ValidationError      bad input, raised before any I/O (field names the culprit)
    ├── SessionNotFound      no such session, or it belongs to another user
    └── StoreUnavailable     PostgreSQL (or, where it is the source of truth, anything
                             durable) could not be reached or answered with an error

Every backend implements :class:`SessionStore`.  Backends report what they do
(cache results, populates, invalidations, errors, round trips) to a
:class:`StoreEvents` sink, so instrumentation lives in a wrapper and backends
never import Prometheus or OpenTelemetry.
"""

from __future__ import annotations

import contextvars
import json
import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant", "tool"]
ROLES: frozenset[str] = frozenset({"system", "user", "assistant", "tool"})
ExportFormat = Literal["csv", "jsonl", "markdown"]
EXPORT_FORMATS: frozenset[str] = frozenset({"csv", "jsonl", "markdown"})
CacheResult = Literal["hit", "miss", "bypass", "error"]


# ----------------------------------------------------------------------------- errors


class StoreError(Exception):
    """Base class of every error the store raises."""


class ValidationError(StoreError, ValueError):
    """Input is invalid; nothing was read or written.  ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class SessionNotFound(StoreError, LookupError):
    """The session does not exist, or it is not visible to the given user."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id} not found")
        self.session_id = session_id


class StoreUnavailable(StoreError):
    """The durable store could not complete the operation; it may be retried."""


# ----------------------------------------------------------------------------- models


@dataclass(frozen=True, slots=True)
class Message:
    """One stored message.  ``seq`` is 1, 2, 3, ... per session, in append order."""

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


@dataclass(frozen=True, slots=True)
class Session:
    """A conversation.  ``last_seq`` is the number of messages ever appended."""

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


# ----------------------------------------------------------------------------- limits


@dataclass(frozen=True, slots=True)
class Limits:
    """Input limits, enforced before any I/O."""

    content_bytes: int = 64 * 1024
    metadata_bytes: int = 8 * 1024
    max_limit: int = 1000
    max_batch: int = 100
    user_id_chars: int = 128
    query_chars: int = 256


DEFAULT_LIMITS = Limits()


#: ``older_than`` above this is rejected: PostgreSQL cannot subtract much more from now().
MAX_OLDER_THAN = 100 * 365.25 * 24 * 3600.0

# A NUL character inside any JSON string is encoded as ``\u0000`` preceded by an even
# number of backslashes; an odd number means the text holds a literal backslash-u-0000.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _is_unicode(text: str) -> bool:
    """False for strings holding lone surrogates, which neither PostgreSQL nor Redis can store."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def validate_session_id(session_id: str | uuid.UUID | None, *, field: str = "session_id") -> str:
    """Return the canonical (lowercase, hyphenated) form of a UUID session id."""
    if isinstance(session_id, uuid.UUID):
        return str(session_id)
    if not isinstance(session_id, str):
        raise ValidationError(field, "must be a UUID string")
    if len(session_id) > 64:
        raise ValidationError(field, "is not a UUID")
    try:
        return str(uuid.UUID(session_id))
    except ValueError:
        raise ValidationError(field, "is not a UUID") from None


def validate_user_id(user_id: str | None, limits: Limits) -> str | None:
    if user_id is None:
        return None
    if not isinstance(user_id, str) or not user_id or len(user_id) > limits.user_id_chars:
        raise ValidationError("user_id", f"must be a non-empty string of at most {limits.user_id_chars} characters")
    if "\x00" in user_id:
        raise ValidationError("user_id", "must not contain NUL characters")
    if not _is_unicode(user_id):
        raise ValidationError("user_id", "is not valid Unicode text")
    return user_id


def validate_metadata(metadata: Mapping[str, Any] | None, limits: Limits, *, field: str = "metadata") -> dict[str, Any]:
    """Metadata is a JSON object of bounded encoded size; return a plain-dict copy."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ValidationError(field, "must be a JSON object")
    try:
        encoded = json.dumps(metadata, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValidationError(field, f"is not JSON-serialisable ({exc})") from None
    if _JSON_NUL.search(encoded):
        raise ValidationError(field, "must not contain NUL characters")
    if not _is_unicode(encoded):
        raise ValidationError(field, "is not valid Unicode text")
    if len(encoded.encode()) > limits.metadata_bytes:
        raise ValidationError(field, f"is larger than {limits.metadata_bytes} bytes encoded")
    decoded: dict[str, Any] = json.loads(encoded)
    return decoded


def validate_content(content: str, limits: Limits, *, field: str = "content") -> str:
    if not isinstance(content, str):
        raise ValidationError(field, "must be a string")
    if not content:
        raise ValidationError(field, "must not be empty")
    if "\x00" in content:
        raise ValidationError(field, "must not contain NUL characters")
    try:
        size = len(content.encode())
    except UnicodeEncodeError:
        raise ValidationError(field, "is not valid Unicode text") from None
    if size > limits.content_bytes:
        raise ValidationError(field, f"is {size} bytes; the limit is {limits.content_bytes}")
    return content


def validate_role(role: str, *, field: str = "role") -> str:
    if not isinstance(role, str) or role not in ROLES:
        raise ValidationError(field, f"must be one of {', '.join(sorted(ROLES))}")
    return role


def validate_new_messages(
    messages: Sequence[NewMessage | Mapping[str, Any]], limits: Limits
) -> list[tuple[str, str, dict[str, Any]]]:
    """Validate a batch; return ``(role, content, metadata)`` tuples."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):  # type: ignore[unreachable]
        raise ValidationError("messages", "must be a list of messages")
    if not messages:
        raise ValidationError("messages", "must not be empty")
    if len(messages) > limits.max_batch:
        raise ValidationError("messages", f"holds {len(messages)} messages; the limit is {limits.max_batch}")
    out: list[tuple[str, str, dict[str, Any]]] = []
    for i, item in enumerate(messages):
        role: Any
        content: Any
        metadata: Any
        if isinstance(item, NewMessage):
            role, content, metadata = item.role, item.content, item.metadata
        elif isinstance(item, Mapping):
            role, content, metadata = item.get("role"), item.get("content"), item.get("metadata")
        else:
            raise ValidationError(f"messages[{i}]", "must be an object with role and content")
        out.append(
            (
                validate_role(role, field=f"messages[{i}].role"),
                validate_content(content, limits, field=f"messages[{i}].content"),
                validate_metadata(metadata, limits, field=f"messages[{i}].metadata"),
            )
        )
    return out


def validate_limit(limit: int, limits: Limits, *, field: str = "limit") -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= limits.max_limit:
        raise ValidationError(field, f"must be an integer from 1 to {limits.max_limit}")
    return limit


def validate_before_seq(before_seq: int | None) -> int | None:
    if before_seq is None:
        return None
    if isinstance(before_seq, bool) or not isinstance(before_seq, int) or not 1 <= before_seq <= 2**62:
        raise ValidationError("before_seq", "must be a positive integer")
    return before_seq


def validate_format(fmt: str) -> str:
    if not isinstance(fmt, str) or fmt not in EXPORT_FORMATS:
        raise ValidationError("format", f"must be one of {', '.join(sorted(EXPORT_FORMATS))}")
    return fmt


def validate_cleanup(older_than: float, batch_size: int) -> None:
    # The chained comparison also rejects NaN and infinities (and never overflows on big ints).
    number = isinstance(older_than, (int, float)) and not isinstance(older_than, bool)
    if not number or not 0 <= older_than <= MAX_OLDER_THAN:
        raise ValidationError("older_than", "must be a number of seconds from 0 to 100 years")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 100_000:
        raise ValidationError("batch_size", "must be an integer from 1 to 100000")


def validate_query(query: str, limits: Limits) -> str:
    if not isinstance(query, str) or not query.strip():
        raise ValidationError("query", "must be a non-empty string")
    if len(query) > limits.query_chars or "\x00" in query or not _is_unicode(query):
        raise ValidationError("query", f"must be at most {limits.query_chars} characters of text, without NUL")
    return query.strip()


# ----------------------------------------------------------------------------- events


class StoreEvents(Protocol):
    """What a backend reports; the instrumentation wrapper turns it into metrics and spans.

    Calls are synchronous and must be cheap; the default :class:`NullEvents`
    does nothing.
    """

    def cache_result(self, result: CacheResult) -> None:
        """A read was answered from the cache (hit), filled it (miss), went around it
        (bypass: the cache cannot answer that range) or could not use it (error)."""

    def cache_populate(self, result: Literal["stored", "discarded"]) -> None:
        """A populate after a miss was stored, or discarded because it lost a race."""

    def cache_invalidation(self, reason: str) -> None:
        """A cache entry (or the whole namespace) was dropped; ``reason`` is a short constant."""

    def error(self, backend: str, operation: str, kind: str) -> None:
        """A dependency failed; ``kind`` is a short constant (``timeout``, ``connection``...)."""

    def breaker_state(self, state: int) -> None:
        """The Redis circuit breaker changed state: 0 closed, 1 open, 2 half-open."""


class NullEvents:
    """An events sink that ignores everything."""

    def cache_result(self, result: CacheResult) -> None:
        pass

    def cache_populate(self, result: Literal["stored", "discarded"]) -> None:
        pass

    def cache_invalidation(self, reason: str) -> None:
        pass

    def error(self, backend: str, operation: str, kind: str) -> None:
        pass

    def breaker_state(self, state: int) -> None:
        pass


NULL_EVENTS = NullEvents()

#: The cache result of the most recent read in the current task (``None`` for backends
#: without a cache).  The HTTP service turns it into the ``X-Cache`` header.
last_cache_result: contextvars.ContextVar[CacheResult | None] = contextvars.ContextVar(
    "sessionstore_last_cache_result", default=None
)


# ----------------------------------------------------------------------------- the interface


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

    def export(
        self, session_id: str | uuid.UUID, format: str = "jsonl", *, user_id: str | None = None
    ) -> AsyncIterator[str]:
        """Stream the whole history as CSV, JSON Lines or Markdown text chunks.
        Validation and :class:`SessionNotFound` are raised on first iteration."""
        ...

    async def delete_session(self, session_id: str | uuid.UUID, *, user_id: str | None = None) -> bool:
        """Delete a session and its messages (and cache entries); False if it did not exist."""
        ...

    async def cleanup_inactive(self, older_than: float, batch_size: int = 1000) -> int:
        """Delete sessions whose last message is older than ``older_than`` seconds, in
        batches of ``batch_size``; return how many were deleted."""
        ...

    async def close(self) -> None:
        """Release what the store owns.  Clients passed in are closed by whoever made them."""
        ...
