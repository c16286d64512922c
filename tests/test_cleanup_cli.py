"""`sessionbench cleanup` deletes inactive sessions from cron and rejects bad durations."""

from __future__ import annotations

import argparse
import asyncio
import uuid

import asyncpg
import pytest

from sessionbench.bench.cli import main
from sessionbench.bench.service.cleanup import parse_duration
from sessionbench.store import open_store


def test_parse_duration_units() -> None:
    """Durations accept s/m/h/d/w suffixes and plain seconds."""
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration("90m") == 5400
    assert parse_duration("3600") == 3600
    with pytest.raises(argparse.ArgumentTypeError, match="invalid duration"):
        parse_duration("soon")


def test_bad_duration_exits_nonzero_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed --older-than is a usage error (exit 2) with a readable message."""
    with pytest.raises(SystemExit) as exc:
        main(["cleanup", "--older-than", "soon"])
    assert exc.value.code == 2
    assert "invalid duration" in capsys.readouterr().err


async def test_cleanup_deletes_only_old_sessions(database_url: str, redis_url: str) -> None:
    """Sessions idle past the threshold are deleted with their cache entries; recent ones stay."""
    store = await open_store("hybrid", database_url=database_url, redis_url=redis_url)
    old, new = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        await store.add_message(old, "user", "old conversation")
        await store.add_message(new, "user", "new conversation")
        await store.get_messages(old)  # populate the cache entry for the old session
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "UPDATE chat_sessions SET last_message_at = now() - interval '40 days' WHERE session_id = $1",
                uuid.UUID(old),
            )
        finally:
            await conn.close()
    finally:
        await store.close()
    code = await asyncio.to_thread(
        main,
        ["cleanup", "--older-than", "30d", "--database-url", database_url, "--redis-url", redis_url],
    )
    assert code == 0
    store = await open_store("hybrid", database_url=database_url, redis_url=redis_url)
    try:
        keys = await store.redis.keys(f"*{old}*")  # type: ignore[attr-defined]
        assert keys == []
        assert await store.get_messages(old) == []
        assert [m.content for m in await store.get_messages(new)] == ["new conversation"]
    finally:
        await store.close()
