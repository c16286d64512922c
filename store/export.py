"""Rendering of exported histories (CSV, JSON Lines, Markdown), shared by every backend: same bytes from each."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator

from store.models import Message

CSV_COLUMNS = ("session_id", "seq", "role", "content", "created_at", "metadata")


def header(fmt: str, session_id: str) -> str:
    if fmt == "csv":
        return _csv_row(CSV_COLUMNS)
    if fmt == "markdown":
        return f"# Session {session_id}\n\n"
    return ""


def render_message(fmt: str, message: Message) -> str:
    if fmt == "csv":
        d = message.to_dict()
        return _csv_row([str(d[c]) if c != "metadata" else json.dumps(d[c], ensure_ascii=False) for c in CSV_COLUMNS])
    if fmt == "markdown":
        return f"**{message.role}** · {message.created_at.isoformat()} · #{message.seq}\n\n{message.content}\n\n"
    return json.dumps(message.to_dict(), ensure_ascii=False) + "\n"


def _csv_row(values: object) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)  # type: ignore[arg-type]
    return buf.getvalue()


async def render(
    fmt: str, session_id: str, messages: AsyncIterator[Message], chunk_chars: int = 64 * 1024
) -> AsyncIterator[str]:
    """Render messages into text chunks of roughly ``chunk_chars`` characters."""
    parts = [header(fmt, session_id)]
    size = len(parts[0])
    async for message in messages:
        text = render_message(fmt, message)
        parts.append(text)
        size += len(text)
        if size >= chunk_chars:
            yield "".join(parts)
            parts, size = [], 0
    if parts and size:
        yield "".join(parts)
