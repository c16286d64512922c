"""Resource bounds: the memory backend, Redis memory and cleanup stay bounded (figures: bench/reliability/bounds.py)."""

from __future__ import annotations

import asyncio
import re
import shlex
import uuid
from pathlib import Path

from sessionbench.bench.cli import build_parser
from sessionbench.bench.reliability.bounds import MIB, cleanup_bound, memory_bound, redis_bound
from sessionbench.store import MemorySettings, open_store
from sessionbench.store.backends.memory import MemoryStore

ROOT = Path(__file__).resolve().parent.parent


async def test_memory_backend_stays_within_its_bounds_over_a_long_run() -> None:
    """20,000 sessions into a store bounded at 2,000 keep at most 2,000 (and 50 messages each); RSS stops growing."""
    figures = await memory_bound(
        max_sessions=2000, sessions=20_000, turns=2, max_messages=50, long_session_messages=300
    )
    assert figures.peak_sessions == 2000
    assert figures.peak_messages_per_session == 50
    # without the bound, the other 18,000 sessions (4 messages of 200 B each) would add tens of MiB
    growth = figures.rss_end - figures.rss_at_bound
    assert growth < max(8 * MIB, 0.5 * (figures.rss_at_bound - figures.rss_start)), figures


async def test_memory_backend_drops_idle_sessions() -> None:
    """Sessions idle longer than ``idle_ttl`` are dropped when the store is next written to."""
    store = MemoryStore(settings=MemorySettings(idle_ttl=0.05))
    for _ in range(50):
        await store.add_message(str(uuid.uuid4()), "user", "soon idle")
    assert len(store) == 50
    await asyncio.sleep(0.1)
    await store.add_message(str(uuid.uuid4()), "user", "fresh")
    assert len(store) == 1


async def test_redis_memory_is_window_times_active_sessions(database_url: str, redis_url: str) -> None:
    """Redis holds ``cache.size`` messages per cached session: memory matches the prediction and ignores history."""
    figures = await redis_bound(database_url, redis_url, sessions=300, window=10, history=40, extra_turns=10)
    assert figures.max_cached_messages == 10
    assert abs(figures.growth_with_history) < 0.05, figures  # 20 more messages per session, same memory
    assert 0.9 < figures.ratio < 1.6, figures  # MEMORY USAGE of the keys vs window * sessions * mean entry
    assert figures.used_after_appends < 2 * figures.predicted_bytes, figures


async def test_inactive_cache_windows_expire(database_url: str, redis_url: str) -> None:
    """A window not read or written for ``cache.ttl`` leaves Redis, so only active sessions cost memory."""
    store = await open_store("hybrid", database_url=database_url, redis_url=redis_url, ttl=0.3)
    try:
        sids = [str(uuid.uuid4()) for _ in range(20)]
        for sid in sids:
            await store.add_message(sid, "user", "hello")
            await store.get_messages(sid)  # populate
        redis = store.redis  # type: ignore[attr-defined]
        assert len(await redis.keys("sb:{*")) == 40
        await asyncio.sleep(0.6)
        assert await redis.exists(*(f"sb:{{{sid}}}:{part}" for sid in sids for part in "mh")) == 0
    finally:
        await store.close()


async def test_cleanup_runs_in_short_batches_without_blocking_appends(database_url: str, redis_url: str) -> None:
    """Cleaning 20,000 inactive sessions takes many short transactions while appends to an active one stay fast."""
    figures = await cleanup_bound(database_url, redis_url, sessions=20_000, batch_size=1000)
    assert figures.deleted == 20_000
    assert figures.batches >= 20
    assert figures.longest_batch_seconds < 1.0, figures
    assert figures.appends_during > 0, figures
    assert figures.append_max_during < 0.5, figures
    assert figures.active_session_intact


def test_readme_crontab_line_is_a_valid_cleanup_command() -> None:
    """The crontab line in the README's Reliability section parses as ``sessionbench cleanup --older-than 30d``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    cron = re.search(r"```cron\n(.+?)\n```", text, re.S)
    assert cron is not None
    fields = shlex.split(cron.group(1).split(">>")[0])
    assert all(re.fullmatch(r"[\d*/,-]+", f) for f in fields[:5])
    command = [f for f in fields[5:] if "=" not in f]
    assert command[0].endswith("/sessionbench")
    args = build_parser().parse_args(command[1:])
    assert args.command == "cleanup"
    assert args.older_than == 30 * 86400
