"""What every backend shares: the public methods, which validate once and call primitives.

A backend subclasses :class:`BaseStore` and implements the ``_``-prefixed primitives
below; they receive canonical, validated values (a canonical UUID string, a checked
user id, ``(role, content, metadata)`` tuples) and do no validation of their own.
The public methods are the :class:`~sessionbench.store.protocol.SessionStore` Protocol: each one
checks that the store is open, validates its arguments (raising
:class:`~sessionbench.store.errors.ValidationError` before any I/O) and calls one primitive.  So a
rule about input lives in :mod:`sessionbench.store.validation` and is applied in one place, once
per call, whichever backend runs it; the HTTP service relies on the same checks.

This is a thin template, not a stack of decorators: no primitive is called by more
than one public method except ``_append`` (``add_message`` is ``add_messages`` of one)
and, through the default ``_append_and_read``, ``_append`` and ``_read`` (``add_and_read``).

Seqs are never reused while a session exists: ``pop_message`` (``_pop``) removes the
newest message but leaves ``last_seq`` as it was, so the next append takes the
following seq.  The hybrid cache relies on that (a delayed cache update for a popped
message can never be mistaken for a later append); see its ``_pop``.

Every store is an async context manager (``async with await open_store(...) as s``);
``close()`` is idempotent and a closed store raises :class:`~sessionbench.store.errors.StoreClosed`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self, overload

from sessionbench.store.errors import StoreClosed
from sessionbench.store.events import last_cache_result
from sessionbench.store.export import render
from sessionbench.store.models import Message, NewMessage, ReadResult, Session, TextExportFormat, Turn
from sessionbench.store.validation import (
    DEFAULT_LIMITS,
    Limits,
    validate_before,
    validate_before_seq,
    validate_cleanup,
    validate_format,
    validate_limit,
    validate_metadata,
    validate_new_messages,
    validate_query,
    validate_session_id,
    validate_user_id,
)

Batch = list[tuple[str, str, dict[str, Any]]]


class BaseStore:
    """The public methods of every backend; subclasses implement the primitives."""

    backend: str = "base"

    def __init__(self, *, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.closed = False

    # -- lifecycle ------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        self._check_open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self.closed:
            raise StoreClosed(f"this {self.backend} store is closed")

    async def close(self) -> None:
        """Release what the store owns (idempotent); any later call raises StoreClosed."""
        if self.closed:
            return
        self.closed = True
        await self._close()

    async def health(self, seconds: float = 1.0) -> dict[str, str]:
        """Reachability of each server behind the store: ``{"postgres": "ok", ...}``.

        ``ok`` or ``unavailable (<reason>)`` per server, each checked within ``seconds``
        seconds; empty for a store with no server.  Never raises for a server fault.
        """
        self._check_open()
        return await self._health(seconds)

    # -- sessions -------------------------------------------------------------------------
    async def create_session(
        self,
        session_id: str | uuid.UUID | None = None,
        user_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Session:
        self._check_open()
        sid = validate_session_id(session_id) if session_id is not None else str(uuid.uuid4())
        uid = validate_user_id(user_id, self.limits)
        meta = validate_metadata(metadata, self.limits)
        return await self._create(sid, uid, meta)

    async def get_session(self, session_id: str | uuid.UUID, *, user_id: str | None = None) -> Session:
        self._check_open()
        sid = validate_session_id(session_id)
        return await self._get_session(sid, validate_user_id(user_id, self.limits))

    async def list_sessions(
        self, user_id: str | None, limit: int = 20, before: datetime | None = None
    ) -> list[Session]:
        self._check_open()
        uid = validate_user_id(user_id, self.limits)
        validate_limit(limit, self.limits)
        validate_before(before)
        return await self._list_sessions(uid, limit, before)

    async def delete_session(self, session_id: str | uuid.UUID, *, user_id: str | None = None) -> bool:
        self._check_open()
        sid = validate_session_id(session_id)
        return await self._delete(sid, validate_user_id(user_id, self.limits))

    async def cleanup_inactive(self, older_than: float, batch_size: int = 1000) -> int:
        self._check_open()
        validate_cleanup(older_than, batch_size)
        return await self._cleanup(older_than, batch_size)

    # -- messages -------------------------------------------------------------------------
    async def add_message(
        self,
        session_id: str | uuid.UUID,
        role: str,
        content: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        user_id: str | None = None,
    ) -> Message:
        return (await self.add_messages(session_id, [NewMessage(role, content, metadata)], user_id=user_id))[0]

    async def add_messages(
        self,
        session_id: str | uuid.UUID,
        messages: Sequence[NewMessage | Mapping[str, Any]],
        *,
        user_id: str | None = None,
    ) -> list[Message]:
        self._check_open()
        sid = validate_session_id(session_id)
        uid = validate_user_id(user_id, self.limits)
        return await self._append(sid, uid, validate_new_messages(messages, self.limits))

    async def add_and_read(
        self,
        session_id: str | uuid.UUID,
        messages: Sequence[NewMessage | Mapping[str, Any]],
        limit: int = 20,
        *,
        user_id: str | None = None,
    ) -> Turn:
        """:meth:`add_messages`, then the last ``limit`` messages (validated once, before any I/O)."""
        self._check_open()
        sid = validate_session_id(session_id)
        uid = validate_user_id(user_id, self.limits)
        batch = validate_new_messages(messages, self.limits)
        validate_limit(limit, self.limits)
        return await self._append_and_read(sid, uid, batch, limit)

    async def read(
        self,
        session_id: str | uuid.UUID,
        limit: int = 20,
        before_seq: int | None = None,
        *,
        user_id: str | None = None,
    ) -> ReadResult:
        """:meth:`get_messages` with how the cache answered (``hit|miss|bypass|error``)."""
        self._check_open()
        sid = validate_session_id(session_id)
        uid = validate_user_id(user_id, self.limits)
        validate_limit(limit, self.limits)
        validate_before_seq(before_seq)
        return await self._read(sid, uid, limit, before_seq)

    async def get_messages(
        self,
        session_id: str | uuid.UUID,
        limit: int = 20,
        before_seq: int | None = None,
        *,
        user_id: str | None = None,
    ) -> list[Message]:
        result = await self.read(session_id, limit, before_seq, user_id=user_id)
        last_cache_result.set(result.cache)
        return result.messages

    async def search(self, query: str, user_id: str | None = None, limit: int = 20) -> list[Message]:
        self._check_open()
        text = validate_query(query, self.limits)
        uid = validate_user_id(user_id, self.limits)
        validate_limit(limit, self.limits)
        return await self._search(text, uid, limit)

    async def pop_message(self, session_id: str | uuid.UUID, *, user_id: str | None = None) -> Message | None:
        """Remove the newest message and return it (None when there is none); ``last_seq`` stays."""
        self._check_open()
        sid = validate_session_id(session_id)
        return await self._pop(sid, validate_user_id(user_id, self.limits))

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

    async def export(
        self, session_id: str | uuid.UUID, format: str = "jsonl", *, user_id: str | None = None
    ) -> AsyncIterator[str | bytes]:
        """Text chunks for csv, jsonl and markdown; ``bytes`` of a PDF document for pdf."""
        self._check_open()
        sid = validate_session_id(session_id)
        fmt = validate_format(format)
        await self._get_session(sid, validate_user_id(user_id, self.limits))  # SessionNotFound before any text
        async for chunk in render(fmt, sid, self._history(sid)):
            yield chunk

    # -- primitives (validated arguments) -------------------------------------------------
    async def _create(self, sid: str, uid: str | None, meta: dict[str, Any]) -> Session:
        raise NotImplementedError

    async def _get_session(self, sid: str, uid: str | None) -> Session:
        """The session, or SessionNotFound (also when ``uid`` is given and is not its owner)."""
        raise NotImplementedError

    async def _list_sessions(self, uid: str | None, limit: int, before: datetime | None) -> list[Session]:
        raise NotImplementedError

    async def _delete(self, sid: str, uid: str | None) -> bool:
        raise NotImplementedError

    async def _cleanup(self, older_than: float, batch_size: int) -> int:
        raise NotImplementedError

    async def _append(self, sid: str, uid: str | None, batch: Batch) -> list[Message]:
        raise NotImplementedError

    async def _read(self, sid: str, uid: str | None, limit: int, before_seq: int | None) -> ReadResult:
        raise NotImplementedError

    async def _append_and_read(self, sid: str, uid: str | None, batch: Batch, limit: int) -> Turn:
        """``_append`` then ``_read``: the round trips of both.  A backend that can answer
        the two in fewer overrides it (the hybrid)."""
        added = await self._append(sid, uid, batch)
        result = await self._read(sid, uid, limit, None)
        return Turn(added, result.messages, result.cache)

    async def _search(self, text: str, uid: str | None, limit: int) -> list[Message]:
        raise NotImplementedError

    async def _pop(self, sid: str, uid: str | None) -> Message | None:
        """Delete and return the newest message (``last_seq`` unchanged).  None when the session
        has no message or does not exist and ``uid`` is None; SessionNotFound when ``uid`` is
        given and the session is missing or another user's."""
        raise NotImplementedError

    def _history(self, sid: str) -> AsyncIterator[Message]:
        """Every message of an existing session, oldest first (streamed)."""
        raise NotImplementedError

    async def _health(self, seconds: float) -> dict[str, str]:
        return {}

    async def _close(self) -> None:
        """Release what this store owns; called once."""
