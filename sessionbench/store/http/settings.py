"""What the service adds to the store's settings: tokens, dev auth, access log, limits, cleanup.

:meth:`ServiceSettings.from_env` reads the ``SESSIONSTORE_*`` variables; a bad value
raises :class:`~sessionbench.store.errors.ValidationError` naming the variable, before anything starts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sessionbench.store.errors import ValidationError

MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """What the service adds to the store's :class:`~sessionbench.store.settings.Settings`.

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
