"""The ``/v1`` routes: sessions, messages, search and export for the caller's own sessions.

Each route takes the caller (:data:`~sessionbench.store.http.auth.User`) and the shared
:class:`~sessionbench.store.http.state.Service`, calls the store once and encodes its ``to_dict()``
forms.  The store validates every value (raising ValidationError with a field name, a
422); the routes check only what HTTP alone knows: the body's shape (one message or
``messages``, not both), and the store's field names are renamed to the request's
(``messages[0].content`` -> ``content`` for a single message, ``query`` -> ``q``).

Every read answers ``X-Cache: hit|miss|bypass``: the hybrid's real result for message
reads (a Redis ``error`` is reported as ``bypass``), otherwise the backend's default.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Literal

from fastapi import Query
from fastapi.responses import Response, StreamingResponse

from sessionbench.store.errors import SessionNotFound, ValidationError
from sessionbench.store.http.auth import User
from sessionbench.store.http.schemas import (
    AppendIn,
    MessagesOut,
    SessionCreate,
    SessionOut,
    SessionsOut,
    TurnOut,
    error_responses,
    json_response,
)
from sessionbench.store.http.state import RouteTable, Shared
from sessionbench.store.models import CacheResult

MEDIA_TYPES = {
    "jsonl": "application/x-ndjson; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "markdown": "text/markdown; charset=utf-8",
    "pdf": "application/pdf",
}
EXTENSIONS = {"jsonl": "jsonl", "csv": "csv", "markdown": "md", "pdf": "pdf"}
XCACHE = {"X-Cache": {"description": "hit, miss or bypass", "schema": {"type": "string"}}}

table = RouteTable()


def _x_cache(result: CacheResult) -> dict[str, str]:
    """The ``X-Cache`` header of a message read: a Redis ``error`` is reported as ``bypass``."""
    return {"X-Cache": "bypass" if result == "error" else result}


def _renamed(exc: ValidationError, old_prefix: str, new_prefix: str) -> ValidationError:
    """``exc`` with the store's field name ``old_prefix...`` spelt as the request names it."""
    if exc.field == old_prefix.rstrip(".") or exc.field.startswith(old_prefix):
        suffix = exc.field[len(old_prefix) :] if exc.field.startswith(old_prefix) else ""
        return ValidationError(new_prefix + suffix if new_prefix else suffix, exc.message)
    return exc


@table.post("/v1/sessions", status_code=201, response_model=SessionOut, tags=["sessions"],
             responses={200: {"model": SessionOut, "description": "It already existed and is yours"},
                        **error_responses(401, 404, 413, 422, 503)})  # fmt: skip
async def create_session(user: User, shared: Shared, body: SessionCreate | None = None) -> Response:
    """Create a session (idempotent for its owner)."""
    s = shared.require()
    body = body or SessionCreate()
    if body.session_id is not None:
        with contextlib.suppress(SessionNotFound):
            existing = await s.get_session(body.session_id, user_id=user)
            return json_response(existing.to_dict(), 200)
    created = await s.create_session(body.session_id, user, body.metadata)
    return json_response(created.to_dict(), 201)


@table.get("/v1/sessions", response_model=SessionsOut, tags=["sessions"],
            responses={200: {"headers": XCACHE}, **error_responses(401, 422, 503)})  # fmt: skip
async def list_sessions(
    user: User,
    shared: Shared,
    limit: Annotated[int, Query(description="1 to the configured maximum")] = 20,
    before: Annotated[datetime | None, Query(description="Only sessions active before (ISO 8601, with zone)")] = None,
) -> Response:
    """The caller's sessions, most recently active first."""
    sessions = await shared.require().list_sessions(user, limit, before)
    return json_response({"sessions": [x.to_dict() for x in sessions]}, headers={"X-Cache": shared.xcache_default})


@table.get("/v1/sessions/{session_id}", response_model=SessionOut, tags=["sessions"],
            responses={200: {"headers": XCACHE}, **error_responses(401, 404, 422, 503)})  # fmt: skip
async def get_session(session_id: uuid.UUID, user: User, shared: Shared) -> Response:
    """One of the caller's sessions."""
    found = await shared.require().get_session(session_id, user_id=user)
    return json_response(found.to_dict(), headers={"X-Cache": shared.xcache_default})


@table.delete("/v1/sessions/{session_id}", status_code=204, response_class=Response, tags=["sessions"],
               responses=error_responses(401, 404, 422, 503))  # fmt: skip
async def delete_session(session_id: uuid.UUID, user: User, shared: Shared) -> Response:
    """Delete one of the caller's sessions, its messages and its cache entry."""
    if not await shared.require().delete_session(session_id, user_id=user):
        raise SessionNotFound(str(session_id))
    return Response(status_code=204)


@table.post("/v1/sessions/{session_id}/messages", status_code=201, response_model=TurnOut, tags=["messages"],
             responses={201: {"headers": XCACHE}, **error_responses(401, 404, 413, 422, 503)})  # fmt: skip
async def append(
    session_id: uuid.UUID,
    body: AppendIn,
    user: User,
    shared: Shared,
    window: Annotated[
        int | None,
        Query(description="Also return the last N messages after the append, as GET .../messages?limit=N "
                          "would (a chat turn's context in the same request); X-Cache says how it was read"),
    ] = None,
) -> Response:  # fmt: skip
    """Append one message or a whole turn (in order, atomically); creates the session if new."""
    s = shared.require()
    if body.messages is not None:
        if body.role is not None or body.content is not None or body.metadata is not None:
            raise ValidationError("messages", "give either role and content, or messages, not both")
        batch = [m.model_dump() for m in body.messages]
    else:
        if body.role is None:
            raise ValidationError("role", "is required (or give messages)")
        if body.content is None:
            raise ValidationError("content", "is required")
        batch = [{"role": body.role, "content": body.content, "metadata": body.metadata}]
    try:
        if window is None:
            stored, turn = await s.add_messages(session_id, batch, user_id=user), None
        else:
            turn = await s.add_and_read(session_id, batch, window, user_id=user)
            stored = turn.added
    except ValidationError as exc:
        if body.messages is None:
            raise _renamed(_renamed(exc, "messages[0].", ""), "limit", "window") from None
        raise _renamed(exc, "limit", "window") from None
    if shared.access_log is not None:
        shared.access_log.append(stored[0].session_id, [m.role for m in stored],
                                 [len(m.content.encode()) for m in stored])  # fmt: skip
    if turn is None or window is None:
        return json_response({"messages": [m.to_dict() for m in stored]}, 201)
    if shared.access_log is not None:
        shared.access_log.read(stored[0].session_id, window, None)
    return json_response({"messages": [m.to_dict() for m in stored], "window": [m.to_dict() for m in turn.window]},
                         201, headers=_x_cache(turn.cache))  # fmt: skip


@table.get("/v1/sessions/{session_id}/messages", response_model=MessagesOut, tags=["messages"],
            responses={200: {"headers": XCACHE}, **error_responses(401, 404, 422, 503)})  # fmt: skip
async def get_messages(
    session_id: uuid.UUID,
    user: User,
    shared: Shared,
    limit: Annotated[int, Query(description="How many of the latest messages (1 to the configured maximum)")] = 20,
    before_seq: Annotated[int | None, Query(description="Only messages with seq below this (paging back)")] = None,
) -> Response:
    """The last ``limit`` messages before ``before_seq``, oldest first."""
    read = await shared.require().read(session_id, limit, before_seq, user_id=user)
    if shared.access_log is not None:
        shared.access_log.read(str(session_id), limit, before_seq)
    return json_response({"messages": [m.to_dict() for m in read.messages]}, headers=_x_cache(read.cache))


@table.get("/v1/search", response_model=MessagesOut, tags=["messages"],
            responses={200: {"headers": XCACHE}, **error_responses(401, 422, 503)})  # fmt: skip
async def search(
    q: Annotated[str, Query(description="Full-text query (PostgreSQL websearch syntax)")],
    user: User,
    shared: Shared,
    limit: Annotated[int, Query(description="1 to the configured maximum")] = 20,
) -> Response:
    """Messages matching ``q`` in the caller's sessions, best first."""
    try:
        found = await shared.require().search(q, user, limit)
    except ValidationError as exc:
        raise _renamed(exc, "query", "q") from None
    return json_response({"messages": [m.to_dict() for m in found]}, headers={"X-Cache": shared.xcache_default})


@table.get("/v1/sessions/{session_id}/export", tags=["messages"], response_class=StreamingResponse,
            responses={200: {"description": "The whole history as text, or as a PDF document (format=pdf)",
                             "content": {t.split(";")[0]: {} for t in MEDIA_TYPES.values()}, "headers": XCACHE},
                       **error_responses(401, 404, 422, 503)})  # fmt: skip
async def export(
    session_id: uuid.UUID,
    user: User,
    shared: Shared,
    format: Literal["jsonl", "csv", "markdown", "pdf"] = "jsonl",
) -> Response:
    """Stream the whole history as JSON Lines, CSV or Markdown, or send it as a PDF document
    (format=pdf; 422 on the field format when the server lacks the pdf extra)."""
    chunks = shared.require().export(session_id, format, user_id=user).__aiter__()
    first: str | bytes
    try:
        first = await chunks.__anext__()  # validation and ownership are checked here
    except StopAsyncIteration:
        first = ""

    async def body() -> AsyncIterator[str | bytes]:
        yield first
        async for chunk in chunks:
            yield chunk

    name = f"session-{session_id}.{EXTENSIONS[format]}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "X-Cache": shared.xcache_default}
    return StreamingResponse(body(), media_type=MEDIA_TYPES[format], headers=headers)
