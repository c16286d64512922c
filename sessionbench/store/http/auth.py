"""Bearer tokens -> user ids: :class:`Authenticator` and the ``current_user`` dependency.

``Authorization: Bearer <token>``; every configured token is compared in constant time.
In dev mode (local runs only) ``dev-<name>`` is user ``<name>``.  No valid token: 401
with ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sessionbench.store.http.errors import ApiError

DEV_TOKEN = re.compile(r"dev-([a-z0-9_-]{1,32})")


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
