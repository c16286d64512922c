"""``sessionbench cleanup --older-than 30d``: delete inactive sessions, for cron.

Deletes sessions whose last message is older than the given age, in batches (each
batch one short transaction with ``FOR UPDATE SKIP LOCKED``, so no long locks), and
drops their cache entries when the backend has a cache.  Reads ``DATABASE_URL`` /
``REDIS_URL`` (or ``--database-url`` / ``--redis-url``); it never starts servers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from typing import Any

from sessionbench.store import open_store

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(text: str) -> float:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"3600s"`` or plain seconds -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 30d, 12h, 90m or 3600s")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


async def _cleanup(args: argparse.Namespace) -> int:
    database_url = args.database_url or os.environ.get("DATABASE_URL")
    redis_url = args.redis_url or os.environ.get("REDIS_URL")
    if not database_url:
        raise ValueError("cleanup needs DATABASE_URL (or --database-url)")
    backend = "hybrid" if redis_url else "postgres"
    store: Any = await open_store(backend, database_url=database_url, redis_url=redis_url)
    try:
        t0 = time.perf_counter()
        deleted = await store.cleanup_inactive(args.older_than, batch_size=args.batch_size)
        elapsed = time.perf_counter() - t0
    finally:
        await store.close()
    print(f"deleted {deleted} sessions inactive for more than {args.older_than:.0f} s in {elapsed:.2f} s ({backend})")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "cleanup",
        help="delete sessions inactive for longer than --older-than (database and cache), for cron",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--older-than", type=parse_duration, required=True, help="age, e.g. 30d, 12h, 90m, 3600s")
    p.add_argument("--batch-size", type=int, default=1000, help="sessions deleted per transaction (default 1000)")
    p.add_argument("--database-url", help="PostgreSQL URL (default: $DATABASE_URL)")
    p.add_argument("--redis-url", help="Redis URL to drop cache entries too (default: $REDIS_URL)")
    p.set_defaults(func=lambda args: asyncio.run(_cleanup(args)))


if __name__ == "__main__":  # pragma: no cover
    from sessionbench.bench.cli import main

    sys.exit(main(["cleanup", *sys.argv[1:]]))
