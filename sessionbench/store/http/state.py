"""What the routes share: the :class:`Service` (through the ``Shared`` dependency) and :class:`RouteTable`.

:func:`sessionbench.store.http.app.create_app` makes one :class:`Service` per app and keeps it in
``app.state.service``; the lifespan sets ``store`` (and ``access_log``) once the store is
open and clears them when it closes, so a request outside that window is a 503.
Routes are module-level functions declared on a :class:`RouteTable`, which
``create_app`` installs on each app it builds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request
from prometheus_client import CollectorRegistry

from sessionbench.store.errors import StoreUnavailable
from sessionbench.store.http.accesslog import AccessLog
from sessionbench.store.http.settings import ServiceSettings
from sessionbench.store.protocol import SessionStore


class Service:
    """The backend's name, the settings, the metrics registry and, while the app runs, the store."""

    def __init__(self, backend: str, settings: ServiceSettings, registry: CollectorRegistry) -> None:
        self.backend = backend
        self.settings = settings
        self.registry = registry
        #: ``X-Cache`` of the routes whose answer never comes from the cache window.
        self.xcache_default = "hit" if backend == "memory" else "bypass"
        self.store: SessionStore | None = None
        self.access_log: AccessLog | None = None

    def require(self) -> SessionStore:
        """The open store, or StoreUnavailable (a 503) while the service starts or stops."""
        if self.store is None:
            raise StoreUnavailable("the service is starting or stopping")
        return self.store


async def shared_service(request: Request) -> Service:
    """The app's :class:`Service` (an ``async`` dependency, so it never takes a thread-pool hop)."""
    service: Service = request.app.state.service
    return service


Shared = Annotated[Service, Depends(shared_service)]

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


class RouteTable:
    """Routes declared once (``@table.get(path, **options)``), added to any app by :meth:`install`.

    The options are those of ``FastAPI.get``/``post``/``delete``.  :meth:`install` calls
    ``app.add_api_route`` for each, in declaration order, so the app's route table stays
    flat (every route an ``APIRoute`` carrying its template, which the edge middleware
    labels metrics with); ``include_router`` would nest them in newer FastAPI.
    """

    def __init__(self) -> None:
        self._routes: list[tuple[str, str, Callable[..., Any], dict[str, Any]]] = []

    def _add(self, method: str, path: str, options: dict[str, Any]) -> Callable[[Endpoint], Endpoint]:
        def declare(endpoint: Endpoint) -> Endpoint:
            self._routes.append((method, path, endpoint, options))
            return endpoint

        return declare

    def get(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self._add("GET", path, options)

    def post(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self._add("POST", path, options)

    def delete(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self._add("DELETE", path, options)

    def install(self, app: FastAPI) -> None:
        for method, path, endpoint, options in self._routes:
            app.add_api_route(path, endpoint, methods=[method], **options)
