"""The HTTP service: the session store over JSON, per-user isolation, metrics, traces.

:func:`create_app` builds a FastAPI application around any backend; ``sessionbench serve``
runs it on uvicorn.  Routes (the Locust load test drives exactly these)::

    POST   /v1/sessions                          201 {session} (200 if it already was yours)
    GET    /v1/sessions?limit=20&before=<iso>    200 {"sessions": [...]}
    GET    /v1/sessions/{session_id}             200 {session}
    DELETE /v1/sessions/{session_id}             204
    POST   /v1/sessions/{session_id}/messages    201 {"messages": [...]}  one message or {"messages": [...]}
    GET    /v1/sessions/{session_id}/messages?limit=20&before_seq=N   200 {"messages": [...]}, X-Cache
    GET    /v1/search?q=...&limit=20             200 {"messages": [...]}  (the caller's sessions only)
    GET    /v1/sessions/{session_id}/export?format=jsonl|csv|markdown   streamed text
    GET    /healthz  /readyz  /metrics  /openapi.json

Every ``/v1`` read answers with ``X-Cache: hit|miss|bypass`` (the hybrid's real result;
``bypass`` for PostgreSQL alone and for reads that never touch the cache; ``hit`` for
memory).

Auth: ``Authorization: Bearer <token>``; tokens map to user ids (:class:`ServiceSettings`),
compared in constant time.  Dev mode (local runs only) accepts ``dev-<name>`` as user
``<name>``.  A user sees only their own sessions: another user's session answers 404
exactly like a missing one, on every route.

Errors are ``{"error": {"type", "message", "field"}}``: 401 without a valid token, 404,
422 naming the field, 413 for a body over ``max_body_bytes`` (checked on Content-Length,
then counted while the body streams in, before it is parsed), 503 with ``Retry-After``
when the durable store is unavailable, and a JSON 500 without internals for anything
else.  A write is acknowledged only after PostgreSQL committed it (the store's contract).

Opt-in access log (``SESSIONSTORE_ACCESS_LOG``): appends and reads in the
:mod:`store.accesslog` format, session ids hashed with a per-log secret salt (kept in
``<log>.key``), no contents, no user ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from opentelemetry import propagate
from opentelemetry.trace import SpanKind, StatusCode, Tracer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from store.accesslog import COLUMNS, MAGIC, ROLE_LETTERS, TraceEvent
from store.errors import SessionNotFound, StoreError, StoreUnavailable, ValidationError
from store.events import StoreEvents
from store.instrumentation.metrics import Metrics, PrometheusEvents
from store.instrumentation.wrapper import InstrumentedStore
from store.protocol import SessionStore
from store.settings import Settings

log = logging.getLogger("store.http.app")

#: Opens a store reporting to the given events sink; the app closes it on shutdown.
StoreFactory = Callable[[StoreEvents], Awaitable[SessionStore]]

DEV_TOKEN = re.compile(r"dev-([a-z0-9_-]{1,32})")
MEDIA_TYPES = {
    "jsonl": "application/x-ndjson; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "markdown": "text/markdown; charset=utf-8",
}
EXTENSIONS = {"jsonl": "jsonl", "csv": "csv", "markdown": "md"}
MAX_BODY_BYTES = 1024 * 1024


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """What the service adds to the store's :class:`~store.settings.Settings`.

    ``tokens`` maps bearer token -> user id.  ``dev_auth`` also accepts ``dev-<name>``
    (``[a-z0-9_-]{1,32}``) as user ``<name>``: for local runs only, never on a shared host.
    """

    tokens: Mapping[str, str] = field(default_factory=dict)
    dev_auth: bool = False
    access_log: str | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    retry_after: int = 1
    ready_timeout: float = 2.0
    cleanup_interval: float = 0.0
    cleanup_older_than: float = 30 * 86400.0
    cleanup_batch_size: int = 1000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServiceSettings:
        """``SESSIONSTORE_TOKENS="tok1=alice,tok2=bob"`` and/or ``SESSIONSTORE_TOKENS_FILE``
        (a JSON object token -> user), ``SESSIONSTORE_DEV_AUTH=1``, ``SESSIONSTORE_ACCESS_LOG``,
        ``SESSIONSTORE_MAX_BODY_BYTES``; ``SESSIONSTORE_CLEANUP_INTERVAL`` (seconds, 0 = off) and
        ``SESSIONSTORE_CLEANUP_OLDER_THAN`` (seconds) for the optional periodic cleanup."""
        env = os.environ if environ is None else environ
        tokens: dict[str, str] = {}
        path = env.get("SESSIONSTORE_TOKENS_FILE", "").strip()
        if path:
            try:
                loaded = json.loads(Path(path).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ValidationError(
                    "SESSIONSTORE_TOKENS_FILE", f"cannot read a JSON object from {path}: {exc}"
                ) from None
            if not isinstance(loaded, dict):
                raise ValidationError("SESSIONSTORE_TOKENS_FILE", "must hold a JSON object token -> user id")
            tokens.update({str(k): v for k, v in loaded.items()})
        for item in filter(None, (p.strip() for p in env.get("SESSIONSTORE_TOKENS", "").split(","))):
            token, sep, user = item.partition("=")
            if not sep:
                raise ValidationError("SESSIONSTORE_TOKENS", "must be token=user pairs separated by commas")
            tokens[token.strip()] = user.strip()
        for token, user in tokens.items():
            if not token or not isinstance(user, str) or not user or len(user) > 128:
                raise ValidationError("SESSIONSTORE_TOKENS", "every token and user id must be a non-empty string")
        max_body = env.get("SESSIONSTORE_MAX_BODY_BYTES", "").strip()
        try:
            max_body_bytes = int(max_body) if max_body else MAX_BODY_BYTES
        except ValueError:
            raise ValidationError("SESSIONSTORE_MAX_BODY_BYTES", "must be an integer") from None
        cleanup: dict[str, float] = {}
        for name, key in (("cleanup_interval", "SESSIONSTORE_CLEANUP_INTERVAL"),
                          ("cleanup_older_than", "SESSIONSTORE_CLEANUP_OLDER_THAN")):  # fmt: skip
            raw = env.get(key, "").strip()
            if raw:
                try:
                    cleanup[name] = float(raw)
                except ValueError:
                    raise ValidationError(key, "must be a number of seconds") from None
                if not cleanup[name] >= 0:
                    raise ValidationError(key, "must be a non-negative number of seconds")
        return cls(
            tokens=tokens,
            dev_auth=env.get("SESSIONSTORE_DEV_AUTH", "").strip().lower() in {"1", "true", "yes", "on"},
            access_log=env.get("SESSIONSTORE_ACCESS_LOG") or None,
            max_body_bytes=max_body_bytes,
            cleanup_interval=cleanup.get("cleanup_interval", 0.0),
            cleanup_older_than=cleanup.get("cleanup_older_than", 30 * 86400.0),
        )

    @property
    def auth_mode(self) -> str:
        """A one-line description for start-up banners."""
        parts = [f"{len(self.tokens)} bearer token(s)"] if self.tokens else []
        if self.dev_auth:
            parts.append("dev tokens 'dev-<name>' (local use only)")
        return " + ".join(parts) or "none configured: every /v1 request answers 401"


class Authenticator:
    """Bearer token -> user id; every configured token is compared, in constant time."""

    def __init__(self, tokens: Mapping[str, str], *, dev: bool) -> None:
        self._tokens = [(token.encode(), user) for token, user in tokens.items()]
        self._dev = dev

    def user_for(self, token: str) -> str | None:
        raw = token.encode()
        user = None
        for known, owner in self._tokens:
            if hmac.compare_digest(known, raw):
                user = owner
        if user is None and self._dev:
            match = DEV_TOKEN.fullmatch(token)
            if match:
                user = match.group(1)
        return user


_bearer = HTTPBearer(auto_error=False, description="A configured token, or dev-<name> in dev mode.")


async def current_user(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]
) -> str:
    """The user id of the request's bearer token, or 401."""
    auth: Authenticator = request.app.state.authenticator
    user = auth.user_for(credentials.credentials) if credentials is not None else None
    if user is None:
        raise ApiError(401, "unauthorized", "a valid bearer token is required", None, **{"WWW-Authenticate": "Bearer"})
    return user


User = Annotated[str, Security(current_user)]


# ----------------------------------------------------------------------------- access log


class AccessLog:
    """Appends and reads in the :mod:`store.accesslog` format; nothing that identifies anyone.

    Session ids are replaced by a 16-hex-digit keyed BLAKE2b of the id; the key (a random
    per-log salt) and the log's time origin live in ``<path>.key`` (mode 0600), so a
    restarted service keeps hashing the same session to the same key.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        key_path = self.path.with_name(self.path.name + ".key")
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        if fresh:
            self._salt, self._origin = secrets.token_bytes(16), time.time()
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"salt": self._salt.hex(), "origin": self._origin}, fh)
        else:
            try:
                key = json.loads(key_path.read_text(encoding="utf-8"))
                self._salt, self._origin = bytes.fromhex(key["salt"]), float(key["origin"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ValidationError(
                    "SESSIONSTORE_ACCESS_LOG", f"{self.path} exists but its key file {key_path} is unusable ({exc})"
                ) from None
        self._last = 0.0 if fresh else _last_time(self.path)
        self._fh = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - lives as long as the app
        if fresh:
            self._fh.write(MAGIC + "\n" + "\t".join(COLUMNS) + "\n")

    def session_key(self, session_id: str) -> str:
        return hashlib.blake2b(session_id.encode(), key=self._salt, digest_size=8).hexdigest()

    def _t(self) -> float:
        self._last = max(self._last, time.time() - self._origin)
        return self._last

    def append(self, session_id: str, roles: list[str], sizes: list[int]) -> None:
        letters = "".join(ROLE_LETTERS[r] for r in roles)
        self._write(TraceEvent(self._t(), self.session_key(session_id), "append", letters, tuple(sizes)))

    def read(self, session_id: str, limit: int, before: int | None) -> None:
        self._write(TraceEvent(self._t(), self.session_key(session_id), "read", limit=limit, before=before))

    def _write(self, event: TraceEvent) -> None:
        try:
            self._fh.write(event.to_line() + "\n")
        except OSError:  # a full disk must not fail requests
            log.exception("access log write failed")

    def close(self) -> None:
        self._fh.close()


def _last_time(path: Path) -> float:
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - 4096))
        for line in reversed(fh.read().decode("utf-8", "replace").splitlines()):
            with contextlib.suppress(ValueError):
                return float(line.split("\t", 1)[0])
    return 0.0


# ----------------------------------------------------------------------------- schemas

Role = Literal["system", "user", "assistant", "tool"]


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


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {401: "Missing or unknown bearer token", 404: "No such session (or not yours)",
            413: "Body too large", 422: "Invalid input; error.field names it",
            503: "Store unavailable; retry after Retry-After seconds"}  # fmt: skip
    return {code: {"model": ErrorOut, "description": text[code]} for code in codes}


# ----------------------------------------------------------------------------- errors


class ApiError(Exception):
    def __init__(self, status: int, type_: str, message: str, field: str | None = None, **headers: str) -> None:
        super().__init__(message)
        self.status, self.type, self.message, self.field, self.headers = status, type_, message, field, headers


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _error_body(type_: str, message: str, field: str | None = None) -> bytes:
    return _dumps({"error": {"type": type_, "message": message, "field": field}})


def _error(
    status: int, type_: str, message: str, field: str | None = None, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(_error_body(type_, message, field), status, headers=headers, media_type="application/json")


_STATUS_TYPES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                 413: "payload_too_large", 415: "unsupported_media_type"}  # fmt: skip


def _field_of(loc: tuple[Any, ...] | list[Any]) -> str | None:
    """``("body", "messages", 0, "content")`` -> ``messages[0].content``; ``("query", "limit")`` -> ``limit``."""
    parts = list(loc[1:]) if loc and loc[0] in ("body", "query", "path", "header") else list(loc)
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or None


def _install_error_handlers(app: FastAPI, settings: ServiceSettings) -> None:
    async def api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error(exc.status, exc.type, exc.message, exc.field, exc.headers)

    async def request_invalid(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        first = errors[0] if errors else {}
        field_name = _field_of(tuple(first.get("loc", ())))
        if first.get("type") == "json_invalid":
            return _error(422, "invalid", "the body is not valid JSON", "body")
        message = str(first.get("msg", "invalid input"))
        return _error(422, "invalid", message, field_name or "body")

    async def store_invalid(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ValidationError)
        return _error(422, "invalid", exc.message, exc.field)

    async def not_found(_: Request, exc: Exception) -> Response:
        return _error(404, "not_found", "session not found")

    async def unavailable(_: Request, exc: Exception) -> Response:
        log.warning("store unavailable: %s", exc)
        return _error(503, "unavailable", "the store is unavailable; retry later", None,
                      {"Retry-After": str(settings.retry_after)})  # fmt: skip

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400:
            # Starlette answers 400 for a body it cannot decode (e.g. not UTF-8); the API
            # documents 422 for every unusable body, naming the field.
            return _error(422, "invalid", "the body is not valid JSON", "body")
        type_ = _STATUS_TYPES.get(exc.status_code, "error")
        return _error(exc.status_code, type_, str(exc.detail), None, exc.headers)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, request_invalid)
    app.add_exception_handler(ValidationError, store_invalid)
    app.add_exception_handler(SessionNotFound, not_found)
    app.add_exception_handler(StoreUnavailable, unavailable)
    app.add_exception_handler(StarletteHTTPException, http_error)


# ----------------------------------------------------------------------------- the edge


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
    body = _error_body(type_, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 413:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ----------------------------------------------------------------------------- the app


async def _periodic_cleanup(store: SessionStore, cfg: ServiceSettings) -> None:
    """Delete inactive sessions every ``cleanup_interval`` s (±10% jitter) until cancelled.

    Safe on several instances at once: each batch locks its rows with SKIP LOCKED.
    """
    while True:
        await asyncio.sleep(cfg.cleanup_interval * (0.9 + 0.2 * secrets.randbelow(1001) / 1000))
        try:
            deleted = await store.cleanup_inactive(cfg.cleanup_older_than, cfg.cleanup_batch_size)
        except StoreError as exc:
            log.warning("periodic cleanup failed: %s", exc)
        else:
            log.info("periodic cleanup deleted %d inactive sessions", deleted)


class _Service:
    """What the routes share; filled in by the lifespan."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.store: InstrumentedStore | None = None
        self.access_log: AccessLog | None = None

    def require(self) -> InstrumentedStore:
        if self.store is None:
            raise StoreUnavailable("the service is starting or stopping")
        return self.store


def _json(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(_dumps(payload), status, headers=headers, media_type="application/json")


def _renamed(exc: ValidationError, old_prefix: str, new_prefix: str) -> ValidationError:
    if exc.field == old_prefix.rstrip(".") or exc.field.startswith(old_prefix):
        suffix = exc.field[len(old_prefix) :] if exc.field.startswith(old_prefix) else ""
        return ValidationError(new_prefix + suffix if new_prefix else suffix, exc.message)
    return exc


def create_app(
    store: Settings | StoreFactory,
    *,
    registry: CollectorRegistry | None = None,
    service: ServiceSettings | None = None,
    tracer: Tracer | None = None,
    backend: str | None = None,
) -> FastAPI:
    """The service.  ``store`` is a :class:`Settings` (``open_store`` opens it at start-up)
    or a factory ``(events) -> awaitable store`` (then ``backend`` names it).  Metrics go
    to ``registry`` (a new one, with process metrics, when None); ``tracer`` is None
    unless tracing is configured (:func:`store.instrumentation.telemetry.configure_tracing`).
    """
    factory: StoreFactory
    if isinstance(store, Settings):
        settings = store
        backend = settings.backend

        async def open_settings(events: StoreEvents) -> SessionStore:
            from store.factory import open_store

            return await open_store(settings, events=events)

        factory = open_settings

    else:
        factory = store
        if backend is None:
            raise ValidationError("backend", "name the backend the factory opens")
    cfg = service or ServiceSettings()
    if registry is None:
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
    metrics = Metrics.for_registry(registry)
    state = _Service(backend)
    xcache_default = "hit" if backend == "memory" else "bypass"

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        cleaner: asyncio.Task[None] | None = None
        inner = await factory(PrometheusEvents(metrics, state.backend))
        try:
            if state.backend == "hybrid":
                metrics.prime_cache(state.backend)
            state.store = InstrumentedStore(inner, backend=state.backend, registry=registry, tracer=tracer)
            state.access_log = AccessLog(cfg.access_log) if cfg.access_log else None
            if cfg.cleanup_interval > 0:
                cleaner = asyncio.create_task(_periodic_cleanup(state.store, cfg), name="sessionstore-cleanup")
            yield
        finally:
            if cleaner is not None:
                cleaner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await cleaner
            state.store = None
            if state.access_log is not None:
                state.access_log.close()
            await inner.close()

    version = _version()
    app = FastAPI(
        title="sessionstore",
        version=version,
        summary="Chat sessions over HTTP: memory, PostgreSQL or Redis + PostgreSQL behind one API.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.authenticator = Authenticator(cfg.tokens, dev=cfg.dev_auth)
    _install_error_handlers(app, cfg)
    app.add_middleware(_Edge, fastapi=app, metrics=metrics, tracer=tracer, max_body=cfg.max_body_bytes)
    xcache = {"X-Cache": {"description": "hit, miss or bypass", "schema": {"type": "string"}}}

    @app.post("/v1/sessions", status_code=201, response_model=SessionOut, tags=["sessions"],
              responses={200: {"model": SessionOut, "description": "It already existed and is yours"},
                         **_errors(401, 404, 413, 422, 503)})  # fmt: skip
    async def create_session(user: User, body: SessionCreate | None = None) -> Response:
        """Create a session (idempotent for its owner)."""
        s = state.require()
        body = body or SessionCreate()
        if body.session_id is not None:
            with contextlib.suppress(SessionNotFound):
                existing = await s.get_session(body.session_id, user_id=user)
                return _json(existing.to_dict(), 200)
        created = await s.create_session(body.session_id, user, body.metadata)
        return _json(created.to_dict(), 201)

    @app.get("/v1/sessions", response_model=SessionsOut, tags=["sessions"],
             responses={200: {"headers": xcache}, **_errors(401, 422, 503)})  # fmt: skip
    async def list_sessions(
        user: User,
        limit: Annotated[int, Query(description="1 to the configured maximum")] = 20,
        before: Annotated[
            datetime | None, Query(description="Only sessions active before (ISO 8601, with zone)")
        ] = None,
    ) -> Response:
        """The caller's sessions, most recently active first."""
        sessions = await state.require().list_sessions(user, limit, before)
        return _json({"sessions": [x.to_dict() for x in sessions]}, headers={"X-Cache": xcache_default})

    @app.get("/v1/sessions/{session_id}", response_model=SessionOut, tags=["sessions"],
             responses={200: {"headers": xcache}, **_errors(401, 404, 422, 503)})  # fmt: skip
    async def get_session(session_id: uuid.UUID, user: User) -> Response:
        """One of the caller's sessions."""
        found = await state.require().get_session(session_id, user_id=user)
        return _json(found.to_dict(), headers={"X-Cache": xcache_default})

    @app.delete("/v1/sessions/{session_id}", status_code=204, response_class=Response, tags=["sessions"],
                responses=_errors(401, 404, 422, 503))  # fmt: skip
    async def delete_session(session_id: uuid.UUID, user: User) -> Response:
        """Delete one of the caller's sessions, its messages and its cache entry."""
        if not await state.require().delete_session(session_id, user_id=user):
            raise SessionNotFound(str(session_id))
        return Response(status_code=204)

    @app.post("/v1/sessions/{session_id}/messages", status_code=201, response_model=MessagesOut, tags=["messages"],
              responses=_errors(401, 404, 413, 422, 503))  # fmt: skip
    async def append(session_id: uuid.UUID, body: AppendIn, user: User) -> Response:
        """Append one message or a whole turn (in order, atomically); creates the session if new."""
        s = state.require()
        if body.messages is not None:
            if body.role is not None or body.content is not None or body.metadata is not None:
                raise ValidationError("messages", "give either role and content, or messages, not both")
            batch = [m.model_dump() for m in body.messages]
            stored = await s.add_messages(session_id, batch, user_id=user)
        else:
            if body.role is None:
                raise ValidationError("role", "is required (or give messages)")
            if body.content is None:
                raise ValidationError("content", "is required")
            try:
                stored = [await s.add_message(session_id, body.role, body.content, body.metadata, user_id=user)]
            except ValidationError as exc:
                raise _renamed(exc, "messages[0].", "") from None
        if state.access_log is not None:
            state.access_log.append(stored[0].session_id, [m.role for m in stored],
                                    [len(m.content.encode()) for m in stored])  # fmt: skip
        return _json({"messages": [m.to_dict() for m in stored]}, 201)

    @app.get("/v1/sessions/{session_id}/messages", response_model=MessagesOut, tags=["messages"],
             responses={200: {"headers": xcache}, **_errors(401, 404, 422, 503)})  # fmt: skip
    async def get_messages(
        session_id: uuid.UUID,
        user: User,
        limit: Annotated[int, Query(description="How many of the latest messages (1 to the configured maximum)")] = 20,
        before_seq: Annotated[int | None, Query(description="Only messages with seq below this (paging back)")] = None,
    ) -> Response:
        """The last ``limit`` messages before ``before_seq``, oldest first."""
        read = await state.require().read(session_id, limit, before_seq, user_id=user)
        if state.access_log is not None:
            state.access_log.read(str(session_id), limit, before_seq)
        return _json({"messages": [m.to_dict() for m in read.messages]},
                     headers={"X-Cache": "bypass" if read.cache == "error" else read.cache})  # fmt: skip

    @app.get("/v1/search", response_model=MessagesOut, tags=["messages"],
             responses={200: {"headers": xcache}, **_errors(401, 422, 503)})  # fmt: skip
    async def search(
        q: Annotated[str, Query(description="Full-text query (PostgreSQL websearch syntax)")],
        user: User,
        limit: Annotated[int, Query(description="1 to the configured maximum")] = 20,
    ) -> Response:
        """Messages matching ``q`` in the caller's sessions, best first."""
        try:
            found = await state.require().search(q, user, limit)
        except ValidationError as exc:
            raise _renamed(exc, "query", "q") from None
        return _json({"messages": [m.to_dict() for m in found]}, headers={"X-Cache": xcache_default})

    @app.get("/v1/sessions/{session_id}/export", tags=["messages"], response_class=StreamingResponse,
             responses={200: {"description": "The whole history as text",
                              "content": {t.split(";")[0]: {} for t in MEDIA_TYPES.values()}, "headers": xcache},
                        **_errors(401, 404, 422, 503)})  # fmt: skip
    async def export(
        session_id: uuid.UUID, user: User, format: Literal["jsonl", "csv", "markdown"] = "jsonl"
    ) -> Response:
        """Stream the whole history as JSON Lines, CSV or Markdown."""
        chunks = state.require().export(session_id, format, user_id=user).__aiter__()
        try:
            first = await chunks.__anext__()  # validation and ownership are checked here
        except StopAsyncIteration:
            first = ""

        async def body() -> AsyncIterator[str]:
            yield first
            async for chunk in chunks:
                yield chunk

        name = f"session-{session_id}.{EXTENSIONS[format]}"
        headers = {"Content-Disposition": f'attachment; filename="{name}"', "X-Cache": xcache_default}
        return StreamingResponse(body(), media_type=MEDIA_TYPES[format], headers=headers)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up (says nothing about the servers)."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=ReadyOut, tags=["operations"],
             responses={503: {"model": ReadyOut, "description": "PostgreSQL unreachable"}})  # fmt: skip
    async def readyz() -> Response:
        """PostgreSQL reachable: 200 (``degraded`` when only Redis is down); otherwise 503."""
        checks: dict[str, str] = (
            {"store": "starting"} if state.store is None else await state.store.health(cfg.ready_timeout)
        )
        if checks.get("postgres", "ok") != "ok" or "store" in checks:
            status, code = "unavailable", 503
        elif checks.get("redis", "ok") != "ok":
            status, code = "degraded", 200
        else:
            status, code = "ok", 200
        headers = {"Retry-After": str(cfg.retry_after)} if code == 503 else None
        return _json({"status": status, "backend": state.backend, "checks": checks}, code, headers)

    @app.get("/metrics", tags=["operations"], response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})  # fmt: skip
    async def prometheus_metrics() -> Response:
        """Prometheus metrics of the store and the service."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _version() -> str:
    try:
        return importlib_metadata.version("sessionbench")
    except importlib_metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"


def openapi_document() -> str:
    """The OpenAPI schema as committed in ``store/http/openapi.json`` (sorted, indented)."""
    app = create_app(Settings(backend="memory"), registry=CollectorRegistry())
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":  # python -m store.http.app > store/http/openapi.json
    print(openapi_document(), end="")
