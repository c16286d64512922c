"""In-process backend: fast, bounded, lost on restart, one process only.

Bounds (``MemorySettings``): at most ``max_sessions`` sessions (least recently used
evicted first), sessions idle longer than ``idle_ttl`` dropped, at most
``max_messages`` kept per session (older ones forgotten; ``seq`` keeps counting).
It never grows without bound, unlike the seed's ``self.sessions = {}``.

Round trips: none.  Every operation is a dictionary lookup; ``get_messages`` and
``add_messages`` are O(limit) and O(batch), ``pop_message`` O(1).

Returned objects never alias stored state: metadata is copied on the way out, so a
caller mutating a returned ``Message.metadata`` changes nothing stored (as with the
other backends, which decode fresh objects on every read).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from sessionbench.store.backends.base import BaseStore, Batch
from sessionbench.store.errors import SessionNotFound
from sessionbench.store.models import Message, ReadResult, Session
from sessionbench.store.settings import MemorySettings
from sessionbench.store.validation import DEFAULT_LIMITS, Limits

BACKEND = "memory"


@dataclass
class _Entry:
    session: Session
    messages: deque[Message]
    touched: float = field(default_factory=time.monotonic)


class MemoryStore(BaseStore):
    """Sessions in an LRU-ordered dict.  Not shared between processes."""

    backend = BACKEND

    def __init__(self, *, settings: MemorySettings | None = None, limits: Limits = DEFAULT_LIMITS) -> None:
        super().__init__(limits=limits)
        self.settings = settings or MemorySettings()
        self._sessions: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def _expire(self) -> None:
        """Drop idle sessions from the LRU end, then evict down to ``max_sessions``."""
        deadline = time.monotonic() - self.settings.idle_ttl
        while self._sessions:
            sid, entry = next(iter(self._sessions.items()))
            if entry.touched >= deadline and len(self._sessions) <= self.settings.max_sessions:
                break
            del self._sessions[sid]

    def _get(self, sid: str, uid: str | None) -> _Entry | None:
        entry = self._sessions.get(sid)
        if entry is None:
            return None
        if time.monotonic() - entry.touched > self.settings.idle_ttl:
            del self._sessions[sid]
            return None
        if uid is not None and entry.session.user_id != uid:
            raise SessionNotFound(sid)
        return entry

    def _touch(self, sid: str, entry: _Entry) -> None:
        entry.touched = time.monotonic()
        self._sessions.move_to_end(sid)

    def _new(self, sid: str, uid: str | None, meta: dict[str, Any]) -> _Entry:
        now = datetime.now(UTC)
        entry = _Entry(Session(sid, uid, now, now, 0, meta, True), deque(maxlen=self.settings.max_messages))
        self._sessions[sid] = entry
        self._expire()
        return entry

    async def _create(self, sid: str, uid: str | None, meta: dict[str, Any]) -> Session:
        entry = self._get(sid, uid) or self._new(sid, uid, meta)
        self._touch(sid, entry)
        return _session_copy(entry.session)

    async def _append(self, sid: str, uid: str | None, batch: Batch) -> list[Message]:
        entry = self._get(sid, uid) or self._new(sid, uid, {})
        now = datetime.now(UTC)
        first = entry.session.last_seq + 1
        stored = [Message(sid, first + i, r, c, now, m) for i, (r, c, m) in enumerate(batch)]
        entry.messages.extend(stored)
        entry.session = replace(entry.session, last_seq=stored[-1].seq, last_message_at=now, is_active=True)
        self._touch(sid, entry)
        return [_message_copy(m) for m in stored]

    async def _read(self, sid: str, uid: str | None, limit: int, before_seq: int | None) -> ReadResult:
        entry = self._get(sid, uid)
        if entry is None:
            if uid is None:
                return ReadResult([], "hit")
            raise SessionNotFound(sid)
        self._touch(sid, entry)
        newest_first = (m for m in reversed(entry.messages) if before_seq is None or m.seq < before_seq)
        return ReadResult([_message_copy(m) for m in reversed(list(islice(newest_first, limit)))], "hit")

    async def _pop(self, sid: str, uid: str | None) -> Message | None:
        """Drop the newest kept message; ``last_seq`` stays, so its seq is not reused."""
        entry = self._get(sid, uid)
        if entry is None:
            if uid is None:
                return None
            raise SessionNotFound(sid)
        self._touch(sid, entry)
        return entry.messages.pop() if entry.messages else None

    async def _get_session(self, sid: str, uid: str | None) -> Session:
        entry = self._get(sid, uid)
        if entry is None:
            raise SessionNotFound(sid)
        return _session_copy(entry.session)

    async def _list_sessions(self, uid: str | None, limit: int, before: datetime | None) -> list[Session]:
        self._expire()
        found = [
            e.session
            for e in self._sessions.values()
            if e.session.user_id == uid and (before is None or e.session.last_message_at < before)
        ]
        found.sort(key=lambda s: s.last_message_at, reverse=True)
        return [_session_copy(s) for s in found[:limit]]

    async def _search(self, text: str, uid: str | None, limit: int) -> list[Message]:
        """Case-insensitive substring match of every word of ``query``, newest first."""
        words = text.casefold().split()
        hits = [
            m
            for e in self._sessions.values()
            if uid is None or e.session.user_id == uid
            for m in e.messages
            if all(w in m.content.casefold() for w in words)
        ]
        hits.sort(key=lambda m: (m.created_at, m.seq), reverse=True)
        return [_message_copy(m) for m in hits[:limit]]

    async def _history(self, sid: str) -> AsyncIterator[Message]:
        entry = self._sessions.get(sid)
        for m in list(entry.messages) if entry is not None else []:
            yield m

    async def _delete(self, sid: str, uid: str | None) -> bool:
        entry = self._sessions.get(sid)
        if entry is None or (uid is not None and entry.session.user_id != uid):
            return False
        del self._sessions[sid]
        return True

    async def _cleanup(self, older_than: float, batch_size: int) -> int:
        cutoff = datetime.now(UTC).timestamp() - older_than
        stale = [sid for sid, e in self._sessions.items() if e.session.last_message_at.timestamp() < cutoff]
        for sid in stale:
            del self._sessions[sid]
        return len(stale)

    async def _close(self) -> None:
        self._sessions.clear()


def _clone(value: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, scalars): faster than ``copy.deepcopy``."""
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clone(v) for v in value]
    return value


def _message_copy(m: Message) -> Message:
    return Message(m.session_id, m.seq, m.role, m.content, m.created_at, _clone(m.metadata))


def _session_copy(s: Session) -> Session:
    return replace(s, metadata=_clone(s.metadata))
