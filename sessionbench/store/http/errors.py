"""Error bodies and the exception handlers that produce them.

Every error is ``{"error": {"type", "message", "field"}}`` JSON: 401 ``unauthorized``,
404 ``not_found`` (also for another user's session), 405, 413 ``payload_too_large``,
422 ``invalid`` naming the field (request parsing and the store's
:class:`~sessionbench.store.errors.ValidationError` alike), 503 ``unavailable`` with ``Retry-After``.
The last-resort JSON 500 is written by :mod:`sessionbench.store.http.middleware`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from sessionbench.store.errors import SessionNotFound, StoreUnavailable, ValidationError
from sessionbench.store.http.schemas import dumps

log = logging.getLogger(__name__)

#: The ``error.type`` of an HTTP status raised by Starlette itself (anything else: ``error``).
STATUS_TYPES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                413: "payload_too_large", 415: "unsupported_media_type"}  # fmt: skip


class ApiError(Exception):
    """An error response raised from a route or dependency (``headers`` are sent with it)."""

    def __init__(self, status: int, type_: str, message: str, field: str | None = None, **headers: str) -> None:
        super().__init__(message)
        self.status, self.type, self.message, self.field, self.headers = status, type_, message, field, headers


def error_body(type_: str, message: str, field: str | None = None) -> bytes:
    return dumps({"error": {"type": type_, "message": message, "field": field}})


def error_response(
    status: int, type_: str, message: str, field: str | None = None, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(error_body(type_, message, field), status, headers=headers, media_type="application/json")


def field_of(loc: tuple[Any, ...] | list[Any]) -> str | None:
    """``("body", "messages", 0, "content")`` -> ``messages[0].content``; ``("query", "limit")`` -> ``limit``."""
    parts = list(loc[1:]) if loc and loc[0] in ("body", "query", "path", "header") else list(loc)
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or None


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.type, exc.message, exc.field, exc.headers)


async def _request_invalid(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    first = errors[0] if errors else {}
    field_name = field_of(tuple(first.get("loc", ())))
    if first.get("type") == "json_invalid":
        return error_response(422, "invalid", "the body is not valid JSON", "body")
    message = str(first.get("msg", "invalid input"))
    return error_response(422, "invalid", message, field_name or "body")


async def _store_invalid(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    return error_response(422, "invalid", exc.message, exc.field)


async def _not_found(_: Request, exc: Exception) -> Response:
    return error_response(404, "not_found", "session not found")


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # Starlette answers 400 for a body it cannot decode (e.g. not UTF-8); the API
        # documents 422 for every unusable body, naming the field.
        return error_response(422, "invalid", "the body is not valid JSON", "body")
    type_ = STATUS_TYPES.get(exc.status_code, "error")
    return error_response(exc.status_code, type_, str(exc.detail), None, exc.headers)


def install_error_handlers(app: FastAPI, *, retry_after: int) -> None:
    """Answer every error ``app`` raises in the JSON shape; 503s say ``Retry-After: retry_after``."""

    async def unavailable(_: Request, exc: Exception) -> Response:
        log.warning("store unavailable: %s", exc)
        return error_response(503, "unavailable", "the store is unavailable; retry later", None,
                              {"Retry-After": str(retry_after)})  # fmt: skip

    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(ValidationError, _store_invalid)
    app.add_exception_handler(SessionNotFound, _not_found)
    app.add_exception_handler(StoreUnavailable, unavailable)
    app.add_exception_handler(StarletteHTTPException, _http_error)
