"""The ``pdf`` export format: a session transcript drawn with ReportLab (the ``pdf`` extra).

Imported only when a PDF is asked for (:func:`sessionbench.store.export.render`), so ``import sessionbench.store``
never imports ReportLab.  ReportLab is BSD-licensed, pure Python, and needs only Pillow
and charset-normalizer.

Streaming.  ReportLab keeps the document in memory and writes it when it is finished
(fpdf2 does the same; neither writes pages progressively), so the PDF's bytes come
out only after the last message, in ``chunk_bytes`` slices.  What does stream is the
input: messages are drawn as the store's cursor yields them, ``batch`` at a time in a
worker thread, so the history is never held as a list and the event loop is not
blocked while pages are laid out.  Memory is about the finished PDF plus one batch.

Text.  Unicode through DejaVu Sans 2.37, shipped beside this module
(``fonts/DejaVuSans.ttf``, Bitstream Vera licence with DejaVu's public-domain changes:
``fonts/DejaVuSans-LICENSE.txt``; free to redistribute, renaming required only if the
font is modified).  It covers Latin, Greek, Cyrillic, Armenian, Georgian, Hebrew,
Arabic letters and many symbols; characters it has no glyph for (CJK, Korean, Thai,
Indic scripts, emoji) are drawn as its empty box but keep their code point in the text
layer, so copying or searching the PDF still finds them.  Lines are drawn left to
right in the order the text is stored, without shaping: right-to-left scripts (Hebrew,
Arabic) are not reordered for display and Arabic letters are not joined.  Tabs become
four spaces, other control characters U+FFFD.

Layout (A4): the title, then per message a header line ``role · created_at · #seq``
(as in the Markdown export), its content wrapped to the page width (long words are
broken), and its metadata as compact JSON, if any; a footer with the page number.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from importlib import resources
from io import BytesIO
from typing import Any

from reportlab.lib.colors import Color, HexColor
from reportlab.lib.pagesizes import A4
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

from sessionbench.store.errors import StoreError
from sessionbench.store.models import Message

FONT_NAME = "SessionstoreSans"
FONT_FILE = "DejaVuSans.ttf"
PAGE_WIDTH, PAGE_HEIGHT = A4
MARGIN = 48.0
TEXT_WIDTH = PAGE_WIDTH - 2 * MARGIN
BOTTOM = MARGIN + 14.0  # the footer sits below this

#: Serialises every use of the shared font object (its per-document subset state and the
#: code points added for missing glyphs) across the worker threads of concurrent exports.
_LOCK = threading.Lock()
_font: TTFont | None = None


@dataclass(frozen=True, slots=True)
class _Style:
    size: float
    leading: float
    color: Color
    indent: float = 0.0


TITLE = _Style(14, 20, HexColor("#111111"))
BODY = _Style(9.5, 12.5, HexColor("#111111"), 8)
META = _Style(7.5, 9.5, HexColor("#666666"), 8)
FOOTER = _Style(7, 9, HexColor("#888888"))
ROLE_COLORS = {
    "system": HexColor("#6b6b6b"),
    "user": HexColor("#1f5fbf"),
    "assistant": HexColor("#1e7d32"),
    "tool": HexColor("#a35200"),
}
GAP = 7.0  # between messages, points


class _WithUnicodeMap(TTFont):
    """ReportLab's TTFont whose ToUnicode maps also name code points beyond U+FFFF.

    ReportLab 5.1 writes such a code point as 5 or 6 hex digits, which is not valid
    (a ToUnicode destination is UTF-16BE), so text extraction loses emoji; after it has
    written a document's font objects, each such entry is rewritten as its surrogate pair.
    """

    def addObjects(self, doc: Any) -> None:
        super().addObjects(doc)
        for name, obj in list(doc.idToObject.items()):
            content = getattr(obj, "content", None)
            if str(name).startswith("toUnicodeCMap:") and isinstance(content, str):
                obj.content = _WIDE_ENTRY.sub(_utf16_entry, content)


_WIDE_ENTRY = re.compile(r"<([0-9A-F]{2})> <([0-9A-F]{5,6})>")


def _utf16_entry(match: re.Match[str]) -> str:
    code = int(match.group(2), 16) - 0x10000
    return f"<{match.group(1)}> <{0xD800 + (code >> 10):04X}{0xDC00 + (code & 0x3FF):04X}>"


def font() -> TTFont:
    """The bundled DejaVu Sans, registered with ReportLab once per process."""
    global _font
    with _LOCK:
        if _font is None:
            path = resources.files("sessionbench.store.integrations").joinpath("fonts", FONT_FILE)
            if not path.is_file():
                raise StoreError(
                    f"the PDF font sessionbench/store/integrations/fonts/{FONT_FILE} is missing from this installation"
                )
            with resources.as_file(path) as file:
                loaded = _WithUnicodeMap(FONT_NAME, str(file))
            pdfmetrics.registerFont(loaded)
            _font = loaded
        return _font


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_BREAKS = re.compile(r"\r\n|[\r\n\u2028\u2029\x85]")
_TOKENS = re.compile(r"\s+|\S+")


def paragraphs(text: str) -> list[str]:
    """``text`` as the lines it is drawn from: line breaks split it, tabs are four
    spaces and other control characters U+FFFD (so ``"a\\tb"`` is drawn ``"a    b"``)."""
    return [_CONTROL.sub("\ufffd", line.replace("\t", "    ")) for line in _BREAKS.split(text)]


class PdfTranscript:
    """One PDF being drawn: :meth:`add` messages in order, then :meth:`finish` for the bytes.

    Not thread-safe on its own; each call takes the module lock, so one transcript may be
    fed from successive worker threads (as :func:`render_pdf` does).
    """

    def __init__(self, session_id: str) -> None:
        self.font = font()
        self.session_id = session_id
        self.pages = 0
        self._buffer = BytesIO()
        self._canvas = Canvas(self._buffer, pagesize=A4, invariant=1, pageCompression=1)
        self._canvas.setTitle(f"Session {session_id}")
        self._canvas.setCreator("sessionstore")
        self._widths: dict[str, float] = {}
        self._y = PAGE_HEIGHT - MARGIN
        with _LOCK:
            self._line(f"Session {session_id}", TITLE)
            self._y -= GAP

    # -- public --------------------------------------------------------------------------
    def add(self, messages: Iterable[Message]) -> None:
        """Draw ``messages`` (oldest first) after those already drawn."""
        with _LOCK:
            for message in messages:
                self._message(message)

    def finish(self) -> bytes:
        """The finished PDF (call once)."""
        with _LOCK:
            self._footer()
            self._canvas.showPage()
            self._canvas.save()
        return self._buffer.getvalue()

    # -- layout --------------------------------------------------------------------------
    def _message(self, m: Message) -> None:
        header = _Style(8, 11, ROLE_COLORS.get(m.role, TITLE.color))
        if self._y - header.leading - BODY.leading < BOTTOM:
            self._new_page()  # keep a header with the first line of its message
        self._line(f"{m.role} · {m.created_at.isoformat()} · #{m.seq}", header)
        for line in self._wrap(m.content, BODY):
            self._line(line, BODY)
        if m.metadata:
            encoded = json.dumps(m.metadata, ensure_ascii=False, separators=(",", ":"))
            for line in self._wrap(f"metadata {encoded}", META):
                self._line(line, META)
        self._y -= GAP

    def _line(self, text: str, style: _Style) -> None:
        if self._y - style.leading < BOTTOM:
            self._new_page()
        self._y -= style.leading
        if text:
            self._cover(text)
            canvas = self._canvas
            canvas.setFillColor(style.color)
            canvas.setFont(FONT_NAME, style.size)
            canvas.drawString(MARGIN + style.indent, self._y, text)

    def _new_page(self) -> None:
        self._footer()
        self._canvas.showPage()
        self._y = PAGE_HEIGHT - MARGIN

    def _footer(self) -> None:
        self.pages += 1
        canvas = self._canvas
        canvas.setFillColor(FOOTER.color)
        canvas.setFont(FONT_NAME, FOOTER.size)
        canvas.drawCentredString(PAGE_WIDTH / 2, MARGIN, f"Session {self.session_id} · page {self.pages}")

    def _cover(self, text: str) -> None:
        """Give characters the font has no glyph for its empty box (glyph 0) *and* a code in
        the subset, so the text layer keeps them (ReportLab would write code 0 instead)."""
        glyphs = self.font.face.charToGlyph
        for code in {ord(c) for c in text}:
            if code not in glyphs:
                glyphs[code] = 0

    def _width(self, text: str, size: float) -> float:
        return float(pdfmetrics.stringWidth(text, FONT_NAME, size))

    def _wrap(self, text: str, style: _Style) -> list[str]:
        """Greedy word wrap to the text width; a word wider than a line is cut where it must."""
        width = TEXT_WIDTH - style.indent
        lines: list[str] = []
        for para in paragraphs(text):
            if self._width(para, style.size) <= width:
                lines.append(para)
                continue
            line, used = "", 0.0
            for token in _TOKENS.findall(para):
                w = self._width(token, style.size)
                if used + w <= width:
                    line, used = line + token, used + w
                    continue
                if token.isspace():
                    lines.append(line)
                    line, used = "", 0.0
                    continue
                if line:
                    lines.append(line.rstrip())
                    line, used = "", 0.0
                if w <= width:
                    line, used = token, w
                    continue
                for piece in self._cut(token, style.size, width):
                    if line:
                        lines.append(line)
                    line = piece
                used = self._width(line, style.size)
            lines.append(line.rstrip())
        return lines

    def _cut(self, word: str, size: float, width: float) -> list[str]:
        """``word`` in pieces no wider than ``width`` (at least one character each)."""
        pieces: list[str] = []
        start, used = 0, 0.0
        for i, ch in enumerate(word):
            w = self._widths.get(ch)
            if w is None:
                w = self._widths[ch] = self._width(ch, 1.0)
            if used + w * size > width and i > start:
                pieces.append(word[start:i])
                start, used = i, 0.0
            used += w * size
        pieces.append(word[start:])
        return pieces


async def render_pdf(
    session_id: str, messages: AsyncIterator[Message], *, batch: int = 250, chunk_bytes: int = 64 * 1024
) -> AsyncIterator[bytes]:
    """The PDF of ``messages`` (oldest first) in ``chunk_bytes`` slices, drawn ``batch``
    messages at a time in a worker thread; the bytes come once the last message is drawn."""
    transcript = await asyncio.to_thread(PdfTranscript, session_id)
    pending: list[Message] = []
    async for message in messages:
        pending.append(message)
        if len(pending) >= batch:
            await asyncio.to_thread(transcript.add, pending)
            pending = []
    if pending:
        await asyncio.to_thread(transcript.add, pending)
    data = await asyncio.to_thread(transcript.finish)
    for start in range(0, len(data), chunk_bytes):
        yield data[start : start + chunk_bytes]
