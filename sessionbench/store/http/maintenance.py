"""Optional periodic cleanup of inactive sessions (``SESSIONSTORE_CLEANUP_INTERVAL`` seconds, 0 = off)."""

from __future__ import annotations

import asyncio
import logging
import secrets

from sessionbench.store.errors import StoreError
from sessionbench.store.http.settings import ServiceSettings
from sessionbench.store.protocol import SessionStore

log = logging.getLogger(__name__)


async def periodic_cleanup(store: SessionStore, cfg: ServiceSettings) -> None:
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
