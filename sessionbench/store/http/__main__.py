"""Print the OpenAPI document as committed (``python -m sessionbench.store.http > openapi.json`` in this folder)."""

from __future__ import annotations

from sessionbench.store.http.app import openapi_document

print(openapi_document(), end="")
