"""The wire format: request and response bodies (pydantic, for validation and OpenAPI) and JSON encoding.

Responses are built from the store's own ``to_dict()`` forms and encoded by
:func:`dumps`; the ``*Out`` models document them (and the fuzz test checks that they
match).  Request models validate only the body's shape and types; the store checks the
values (sizes, NULs, limits) once, for every caller.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from sessionbench.store.models import Role


class SessionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session_id: uuid.UUID | None = Field(default=None, description="Client-chosen id; a new UUID when absent.")
    metadata: dict[str, Any] | None = None


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    content: str
    metadata: dict[str, Any] | None = None


class AppendIn(BaseModel):
    """Either one message (``role``, ``content``, ``metadata``) or ``messages``: a whole turn."""

    model_config = ConfigDict(extra="forbid")
    role: Role | None = None
    content: str | None = None
    metadata: dict[str, Any] | None = None
    messages: list[MessageIn] | None = None


class SessionOut(BaseModel):
    session_id: str
    user_id: str | None
    created_at: datetime
    last_message_at: datetime
    last_seq: int
    metadata: dict[str, Any]
    is_active: bool


class MessageOut(BaseModel):
    session_id: str
    seq: int
    role: str
    content: str
    created_at: datetime
    metadata: dict[str, Any]


class SessionsOut(BaseModel):
    sessions: list[SessionOut]


class MessagesOut(BaseModel):
    messages: list[MessageOut]


class TurnOut(BaseModel):
    """An append with ``?window=N``: the appended ``messages`` and the last N after them."""

    messages: list[MessageOut]
    window: list[MessageOut] | None = None


class ErrorDetail(BaseModel):
    type: str
    message: str
    field: str | None = None


class ErrorOut(BaseModel):
    error: ErrorDetail


class ReadyOut(BaseModel):
    status: Literal["ok", "degraded", "unavailable"]
    backend: str
    checks: dict[str, str]


_ERROR_TEXT = {401: "Missing or unknown bearer token", 404: "No such session (or not yours)",
               413: "Body too large", 422: "Invalid input; error.field names it",
               503: "Store unavailable; retry after Retry-After seconds"}  # fmt: skip


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entries of these error statuses (each an :class:`ErrorOut`)."""
    return {code: {"model": ErrorOut, "description": _ERROR_TEXT[code]} for code in codes}


def dumps(payload: Any) -> bytes:
    """Compact UTF-8 JSON (``json.loads`` gives ``payload`` back)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(dumps(payload), status, headers=headers, media_type="application/json")
