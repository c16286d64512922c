"""``python -m store.http > store/http/openapi.json``: print the OpenAPI document as committed."""

from __future__ import annotations

from store.http.app import openapi_document

print(openapi_document(), end="")
