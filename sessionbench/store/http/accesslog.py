"""The service's opt-in access log (``SESSIONSTORE_ACCESS_LOG``): appends and reads, nothing personal.

The file format is :mod:`sessionbench.store.accesslog` (what workloads, the runner and the advisor
read back with :func:`sessionbench.store.accesslog.read_trace`); this module only writes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import time
from pathlib import Path

from sessionbench.store.accesslog import ROLE_LETTERS, TraceEvent, TraceHeader
from sessionbench.store.errors import ValidationError

log = logging.getLogger(__name__)


class AccessLog:
    """Appends and reads in the :mod:`sessionbench.store.accesslog` format; nothing that identifies anyone.

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
            self._fh.write(TraceHeader(unit="s", compression=1.0).lines())  # wall-clock seconds: traffic time

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
