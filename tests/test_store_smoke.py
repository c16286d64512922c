"""A first check that every backend stores and returns a conversation in order."""

from __future__ import annotations

import uuid

from sessionbench.store import SessionStore


async def test_append_then_read_last_n_in_order(store: SessionStore) -> None:
    """Five appends then a read of the last three give seqs 3, 4, 5 oldest first."""
    sid = str(uuid.uuid4())
    for i in range(5):
        await store.add_message(sid, "user" if i % 2 == 0 else "assistant", f"message {i}")
    got = await store.get_messages(sid, limit=3)
    assert [m.seq for m in got] == [3, 4, 5]
    assert [m.content for m in got] == ["message 2", "message 3", "message 4"]
