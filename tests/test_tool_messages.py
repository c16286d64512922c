"""Tool-call messages (``tool_calls``, ``tool_call_id``, ``name`` in metadata; content as a list of
parts, or none) round-trip through every backend, the hybrid cache, the HTTP API and every export
format, by way of :mod:`sessionbench.store.integrations.chat`.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any

import pytest

from sessionbench.store import Message, SessionStore, ValidationError
from sessionbench.store.backends.hybrid import HybridStore
from sessionbench.store.integrations.chat import CONTENT_JSON, to_chat, to_new_message
from sessionbench.store.settings import Settings
from tests.optional_extras import require
from tests.test_api import ALICE, serve
from tests.test_export_pdf import pdf_text, squeeze

CALL_ARGS = json.dumps({"city": "Zürich", "unit": "°C"}, ensure_ascii=False)

#: A chat-completions conversation with tool calls, in the shapes clients send.
CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You answer with the lookup tool. ✓"},
    {"role": "user", "content": [{"type": "text", "text": "Weather in Zürich and Kyiv? Привіт"},
                                 {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": CALL_ARGS}},
        {"id": "call_2", "type": "function", "function": {"name": "lookup", "arguments": '{"city": "Kyiv"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "name": "lookup",
     "content": [{"type": "text", "text": "sunny, 21 °C"}]},
    {"role": "tool", "tool_call_id": "call_2", "name": "lookup", "content": "cloudy, 12 °C"},
    {"role": "assistant", "content": "", "refusal": None,
     "tool_calls": [{"id": "call_3", "type": "function", "function": {"name": "noop", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "call_3", "name": "noop", "content": [{"type": "text", "text": "ok"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "Zürich: sunny, 21 °C. Kyiv: cloudy, 12 °C."}]},
]  # fmt: skip


def texts_of(message: dict[str, Any]) -> list[str]:
    """The human-readable strings of a chat message: its text parts, tool names and arguments."""
    found: list[str] = []
    content = message.get("content")
    if isinstance(content, str) and content:
        found.append(content)
    for part in content if isinstance(content, list) else []:
        if part.get("type") == "text":
            found.append(part["text"])
    for call in message.get("tool_calls", []):
        found += [call["id"], call["function"]["name"], call["function"]["arguments"]]
    if "tool_call_id" in message:
        found += [message["tool_call_id"], message["name"]]
    return found


def appears(piece: str, text: str) -> bool:
    """Whether ``piece`` is in ``text`` as it is or as a JSON string body (quotes escaped, in metadata JSON)."""
    return piece in text or json.dumps(piece, ensure_ascii=False)[1:-1] in text


async def store_conversation(store: SessionStore) -> tuple[str, list[Message]]:
    sid = str(uuid.uuid4())
    stored = await store.add_messages(sid, [to_new_message(m) for m in CONVERSATION])
    return sid, stored


def test_the_encoding_is_what_the_store_keeps() -> None:
    """Tool fields go to metadata under their own names; non-text content is JSON text flagged in metadata."""
    call = to_new_message(CONVERSATION[2])
    assert (call.role, call.content) == ("assistant", "null")
    assert call.metadata == {"tool_calls": CONVERSATION[2]["tool_calls"], CONTENT_JSON: True}
    result = to_new_message(CONVERSATION[4])
    assert (result.role, result.content) == ("tool", "cloudy, 12 °C")
    assert result.metadata == {"tool_call_id": "call_2", "name": "lookup"}
    with pytest.raises(ValidationError):
        to_new_message({"role": "user", "content": "x", CONTENT_JSON: True})
    with pytest.raises(ValidationError):
        to_new_message({"role": "user", "content": [{1, 2}]})


async def test_tool_messages_round_trip_through_every_backend_and_the_cache(store: SessionStore) -> None:
    """Reading the conversation back (twice: from the cache where there is one) gives the same dicts."""
    sid, stored = await store_conversation(store)
    assert [to_chat(m) for m in stored] == CONVERSATION
    for _ in range(2):
        result = await store.read(sid, limit=len(CONVERSATION))
        assert [to_chat(m) for m in result.messages] == CONVERSATION
    if isinstance(store, HybridStore):
        assert result.cache == "hit"
        entry = await store.inspect(sid)
        assert [to_chat(m) for m in entry.messages(sid)] == CONVERSATION


async def test_tool_messages_round_trip_through_the_text_exports(store: SessionStore) -> None:
    """JSON Lines and CSV exports parse back to the same dicts; Markdown shows every text and the metadata JSON."""
    sid, stored = await store_conversation(store)
    jsonl = "".join([c async for c in store.export(sid, "jsonl")])
    assert [to_chat(Message.from_dict(json.loads(line))) for line in jsonl.splitlines()] == CONVERSATION

    rows = list(csv.DictReader(io.StringIO("".join([c async for c in store.export(sid, "csv")]), newline="")))
    back = [to_chat(Message.from_dict({**row, "metadata": json.loads(row["metadata"])})) for row in rows]
    assert back == CONVERSATION

    markdown = "".join([c async for c in store.export(sid, "markdown")])
    for m in stored:
        block = f"#{m.seq}\n\n{m.content}\n\n"
        after = markdown[markdown.index(block) + len(block) :]
        if m.metadata:  # a fenced JSON block (key order is the backend's: PostgreSQL's jsonb sorts keys)
            fence, encoded, closing = after.split("\n", 3)[:3]
            assert (fence, closing, json.loads(encoded)) == ("```json", "```", m.metadata)
    for message in CONVERSATION:
        assert all(appears(text, markdown) for text in texts_of(message))


async def test_tool_messages_are_all_in_the_pdf_export(store: SessionStore) -> None:
    """The PDF export shows every text part, tool name, call id and arguments of the conversation."""
    require("reportlab")
    pypdf = require("pypdf")
    sid, _ = await store_conversation(store)
    text = pdf_text(pypdf, b"".join([c async for c in store.export(sid, "pdf")]), sid)
    for message in CONVERSATION:
        for piece in texts_of(message):
            assert appears(squeeze(piece), text), piece


async def test_tool_messages_round_trip_through_the_http_api(database_url: str, redis_url: str) -> None:
    """POSTed as a turn and read back (miss, then hit) and exported over HTTP, the conversation is unchanged."""
    settings = Settings(backend="hybrid", database_url=database_url, redis_url=redis_url)
    async with serve(settings) as client:
        sid = str(uuid.uuid4())
        turn = []
        for message in CONVERSATION:
            new = to_new_message(message)
            turn.append({"role": new.role, "content": new.content, "metadata": dict(new.metadata or {})})
        r = await client.post(f"/v1/sessions/{sid}/messages", json={"messages": turn}, headers=ALICE)
        assert r.status_code == 201, r.text
        for expected_cache in ("miss", "hit"):
            r = await client.get(f"/v1/sessions/{sid}/messages", params={"limit": 20}, headers=ALICE)
            assert r.headers["x-cache"] == expected_cache
            assert [to_chat(Message.from_dict(m)) for m in r.json()["messages"]] == CONVERSATION
        r = await client.get(f"/v1/sessions/{sid}/export", params={"format": "jsonl"}, headers=ALICE)
        assert [to_chat(Message.from_dict(json.loads(line))) for line in r.text.splitlines()] == CONVERSATION
