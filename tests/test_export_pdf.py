"""The ``pdf`` export format: every message's text is in the PDF (read back with pypdf), on every
backend and over HTTP; ``import sessionbench.store`` does not import ReportLab; a server without the extra
answers a readable 422.  Skipped without the ``pdf`` extra and pypdf (failed under CI=true).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from typing import Any

import pytest

from sessionbench.store import NewMessage, SessionNotFound, SessionStore, ValidationError, open_store
from sessionbench.store.settings import Settings
from tests.optional_extras import require
from tests.test_api import ALICE, serve

# Text in many left-to-right scripts (right-to-left ones are drawn unordered: see store.integrations.pdf),
# a word longer than a line, blank lines, tabs, quotes and markup.
CONTENTS = [
    "Hello, how are you? 👋",
    "Привет мир — Γειά σου κόσμε — héllo wörld — ✓ ≠ ∑ ∞ — Բարեւ — გამარჯობა",
    "漢字とかな混じり — 한국어 — ไทย — हिन्दी",
    'a "quoted", comma-laden\nmulti-line message 🦒\n\n\tindented after a blank line',
    "x" * 3000,
    "<b>not markup</b> & (parentheses) \\ backslash [brackets] {braces} %percent",
    " ".join(f"word{i}" for i in range(400)),
]


@pytest.fixture
def pypdf() -> Any:
    """pypdf, to read the produced files (and ReportLab, to write them)."""
    require("reportlab")
    return require("pypdf")


def squeeze(text: str) -> str:
    """``text`` without any whitespace (line breaks in a PDF fall where the page width says)."""
    return "".join(text.split())


def pdf_text(pypdf: Any, data: bytes, session_id: str) -> str:
    """All text of a PDF export, whitespace removed, without the page footers."""
    reader = pypdf.PdfReader(io.BytesIO(data))
    pages = []
    for number, page in enumerate(reader.pages, start=1):
        text = squeeze(page.extract_text())
        footer = squeeze(f"Session {session_id} · page {number}")
        assert text.endswith(footer), f"page {number} has no footer"
        pages.append(text[: -len(footer)])
    return "".join(pages)


async def export_pdf(store: SessionStore, sid: str) -> tuple[bytes, int]:
    chunks = [chunk async for chunk in store.export(sid, "pdf")]
    assert chunks
    assert all(isinstance(c, bytes) for c in chunks)
    return b"".join(chunks), len(chunks)


async def test_pdf_export_holds_every_message(pypdf: Any, store: SessionStore) -> None:
    """The PDF of a session holds each message's header, content and metadata, in order, in any script."""
    sid = str(uuid.uuid4())
    turn = [NewMessage("user" if i % 2 == 0 else "assistant", c, {"n": i, "note": "ünïcode ✓"} if i % 3 == 0 else None)
            for i, c in enumerate(CONTENTS)]  # fmt: skip
    stored = await store.add_messages(sid, turn)
    data, _ = await export_pdf(store, sid)
    assert data.startswith(b"%PDF-")
    assert data.rstrip().endswith(b"%%EOF")
    text = pdf_text(pypdf, data, sid)
    assert text.startswith(squeeze(f"Session {sid}"))
    positions = []
    for m in stored:
        header = squeeze(f"{m.role} · {m.created_at.isoformat()} · #{m.seq}")
        assert header in text
        body = squeeze(m.content.replace("\t", "    "))
        assert body in text, f"message {m.seq} is missing"
        positions.append(text.index(header + body))
        if m.metadata:
            assert squeeze("metadata " + json.dumps(m.metadata, ensure_ascii=False, separators=(",", ":"))) in text
    assert positions == sorted(positions)


async def test_pdf_export_of_a_long_history_spans_pages_and_chunks(pypdf: Any, postgres_store: SessionStore) -> None:
    """2,000 messages from PostgreSQL's cursor make a many-page PDF, sent in several chunks, with every message."""
    sid = str(uuid.uuid4())
    for start in range(0, 2000, 100):
        await postgres_store.add_messages(
            sid,
            [
                NewMessage("user", f"message {i} — Привет ✓ {'lorem ipsum ' * (i % 9)}")
                for i in range(start, start + 100)
            ],
        )
    data, chunks = await export_pdf(postgres_store, sid)
    assert chunks >= 2
    reader = pypdf.PdfReader(io.BytesIO(data))
    assert len(reader.pages) > 50
    text = pdf_text(pypdf, data, sid)
    missing = [i for i in range(2000) if squeeze(f"#{i + 1}message {i} — Привет ✓") not in text]
    assert missing == []


async def test_pdf_export_is_deterministic_and_checked_like_the_other_formats(pypdf: Any, store: SessionStore) -> None:
    """Exports are byte-identical, an empty session gives a one-page PDF, and a missing or foreign one raises."""
    sid = str(uuid.uuid4())
    await store.add_message(sid, "user", "same bytes twice")
    first, _ = await export_pdf(store, sid)
    second, _ = await export_pdf(store, sid)
    assert first == second
    empty = await store.create_session()
    data, _ = await export_pdf(store, empty.session_id)
    assert len(pypdf.PdfReader(io.BytesIO(data)).pages) == 1
    with pytest.raises(SessionNotFound):
        await export_pdf(store, str(uuid.uuid4()))
    with pytest.raises(SessionNotFound):
        await anext(store.export(sid, "pdf", user_id="mallory"))


async def test_pdf_without_the_extra_is_refused_before_anything_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ReportLab, exporting as pdf raises ValidationError on the format field, naming the extra."""
    monkeypatch.setitem(sys.modules, "reportlab", None)  # what find_spec sees when it is not installed
    store = await open_store("memory")
    sid = str(uuid.uuid4())
    await store.add_message(sid, "user", "hi")
    with pytest.raises(ValidationError) as caught:
        await anext(store.export(sid, "pdf"))
    assert caught.value.field == "format"
    assert "sessionbench[pdf]" in caught.value.message
    assert "".join([c async for c in store.export(sid, "jsonl")])  # the text formats still work
    await store.close()


def test_import_store_does_not_import_the_pdf_library() -> None:
    """Importing the store, and exporting as text, never imports ReportLab (it is loaded for pdf only)."""
    code = (
        "import asyncio, sys, uuid\n"
        "import sessionbench.store as store, sessionbench.store.export, sessionbench.store.backends.memory\n"
        "import sessionbench.store.http\n"
        "async def main():\n"
        "    s = await store.open_store('memory')\n"
        "    sid = str(uuid.uuid4())\n"
        "    await s.add_message(sid, 'user', 'hi')\n"
        "    [c async for c in s.export(sid, 'markdown')]\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('reportlab', 'agents', 'pypdf')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


async def test_http_export_as_pdf(pypdf: Any, database_url: str, redis_url: str) -> None:
    """GET export?format=pdf answers application/pdf with a .pdf file name and every message's text."""
    settings = Settings(backend="hybrid", database_url=database_url, redis_url=redis_url)
    async with serve(settings) as client:
        sid = str(uuid.uuid4())
        turn = {"messages": [{"role": "user", "content": c} for c in CONTENTS[:4]]}
        assert (await client.post(f"/v1/sessions/{sid}/messages", json=turn, headers=ALICE)).status_code == 201
        r = await client.get(f"/v1/sessions/{sid}/export", params={"format": "pdf"}, headers=ALICE)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/pdf"
        assert r.headers["content-disposition"] == f'attachment; filename="session-{sid}.pdf"'
        text = pdf_text(pypdf, r.content, sid)
        assert all(squeeze(c.replace("\t", "    ")) in text for c in CONTENTS[:4])
        other = await client.get(f"/v1/sessions/{sid}/export", params={"format": "pdf"},
                                 headers={"Authorization": "Bearer dev-bob"})  # fmt: skip
        assert other.status_code == 404


async def test_http_pdf_without_the_extra_is_a_422(
    monkeypatch: pytest.MonkeyPatch, database_url: str, redis_url: str
) -> None:
    """A server without ReportLab answers ?format=pdf with a 422 whose field is format."""
    monkeypatch.setitem(sys.modules, "reportlab", None)
    settings = Settings(backend="hybrid", database_url=database_url, redis_url=redis_url)
    async with serve(settings) as client:
        sid = str(uuid.uuid4())
        await client.post(f"/v1/sessions/{sid}/messages", json={"role": "user", "content": "hi"}, headers=ALICE)
        r = await client.get(f"/v1/sessions/{sid}/export", params={"format": "pdf"}, headers=ALICE)
        assert r.status_code == 422
        assert r.json()["error"]["field"] == "format"
