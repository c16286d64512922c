"""The HTTP service (FastAPI): :func:`create_app` around any backend, :class:`ServiceSettings`.

Importing :mod:`store` never imports this package (nor FastAPI, Starlette, pydantic or
uvicorn); ``sessionbench serve`` runs :func:`create_app` on uvicorn.  See
:mod:`sessionbench.store.http.app` for the routes and the error contract.
"""

from __future__ import annotations

from sessionbench.store.http.accesslog import AccessLog
from sessionbench.store.http.app import StoreFactory, create_app, openapi_document
from sessionbench.store.http.auth import Authenticator
from sessionbench.store.http.settings import ServiceSettings

__all__ = ["AccessLog", "Authenticator", "ServiceSettings", "StoreFactory", "create_app", "openapi_document"]
