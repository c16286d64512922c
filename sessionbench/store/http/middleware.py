"""The service's edge: one pure ASGI middleware for the body limit, request metrics and server spans.

Each HTTP request is observed once in ``sessionstore_http_request_duration_seconds
{route, method, status}`` (route = the matched template, ``unmatched`` otherwise; 499
when the client left before a response started) and, with a tracer, runs in one SERVER
span continuing the caller's W3C trace context.  A body over ``max_body`` bytes is a
413 (on Content-Length, or counted while it streams in, before it is parsed); anything
that escapes the app becomes a JSON 500 without internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from fastapi import FastAPI
from opentelemetry import propagate
from opentelemetry.trace import SpanKind, StatusCode, Tracer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sessionbench.store.http.errors import error_body
from sessionbench.store.instrumentation.metrics import Metrics

log = logging.getLogger(__name__)


class _Edge:
    """Pure ASGI middleware: body limit, request metrics and server spans, last-resort 500.

    The route label is the matched route's template, never the raw path.
    """

    def __init__(
        self, app: ASGIApp, *, fastapi: FastAPI, metrics: Metrics, tracer: Tracer | None, max_body: int
    ) -> None:
        self.app = app
        self.fastapi = fastapi
        self.metrics = metrics
        self.tracer = tracer
        self.max_body = max_body
        self._children: dict[tuple[str, str, int], Any] = {}

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:  # short-circuited before routing: match it ourselves
            for candidate in self.fastapi.router.routes:
                match, _ = candidate.matches(scope)
                if match is not Match.NONE:
                    route = candidate
                    break
        return str(getattr(route, "path", None) or "unmatched")

    def _observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.metrics.http_request_duration.labels(route, method, str(status))
        child.observe(seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = {"status": 500, "started": False}
        method = scope["method"]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
            await send(message)

        span_cm: Any = contextlib.nullcontext()
        if self.tracer is not None:
            carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
                       if k in (b"traceparent", b"tracestate", b"baggage")}  # fmt: skip
            span_cm = self.tracer.start_as_current_span(
                method, context=propagate.extract(carrier), kind=SpanKind.SERVER,
                attributes={"http.request.method": method}, record_exception=False, set_status_on_exception=False,
            )  # fmt: skip
        with span_cm as span:
            try:
                declared = _content_length(scope)
                if declared is not None and declared > self.max_body:
                    await _send_error(send_wrapper, 413, "payload_too_large", f"the body exceeds {self.max_body} bytes")
                else:
                    await self.app(scope, self._limited(receive), send_wrapper)
            except asyncio.CancelledError:
                if not state["started"]:
                    state["status"] = 499  # the client went away first (nginx's convention)
                raise
            except Exception:
                # The route template, never the raw path: paths carry session ids.
                log.exception("unhandled error in %s %s", method, self._route(scope))
                if not state["started"]:
                    await _send_error(send_wrapper, 500, "internal", "internal error")
            finally:
                route = self._route(scope)
                status = int(state["status"])
                self._observe(route, method, status, time.perf_counter() - start)
                if span is not None:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(StatusCode.ERROR)

    def _limited(self, receive: Receive) -> Receive:
        seen = 0
        limit = self.max_body

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # FastAPI re-raises HTTPExceptions from body reading: answered as 413 JSON
                    raise StarletteHTTPException(413, f"the body exceeds {limit} bytes")
            return message

        return counting


def _content_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_error(send: Send, status: int, type_: str, message: str) -> None:
    body = error_body(type_, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 413:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
