"""The OpenAI Agents SDK ``Session`` protocol on any store (the ``agents`` extra)::

    from agents import Agent, Runner
    from sessionbench.store import open_store
    from sessionbench.store.integrations.agents import StoreSession

    async with await open_store("hybrid", database_url=..., redis_url=...) as store:
        session = StoreSession("user-123", store)
        result = await Runner.run(agent, "What did I ask before?", session=session)

:class:`StoreSession` implements ``agents.memory.Session`` structurally (``session_id``,
``session_settings``, ``get_items``, ``add_items``, ``pop_item``, ``clear_session``)
with the semantics of the SDK's own ``SQLiteSession``: ``get_items(limit)`` gives the
latest ``limit`` items oldest first (``None``: ``session_settings.limit``, then all;
``0``: none; a negative limit: all), ``pop_item`` removes and returns the newest item
(``None`` when there is none), ``clear_session`` deletes the session.
``tests/test_agents_session.py`` runs the same random calls on both and compares every
result.

Items.  Each item (any JSON object: messages whose content is a list of parts,
function calls and their outputs, reasoning...) is one store message whose content is
the item's compact JSON text and whose metadata is ``{"agents_item": 1}``; the role is
derived from the item (its ``role``, ``developer`` as system; ``*_output`` items as
tool; anything else as assistant), for search and exports only.  ``get_items`` gives
back ``json.loads`` of that text: equal to the item added (tuples come back as lists
and non-string keys as strings, as with ``SQLiteSession``).  The store's limits apply:
an item's JSON is at most ``Limits.content_bytes`` (64 KiB by default); a bigger one
is refused with :class:`~sessionbench.store.errors.ValidationError` before anything is written.
A message the adapter did not write comes back as ``{"role": ..., "content": ...}``
(a tool message as a ``function_call_output`` with its ``tool_call_id``).

Session ids.  The SDK's are any strings, the store's are UUIDs: a UUID string is used
as it is, any other string maps to ``uuid5(NAMESPACE, session_id)``
(:attr:`StoreSession.store_session_id`).  ``user_id`` makes every call act as that
user (a session of another user reads as empty and cannot be written).

Round trips: one store call each, except ``get_items`` of more than ``page_size``
items (one read per page, paging back with ``before_seq``) and ``add_items`` of more
than ``batch_size`` items (one atomic ``add_messages`` per batch; every item is
validated before the first is written).  ``pop_item`` is ``pop_message``, which the
hybrid backend makes durable and removes from the cache before it returns.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, cast

from agents.items import TResponseInputItem
from agents.memory import SessionSettings
from agents.memory.session_settings import coerce_session_settings

from sessionbench.store.errors import SessionNotFound, ValidationError
from sessionbench.store.models import Message, NewMessage
from sessionbench.store.protocol import SessionStore
from sessionbench.store.validation import DEFAULT_LIMITS, Limits, validate_new_messages

#: The metadata key (and its version) marking a message as one stored item.
ITEM_KEY = "agents_item"
ITEM_VERSION = 1
#: Session ids that are not UUIDs map into this namespace (``uuid5``).
NAMESPACE = uuid.UUID("6f1c3a52-2d0e-4f57-9a53-0a7c5b1e8d44")
_CHAT_ROLES = frozenset({"system", "user", "assistant", "tool"})


def store_session_id(session_id: str) -> str:
    """The store's session id for an SDK session id (a UUID as it is, else its ``uuid5``)."""
    try:
        return str(uuid.UUID(session_id))
    except (ValueError, TypeError, AttributeError):
        return str(uuid.uuid5(NAMESPACE, session_id))


def item_role(item: Mapping[str, Any]) -> str:
    """The store role an item is filed under (search and exports only; the item keeps its own)."""
    role = item.get("role")
    if role in _CHAT_ROLES:
        return str(role)
    if role == "developer":
        return "system"
    kind = item.get("type")
    if isinstance(kind, str) and kind.endswith("_output"):
        return "tool"
    return "assistant"


def encode_item(item: Mapping[str, Any], *, field: str = "item") -> NewMessage:
    """One item as a store message: its compact JSON text, marked in metadata."""
    if not isinstance(item, Mapping):
        raise ValidationError(field, "must be a JSON object")
    try:
        text = json.dumps(item, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValidationError(field, f"is not JSON-serialisable ({exc})") from None
    try:
        text.encode()
    except UnicodeEncodeError:  # lone surrogates: the escaped form keeps them and is valid text
        text = json.dumps(item, separators=(",", ":"))
    return NewMessage(item_role(item), text, {ITEM_KEY: ITEM_VERSION})


def decode_item(message: Message) -> TResponseInputItem:
    """The item a stored message holds (see the module docstring for messages written otherwise)."""
    if message.metadata.get(ITEM_KEY) == ITEM_VERSION:
        try:
            item = json.loads(message.content)
        except ValueError:
            item = None
        if isinstance(item, dict):
            return cast(TResponseInputItem, item)
    if message.role == "tool":
        call_id = str(message.metadata.get("tool_call_id", ""))
        return cast(TResponseInputItem, {"type": "function_call_output", "call_id": call_id, "output": message.content})
    return cast(TResponseInputItem, {"role": message.role, "content": message.content})


class StoreSession:
    """An Agents SDK session kept in a :class:`~sessionbench.store.protocol.SessionStore` (borrowed, not closed).

    ``limits`` should be the store's (``page_size`` and ``batch_size`` default to its
    ``max_limit`` and ``max_batch``); ``session_settings`` is the SDK's, or a dict of it
    (``SessionSettings(limit=N)`` makes ``get_items()`` return the latest N).
    """

    session_id: str
    session_settings: SessionSettings | None

    def __init__(
        self,
        session_id: str,
        store: SessionStore,
        *,
        user_id: str | None = None,
        session_settings: SessionSettings | dict[str, Any] | None = None,
        limits: Limits = DEFAULT_LIMITS,
        page_size: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.session_id = session_id
        self.store = store
        self.user_id = user_id
        self.store_session_id = store_session_id(session_id)
        self.session_settings = (
            coerce_session_settings(session_settings) if session_settings is not None else SessionSettings()
        )
        self.limits = limits
        self.page_size = min(page_size or limits.max_limit, limits.max_limit)
        self.batch_size = min(batch_size or limits.max_batch, limits.max_batch)

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The latest ``limit`` items, oldest first (None: ``session_settings.limit``, then all)."""
        if limit is None and self.session_settings is not None:
            limit = self.session_settings.limit
        if limit == 0:
            return []
        want = None if limit is None or limit < 0 else limit
        return [decode_item(m) for m in await self._latest(want)]

    async def _latest(self, want: int | None) -> list[Message]:
        """The newest ``want`` messages (all when None), oldest first, a page per read."""
        pages: list[list[Message]] = []
        got, before = 0, None
        while want is None or got < want:
            size = self.page_size if want is None else min(self.page_size, want - got)
            try:
                page = await self.store.get_messages(self.store_session_id, size, before, user_id=self.user_id)
            except SessionNotFound:
                return []
            pages.append(page)
            got += len(page)
            if len(page) < size or page[0].seq == 1:
                break
            before = page[0].seq
        return [m for page in reversed(pages) for m in page]

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append ``items`` in order (validated first; one ``add_messages`` per ``batch_size``)."""
        if not items:
            return
        batch = [encode_item(cast(Mapping[str, Any], it), field=f"items[{i}]") for i, it in enumerate(items)]
        self._validate(batch)
        for start in range(0, len(batch), self.batch_size):
            chunk = batch[start : start + self.batch_size]
            await self.store.add_messages(self.store_session_id, chunk, user_id=self.user_id)

    def _validate(self, batch: Sequence[NewMessage]) -> None:
        """Every item within the store's limits before the first is written (field ``items[i]``)."""
        for start in range(0, len(batch), self.batch_size):
            try:
                validate_new_messages(batch[start : start + self.batch_size], self.limits)
            except ValidationError as exc:
                field = exc.field
                if field.startswith("messages["):
                    index, _, rest = field[len("messages[") :].partition("]")
                    field = f"items[{start + int(index)}]{rest}"
                raise ValidationError(field, exc.message) from None

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove and return the newest item; None when the session has none."""
        try:
            message = await self.store.pop_message(self.store_session_id, user_id=self.user_id)
        except SessionNotFound:
            return None
        return None if message is None else decode_item(message)

    async def clear_session(self) -> None:
        """Delete the session and every item in it (a later ``add_items`` starts afresh)."""
        await self.store.delete_session(self.store_session_id, user_id=self.user_id)
