"""Rendering of exported histories, shared by every backend: same bytes from each.

CSV, JSON Lines and Markdown are text chunks (``str``); PDF is ``bytes`` from
:mod:`sessionbench.store.integrations.pdf`, imported only when a PDF is asked for, so ``import sessionbench.store``
does not import the PDF library (the ``pdf`` extra).

Every format carries each message's role, seq, time and content; JSON Lines and CSV
carry its metadata as JSON, which parses back to what was stored, and Markdown and
PDF show it as compact JSON under the content (so tool calls in metadata are visible).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator

from sessionbench.store.models import Message

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
        text = f"**{message.role}** · {message.created_at.isoformat()} · #{message.seq}\n\n{message.content}\n\n"
        return text + _markdown_metadata(message.metadata) if message.metadata else text
    return json.dumps(message.to_dict(), ensure_ascii=False) + "\n"


_BACKTICKS = re.compile(r"`+")


def _markdown_metadata(metadata: dict[str, object]) -> str:
    """Metadata as a fenced ``json`` block, the fence longer than any backtick run inside."""
    encoded = json.dumps(metadata, ensure_ascii=False, separators=(",", ":"))
    fence = "`" * max(3, 1 + max((len(run) for run in _BACKTICKS.findall(encoded)), default=0))
    return f"{fence}json\n{encoded}\n{fence}\n\n"


def _csv_row(values: object) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)  # type: ignore[arg-type]
    return buf.getvalue()


def render(
    fmt: str, session_id: str, messages: AsyncIterator[Message], chunk_chars: int = 64 * 1024
) -> AsyncIterator[str] | AsyncIterator[bytes]:
    """Render messages (oldest first): text chunks of roughly ``chunk_chars`` characters,
    or, for ``pdf``, the document's bytes (see :func:`sessionbench.store.integrations.pdf.render_pdf`)."""
    if fmt == "pdf":
        from sessionbench.store.integrations.pdf import render_pdf  # the optional extra, imported on demand

        return render_pdf(session_id, messages)
    return _render_text(fmt, session_id, messages, chunk_chars)


async def _render_text(
    fmt: str, session_id: str, messages: AsyncIterator[Message], chunk_chars: int
) -> AsyncIterator[str]:
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
