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
    GET    /v1/sessions/{session_id}/export?format=jsonl|csv|markdown|pdf   streamed text (pdf: a document)
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
:mod:`sessionbench.store.accesslog` format, session ids hashed with a per-log secret salt (kept in
``<log>.key``), no contents, no user ids.

Where each part lives: :mod:`~sessionbench.store.http.settings`, :mod:`~sessionbench.store.http.auth`,
:mod:`~sessionbench.store.http.accesslog`, :mod:`~sessionbench.store.http.schemas`,
:mod:`~sessionbench.store.http.errors`, :mod:`~sessionbench.store.http.middleware`,
:mod:`~sessionbench.store.http.routes`, :mod:`~sessionbench.store.http.probes`,
:mod:`~sessionbench.store.http.maintenance`; this module wires them together.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import metadata as importlib_metadata

from fastapi import FastAPI
from opentelemetry.trace import Tracer
from prometheus_client import CollectorRegistry, ProcessCollector

from sessionbench.store.errors import ValidationError
from sessionbench.store.events import StoreEvents
from sessionbench.store.http import probes, routes
from sessionbench.store.http.accesslog import AccessLog
from sessionbench.store.http.auth import Authenticator
from sessionbench.store.http.errors import install_error_handlers
from sessionbench.store.http.maintenance import periodic_cleanup
from sessionbench.store.http.middleware import _Edge
from sessionbench.store.http.settings import ServiceSettings
from sessionbench.store.http.state import Service
from sessionbench.store.instrumentation.metrics import Metrics, PrometheusEvents
from sessionbench.store.instrumentation.wrapper import InstrumentedStore
from sessionbench.store.protocol import SessionStore
from sessionbench.store.settings import Settings
from sessionbench.store.tasks import stop_task

#: Opens a store reporting to the given events sink; the app closes it on shutdown.
StoreFactory = Callable[[StoreEvents], Awaitable[SessionStore]]


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
    unless tracing is configured (:func:`sessionbench.store.instrumentation.telemetry.configure_tracing`).
    """
    factory: StoreFactory
    if isinstance(store, Settings):
        settings = store
        backend = settings.backend

        async def open_settings(events: StoreEvents) -> SessionStore:
            from sessionbench.store.factory import open_store

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
    shared = Service(backend, cfg, registry)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        cleaner: asyncio.Task[None] | None = None
        inner = await factory(PrometheusEvents(metrics, shared.backend))
        try:
            if shared.backend == "hybrid":
                metrics.prime_cache(shared.backend)
            shared.store = InstrumentedStore(inner, backend=shared.backend, registry=registry, tracer=tracer)
            shared.access_log = AccessLog(cfg.access_log) if cfg.access_log else None
            if cfg.cleanup_interval > 0:
                cleaner = asyncio.create_task(periodic_cleanup(shared.store, cfg), name="sessionstore-cleanup")
            yield
        finally:
            await stop_task(cleaner)  # cancels again if redis-py swallows a cancellation
            shared.store = None
            if shared.access_log is not None:
                shared.access_log.close()
            await inner.close()

    app = FastAPI(
        title="sessionstore",
        version=_version(),
        summary="Chat sessions over HTTP: memory, PostgreSQL or Redis + PostgreSQL behind one API.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = shared
    app.state.authenticator = Authenticator(cfg.tokens, dev=cfg.dev_auth)
    install_error_handlers(app, retry_after=cfg.retry_after)
    app.add_middleware(_Edge, fastapi=app, metrics=metrics, tracer=tracer, max_body=cfg.max_body_bytes)
    routes.table.install(app)
    probes.table.install(app)
    return app


def _version() -> str:
    try:
        return importlib_metadata.version("sessionbench")
    except importlib_metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"


def openapi_document() -> str:
    """The OpenAPI schema as committed in ``sessionbench/store/http/openapi.json`` (sorted, indented)."""
    app = create_app(Settings(backend="memory"), registry=CollectorRegistry())
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if (
    __name__ == "__main__"
):  # the older spelling of `python -m sessionbench.store.http` (sessionbench/store/http/__main__.py)
    print(openapi_document(), end="")
