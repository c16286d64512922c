"""The store contract (ARCHITECTURE.md, "The hybrid contract"), run unchanged against every backend.

Every test takes the parametrised ``store`` fixture, so each one runs on the memory,
postgres and hybrid backends against real servers.  Tests state behaviour only through
the public API; nothing here knows which backend it is talking to.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from sessionbench.store import Message, NewMessage, SessionNotFound, SessionStore, ValidationError

MESSAGE_KEYS_ORDER = ("session_id", "seq", "role", "content", "created_at", "metadata")
MESSAGE_KEYS = set(MESSAGE_KEYS_ORDER)


def new_sid() -> str:
    return str(uuid.uuid4())


async def fill(store: SessionStore, sid: str, n: int, *, user_id: str | None = None, size: int = 0) -> None:
    """Append ``n`` messages ``"message <i>"`` (padded to ``size`` characters) in turns of up to 50."""
    pad = "x" * size
    for start in range(0, n, 50):
        batch = [
            NewMessage("user" if i % 2 == 0 else "assistant", f"message {i} {pad}".rstrip())
            for i in range(start, min(n, start + 50))
        ]
        await store.add_messages(sid, batch, user_id=user_id)


async def collect(chunks: AsyncIterator[str]) -> list[str]:
    return [chunk async for chunk in chunks]


async def read_all(store: SessionStore, sid: str) -> list[Message]:
    return await store.get_messages(sid, limit=1000)


# ----------------------------------------------------------------------------- ordering and paging


async def test_messages_get_seq_1_to_n_in_append_order(store: SessionStore) -> None:
    """Appends get seq 1..n and reads return them oldest first with the content appended."""
    sid = new_sid()
    appended = [await store.add_message(sid, "user", f"line {i}") for i in range(30)]
    assert [m.seq for m in appended] == list(range(1, 31))
    got = await read_all(store, sid)
    assert [m.seq for m in got] == list(range(1, 31))
    assert [m.content for m in got] == [f"line {i}" for i in range(30)]
    assert got == appended


async def test_get_messages_returns_the_last_n(store: SessionStore) -> None:
    """``limit`` selects the newest messages, still oldest first; a larger limit returns all."""
    sid = new_sid()
    await fill(store, sid, 25)
    assert [m.seq for m in await store.get_messages(sid)] == list(range(6, 26))
    assert [m.seq for m in await store.get_messages(sid, limit=1)] == [25]
    assert [m.seq for m in await store.get_messages(sid, limit=7)] == list(range(19, 26))
    assert [m.seq for m in await store.get_messages(sid, limit=100)] == list(range(1, 26))


async def test_repeated_reads_return_equal_messages(store: SessionStore) -> None:
    """A second read of the same window (a cache hit where there is a cache) equals the first."""
    sid = new_sid()
    await fill(store, sid, 12)
    first = await store.get_messages(sid, limit=10)
    second = await store.get_messages(sid, limit=10)
    assert first == second
    assert [m.to_dict() for m in first] == [m.to_dict() for m in second]


async def test_paging_with_before_seq_walks_the_whole_history(store: SessionStore) -> None:
    """Pages of 20 fetched with ``before_seq`` concatenate to exactly the full history."""
    sid = new_sid()
    await fill(store, sid, 137)
    full = await read_all(store, sid)
    assert [m.seq for m in full] == list(range(1, 138))

    pages: list[list[Message]] = []
    page = await store.get_messages(sid, limit=20)
    for _ in range(20):  # 137 / 20 -> 7 pages; the bound only stops a broken store looping
        if not page:
            break
        pages.append(page)
        page = await store.get_messages(sid, limit=20, before_seq=page[0].seq)
    assert [len(p) for p in pages] == [20, 20, 20, 20, 20, 20, 17]
    assert [m for p in reversed(pages) for m in p] == full


async def test_before_seq_bounds(store: SessionStore) -> None:
    """``before_seq`` is exclusive; 1 yields nothing and a value past the end yields the last page."""
    sid = new_sid()
    await fill(store, sid, 30)
    assert [m.seq for m in await store.get_messages(sid, limit=5, before_seq=10)] == [5, 6, 7, 8, 9]
    assert [m.seq for m in await store.get_messages(sid, limit=50, before_seq=4)] == [1, 2, 3]
    assert await store.get_messages(sid, limit=5, before_seq=1) == []
    assert [m.seq for m in await store.get_messages(sid, limit=3, before_seq=10_000)] == [28, 29, 30]


async def test_unknown_session_reads_as_empty(store: SessionStore) -> None:
    """Reading a session that was never written returns ``[]`` rather than raising."""
    assert await store.get_messages(new_sid()) == []
    assert await store.get_messages(new_sid(), limit=5, before_seq=3) == []


async def test_session_id_accepts_uuid_objects_and_canonicalises(store: SessionStore) -> None:
    """A ``uuid.UUID`` or an upper-case id addresses the same session, reported in canonical form."""
    sid = uuid.uuid4()
    await store.add_message(sid, "user", "by object")
    await store.add_message(str(sid).upper(), "user", "by upper-case string")
    got = await read_all(store, str(sid))
    assert [m.content for m in got] == ["by object", "by upper-case string"]
    assert {m.session_id for m in got} == {str(sid)}


# ----------------------------------------------------------------------------- sessions


async def test_create_session_is_idempotent(store: SessionStore) -> None:
    """Creating an existing session returns it unchanged: same owner, metadata and created_at."""
    sid = new_sid()
    first = await store.create_session(sid, user_id="alice", metadata={"title": "first"})
    again = await store.create_session(sid, user_id="alice", metadata={"title": "second"})
    anonymous = await store.create_session(sid)
    assert first == again == anonymous
    assert again.metadata == {"title": "first"}
    assert (await store.get_session(sid)).metadata == {"title": "first"}


async def test_create_session_without_id_makes_a_new_uuid(store: SessionStore) -> None:
    """Without a ``session_id`` each create makes a fresh, empty session with a canonical UUID."""
    one = await store.create_session(user_id="carol")
    two = await store.create_session(user_id="carol")
    assert one.session_id != two.session_id
    assert str(uuid.UUID(one.session_id)) == one.session_id
    assert (one.user_id, one.last_seq, one.metadata, one.is_active) == ("carol", 0, {}, True)
    assert await store.get_messages(one.session_id) == []


async def test_concurrent_creates_of_one_session_all_succeed(store: SessionStore) -> None:
    """Racing creates of the same id all return the one session (none fails on the race)."""
    await asyncio.gather(*(store.get_messages(new_sid()) for _ in range(12)))  # open pooled connections
    for _ in range(20):  # the race is lost in about a third of rounds on PostgreSQL without the fix
        sid = new_sid()
        results = await asyncio.gather(*(store.create_session(sid, user_id="dora") for _ in range(12)))
        assert {s.session_id for s in results} == {sid}
        assert len({s.created_at for s in results}) == 1


async def test_append_to_unknown_session_creates_it(store: SessionStore) -> None:
    """The first append creates the session, owned by the appending user."""
    sid = new_sid()
    msg = await store.add_message(sid, "user", "hello", user_id="erin")
    assert msg.seq == 1
    session = await store.get_session(sid)
    assert (session.session_id, session.user_id, session.last_seq, session.is_active) == (sid, "erin", 1, True)
    assert session.metadata == {}


async def test_get_session_tracks_last_seq_and_timestamps(store: SessionStore) -> None:
    """``last_seq`` counts appends and ``last_message_at`` (tz-aware) advances while ``created_at`` stays."""
    sid = new_sid()
    created = await store.create_session(sid)
    assert created.last_seq == 0
    assert created.created_at.utcoffset() is not None
    assert created.last_message_at.utcoffset() is not None
    assert created.created_at <= created.last_message_at

    await asyncio.sleep(0.01)
    await store.add_messages(sid, [NewMessage("user", "q"), NewMessage("assistant", "a")])
    after_one = await store.get_session(sid)
    assert after_one.last_seq == 2
    assert after_one.created_at == created.created_at
    assert after_one.last_message_at > created.last_message_at

    await asyncio.sleep(0.01)
    await store.add_message(sid, "user", "again")
    after_two = await store.get_session(sid)
    assert after_two.last_seq == 3
    assert after_two.last_message_at > after_one.last_message_at


async def test_get_session_of_unknown_id_raises(store: SessionStore) -> None:
    """``get_session`` of an id never written raises SessionNotFound naming that id."""
    sid = new_sid()
    with pytest.raises(SessionNotFound) as caught:
        await store.get_session(sid)
    assert caught.value.session_id == sid


async def test_list_sessions_most_recent_first_with_limit_and_before(store: SessionStore) -> None:
    """A user's sessions come most recently active first; ``limit`` and ``before`` page through them."""
    sids = [new_sid() for _ in range(5)]
    for sid in sids:
        await store.add_message(sid, "user", "hi", user_id="frank")
        await asyncio.sleep(0.002)
    await store.add_message(sids[1], "user", "bumped to the top", user_id="frank")

    expected = [sids[1], sids[4], sids[3], sids[2], sids[0]]
    listed = await store.list_sessions("frank")
    assert [s.session_id for s in listed] == expected
    assert [s.session_id for s in await store.list_sessions("frank", limit=2)] == expected[:2]

    older = await store.list_sessions("frank", limit=10, before=listed[1].last_message_at)
    assert [s.session_id for s in older] == expected[2:]


async def test_list_sessions_is_per_user(store: SessionStore) -> None:
    """``list_sessions`` returns only that user's sessions; ``None`` lists the sessions without a user."""
    mine, theirs, nobody = new_sid(), new_sid(), new_sid()
    await store.add_message(mine, "user", "x", user_id="gina")
    await store.add_message(theirs, "user", "x", user_id="hank")
    await store.add_message(nobody, "user", "x")
    assert [s.session_id for s in await store.list_sessions("gina")] == [mine]
    assert [s.session_id for s in await store.list_sessions("hank")] == [theirs]
    assert [s.session_id for s in await store.list_sessions(None)] == [nobody]
    assert await store.list_sessions("ivan") == []


# ----------------------------------------------------------------------------- appends


async def test_add_messages_appends_a_turn_in_order(store: SessionStore) -> None:
    """A batch gets consecutive seqs in the order given and is returned as stored."""
    sid = new_sid()
    system = await store.add_message(sid, "system", "be brief")
    turn = await store.add_messages(
        sid,
        [
            NewMessage("user", "what is 2+2?"),
            {"role": "assistant", "content": "4", "metadata": {"tokens": 1}},
            NewMessage("tool", "calculator: 4", {"tool": "calc"}),
        ],
    )
    assert [(m.seq, m.role, m.content) for m in turn] == [
        (2, "user", "what is 2+2?"),
        (3, "assistant", "4"),
        (4, "tool", "calculator: 4"),
    ]
    assert [m.metadata for m in turn] == [{}, {"tokens": 1}, {"tool": "calc"}]
    assert await read_all(store, sid) == [system, *turn]


async def test_concurrent_turns_stay_contiguous(store: SessionStore) -> None:
    """Concurrent turns on one session never interleave: each turn's messages get adjacent seqs."""
    sid = new_sid()

    async def writer(w: int) -> None:
        for t in range(8):
            await store.add_messages(
                sid, [NewMessage("user", f"w{w} t{t} question"), NewMessage("assistant", f"w{w} t{t} answer")]
            )

    await asyncio.gather(*(writer(w) for w in range(4)))
    got = await read_all(store, sid)
    assert [m.seq for m in got] == list(range(1, 65))
    for question, answer in zip(got[::2], got[1::2], strict=True):
        assert answer.content == question.content.replace("question", "answer")
    for w in range(4):
        mine = [m.content for m in got if m.content.startswith(f"w{w} ") and m.role == "user"]
        assert mine == [f"w{w} t{t} question" for t in range(8)]


async def test_add_and_read_is_an_append_then_a_read(store: SessionStore) -> None:
    """``add_and_read`` stores the messages as ``add_messages`` would and returns the window ``read``
    gives right after: cold (the first turn), warm (the window cached) and beyond the window's size."""
    sid = new_sid()
    first = await store.add_and_read(sid, [NewMessage("user", "hi, I am Alice")], limit=20)
    assert [(m.seq, m.content) for m in first.added] == [(1, "hi, I am Alice")]
    assert first.window == first.added
    await fill(store, sid, 5)
    await store.get_messages(sid, limit=20)  # the hybrid caches the window now
    for limit in (1, 3, 20):
        turn = await store.add_and_read(
            sid, [NewMessage("user", f"limit {limit}?"), NewMessage("assistant", "noted")], limit=limit
        )
        assert [m.content for m in turn.added] == [f"limit {limit}?", "noted"]
        expected = await store.read(sid, limit=limit)
        assert turn.window == expected.messages
        assert turn.window[-min(limit, 2) :] == turn.added[-min(limit, 2) :]
    long = new_sid()
    await fill(store, long, 120)
    await store.get_messages(long, limit=20)
    turn = await store.add_and_read(long, [NewMessage("user", "and now?")], limit=100)  # beyond a cached window
    assert [m.seq for m in turn.window] == list(range(22, 122))
    assert turn.window == await store.get_messages(long, limit=100)


async def test_add_and_read_checks_everything_before_writing(store: SessionStore) -> None:
    """A bad limit or message is a ValidationError and writes nothing; another user's session is
    SessionNotFound and is left as it was."""
    sid = new_sid()
    await store.add_message(sid, "user", "mine", user_id="alice")
    for messages, limit in (([NewMessage("user", "x")], 0), ([NewMessage("narrator", "x")], 20)):
        with pytest.raises(ValidationError):
            await store.add_and_read(sid, messages, limit, user_id="alice")
    with pytest.raises(SessionNotFound):
        await store.add_and_read(sid, [NewMessage("user", "not yours")], 20, user_id="mallory")
    assert [m.content for m in await read_all(store, sid)] == ["mine"]


async def test_concurrent_add_and_read_windows_hold_their_own_turn(store: SessionStore) -> None:
    """Writers calling ``add_and_read`` at once: seqs stay contiguous, and each window is a contiguous
    run of the history that ends at or after the writer's own turn and contains it."""
    sid = new_sid()
    await fill(store, sid, 4)
    await store.get_messages(sid, limit=20)

    async def writer(w: int) -> list[tuple[list[int], list[int]]]:
        seen = []
        for t in range(6):
            turn = await store.add_and_read(sid, [NewMessage("user", f"w{w} t{t}"), NewMessage("assistant", "ok")], 20)
            seen.append(([m.seq for m in turn.added], [m.seq for m in turn.window]))
        return seen

    runs = await asyncio.gather(*(writer(w) for w in range(4)))
    assert [m.seq for m in await read_all(store, sid)] == list(range(1, 4 + 4 * 6 * 2 + 1))
    for added, window in (pair for run in runs for pair in run):
        assert window == list(range(window[0], window[0] + len(window))), window
        assert set(added) <= set(window), (added, window)


async def test_invalid_message_in_a_batch_writes_nothing(store: SessionStore) -> None:
    """A batch with one bad message is rejected whole: no message stored, no session created."""
    sid, existing = new_sid(), new_sid()
    await store.add_message(existing, "user", "kept")
    bad = [NewMessage("user", "fine"), NewMessage("user", "also fine"), NewMessage("narrator", "bad role")]
    for target in (sid, existing):
        with pytest.raises(ValidationError):
            await store.add_messages(target, bad)
    with pytest.raises(SessionNotFound):
        await store.get_session(sid)
    assert [m.content for m in await read_all(store, existing)] == ["kept"]
    assert (await store.get_session(existing)).last_seq == 1


async def test_every_role_round_trips(store: SessionStore) -> None:
    """The four roles are accepted and read back as given."""
    sid = new_sid()
    for role in ("system", "user", "assistant", "tool"):
        await store.add_message(sid, role, f"from {role}")
    assert [m.role for m in await read_all(store, sid)] == ["system", "user", "assistant", "tool"]


async def test_metadata_round_trips(store: SessionStore) -> None:
    """Nested JSON metadata on messages and sessions comes back equal, including unicode and nulls."""
    sid = new_sid()
    session_meta = {"title": "Trip ✈", "tags": ["a", "b"], "n": 3}
    message_meta = {"model": "m-1", "usage": {"in": 10, "out": 2.5}, "ok": True, "none": None, "list": [1, [2]]}
    await store.create_session(sid, user_id="judy", metadata=session_meta)
    await store.add_message(sid, "assistant", "done", message_meta, user_id="judy")
    assert (await store.get_session(sid)).metadata == session_meta
    for _ in range(2):  # the second read is a cache hit where there is a cache
        [msg] = await store.get_messages(sid)
        assert msg.metadata == message_meta


async def test_returned_objects_do_not_alias_stored_state(store: SessionStore) -> None:
    """Mutating metadata of a returned message or session, or of the caller's input, changes nothing stored."""
    sid = new_sid()
    given = {"k": "original", "nested": {"v": 1}}
    session = await store.create_session(sid, metadata=given)
    sent = await store.add_message(sid, "user", "hi", given)
    given["k"] = "changed by caller"
    session.metadata["k"] = "changed via session"
    sent.metadata["k"] = "changed via add result"
    [read] = await store.get_messages(sid)
    read.metadata["nested"]["v"] = 2
    assert (await store.get_session(sid)).metadata == {"k": "original", "nested": {"v": 1}}
    [again] = await store.get_messages(sid)
    assert again.metadata == {"k": "original", "nested": {"v": 1}}


async def test_unicode_content_round_trips(store: SessionStore) -> None:
    """Emoji, CJK, right-to-left, combining marks and control-ish whitespace survive storage unchanged."""
    sid = new_sid()
    texts = ["emoji 🦒🎷👩🏽‍💻", "中文 日本語 한국어", "عربي עברית", "e\u0301 ñ ß", "tabs\tand\nnewlines\r\n end"]
    for text in texts:
        await store.add_message(sid, "user", text, {"echo": text})
    for _ in range(2):
        got = await read_all(store, sid)
        assert [m.content for m in got] == texts
        assert [m.metadata["echo"] for m in got] == texts


async def test_message_shape_is_the_same_everywhere(store: SessionStore) -> None:
    """Messages from appends, reads and search share one shape: fixed keys, canonical id, tz-aware time."""
    sid = new_sid()
    appended = await store.add_message(sid, "user", "the walrus sings", {"a": 1})
    read_back = (await store.get_messages(sid))[0]
    cached = (await store.get_messages(sid))[0]
    [found] = await store.search("walrus")
    for m in (appended, read_back, cached, found):
        d = m.to_dict()
        assert set(d) == MESSAGE_KEYS
        assert (d["session_id"], d["seq"], d["role"], d["content"], d["metadata"]) == (
            sid,
            1,
            "user",
            "the walrus sings",
            {"a": 1},
        )
        assert m.created_at.utcoffset() == timedelta(0)
        assert Message.from_dict(json.loads(json.dumps(d))) == m
    assert appended == read_back == cached == found


# ----------------------------------------------------------------------------- search


async def test_search_finds_matching_messages(store: SessionStore) -> None:
    """Search returns the messages containing the word and nothing else, limited to ``limit``."""
    sid = new_sid()
    await store.add_messages(
        sid,
        [
            NewMessage("user", "my giraffe escaped"),
            NewMessage("assistant", "check the orchard"),
            NewMessage("user", "the giraffe is eating apples"),
        ],
    )
    found = await store.search("giraffe")
    assert sorted(m.seq for m in found) == [1, 3]
    assert all(m.session_id == sid and "giraffe" in m.content for m in found)
    assert len(await store.search("giraffe", limit=1)) == 1
    assert await store.search("saxophone") == []
    [both] = await store.search("giraffe apples")
    assert both.seq == 3


async def test_search_is_restricted_to_the_user(store: SessionStore) -> None:
    """With ``user_id`` search only sees that user's sessions."""
    mine, theirs = new_sid(), new_sid()
    await store.add_message(mine, "user", "a quiet lighthouse", user_id="kim")
    await store.add_message(theirs, "user", "a noisy lighthouse", user_id="lee")
    assert [m.session_id for m in await store.search("lighthouse", user_id="kim")] == [mine]
    assert [m.session_id for m in await store.search("lighthouse", user_id="lee")] == [theirs]
    assert await store.search("lighthouse", user_id="max") == []
    assert {m.session_id for m in await store.search("lighthouse")} == {mine, theirs}


# ----------------------------------------------------------------------------- export

TRICKY = 'a "quoted", comma-laden\nmulti-line message 🦒'


async def _exportable(store: SessionStore) -> tuple[str, list[Message]]:
    sid = new_sid()
    await store.add_messages(
        sid, [NewMessage("system", "rules"), NewMessage("user", TRICKY, {"k": "v ✓"}), NewMessage("assistant", "ok")]
    )
    return sid, await read_all(store, sid)


async def test_export_jsonl_matches_get_messages(store: SessionStore) -> None:
    """JSON Lines export is one ``Message.to_dict`` object per line, equal to the stored history."""
    sid, history = await _exportable(store)
    text = "".join(await collect(store.export(sid, "jsonl")))
    assert text.endswith("\n")
    assert [json.loads(line) for line in text.splitlines()] == [m.to_dict() for m in history]


async def test_export_csv_matches_get_messages(store: SessionStore) -> None:
    """CSV export has a header row and one row per message that the csv module parses back exactly."""
    sid, history = await _exportable(store)
    text = "".join(await collect(store.export(sid, "csv")))
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [tuple(r) for r in rows[:1]] == [MESSAGE_KEYS_ORDER]
    expected = [
        {**{k: str(v) for k, v in m.to_dict().items()}, "metadata": json.dumps(m.metadata, ensure_ascii=False)}
        for m in history
    ]
    assert rows == expected
    assert rows[1]["content"] == TRICKY
    assert json.loads(rows[1]["metadata"]) == {"k": "v ✓"}


async def test_export_markdown_lists_every_message_in_order(store: SessionStore) -> None:
    """Markdown export has a title and each message's role, seq and content, in seq order."""
    sid, history = await _exportable(store)
    text = "".join(await collect(store.export(sid, "markdown")))
    assert text.startswith(f"# Session {sid}\n")
    positions = []
    for m in history:
        block = f"**{m.role}** · {m.created_at.isoformat()} · #{m.seq}\n\n{m.content}\n"
        assert block in text
        positions.append(text.index(block))
    assert positions == sorted(positions)


async def test_export_streams_large_histories_in_chunks(store: SessionStore) -> None:
    """Export is an async iterator that yields a long history in several chunks, losing nothing."""
    sid = new_sid()
    await fill(store, sid, 137, size=700)
    stream = store.export(sid, "jsonl")
    assert isinstance(stream, AsyncIterator)
    chunks = await collect(stream)
    assert len(chunks) >= 2
    lines = "".join(chunks).splitlines()
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, 138))


async def test_export_of_an_empty_session_has_no_rows(store: SessionStore) -> None:
    """Exporting a session without messages gives just the CSV header and no JSON lines."""
    session = await store.create_session()
    assert "".join(await collect(store.export(session.session_id, "jsonl"))) == ""
    csv_text = "".join(await collect(store.export(session.session_id, "csv")))
    assert list(csv.reader(io.StringIO(csv_text))) == [list(MESSAGE_KEYS_ORDER)]


async def test_export_of_unknown_session_raises(store: SessionStore) -> None:
    """Exporting a session that does not exist raises SessionNotFound when iterated."""
    with pytest.raises(SessionNotFound):
        await collect(store.export(new_sid(), "jsonl"))


# ----------------------------------------------------------------------------- delete and cleanup


async def test_delete_session_removes_it_and_its_messages(store: SessionStore) -> None:
    """After delete, reads are empty, the session is gone and a second delete returns False."""
    sid, other = new_sid(), new_sid()
    await fill(store, sid, 5)
    await store.add_message(other, "user", "survivor")
    assert len(await store.get_messages(sid)) == 5  # warms the cache where there is one
    assert await store.delete_session(sid) is True
    assert await store.get_messages(sid) == []
    with pytest.raises(SessionNotFound):
        await store.get_session(sid)
    assert await store.search("message") == []
    assert await store.delete_session(sid) is False
    assert [m.content for m in await store.get_messages(other)] == ["survivor"]


async def test_session_id_can_be_reused_after_delete(store: SessionStore) -> None:
    """A deleted id starts over at seq 1 and never shows the deleted history (no stale cache)."""
    sid = new_sid()
    await fill(store, sid, 4)
    await store.get_messages(sid)
    await store.delete_session(sid)
    msg = await store.add_message(sid, "user", "fresh start")
    assert msg.seq == 1
    for _ in range(2):
        assert [m.content for m in await store.get_messages(sid)] == ["fresh start"]


async def test_cleanup_removes_only_inactive_sessions_in_batches(store: SessionStore) -> None:
    """``cleanup_inactive`` deletes every session idle past the threshold (over several batches) and keeps the rest."""
    old = [new_sid() for _ in range(11)]
    for sid in old:
        await store.add_message(sid, "user", "old news")
        await store.get_messages(sid)  # warm the cache where there is one
    await asyncio.sleep(0.6)
    recent = [new_sid() for _ in range(3)]
    for sid in recent:
        await store.add_message(sid, "user", "fresh news")

    assert await store.cleanup_inactive(older_than=0.3, batch_size=4) == 11
    for sid in old:
        assert await store.get_messages(sid) == []
        with pytest.raises(SessionNotFound):
            await store.get_session(sid)
    for sid in recent:
        assert [m.content for m in await store.get_messages(sid)] == ["fresh news"]
    assert await store.cleanup_inactive(older_than=0.3, batch_size=4) == 0


async def test_cleanup_counts_activity_not_creation(store: SessionStore) -> None:
    """A session created long ago but written to recently survives cleanup."""
    sid = new_sid()
    await store.add_message(sid, "user", "started")
    await asyncio.sleep(0.6)
    await store.add_message(sid, "user", "still chatting")
    assert await store.cleanup_inactive(older_than=0.3) == 0
    assert len(await store.get_messages(sid)) == 2


# ----------------------------------------------------------------------------- user isolation


async def test_another_users_session_behaves_like_a_missing_one(store: SessionStore) -> None:
    """Acting as another user, every operation on a session fails exactly as it does for a missing id."""
    owned, missing = new_sid(), new_sid()
    await store.add_message(owned, "user", "private diary", user_id="alice")
    await store.get_messages(owned)  # warm the cache where there is one

    for sid in (owned, missing):
        for _ in range(2):  # the second read takes the cache path where there is one
            with pytest.raises(SessionNotFound):
                await store.get_messages(sid, user_id="bob")
        with pytest.raises(SessionNotFound):
            await store.get_session(sid, user_id="bob")
        with pytest.raises(SessionNotFound):
            await collect(store.export(sid, "jsonl", user_id="bob"))
        assert await store.delete_session(sid, user_id="bob") is False
    with pytest.raises(SessionNotFound):
        await store.add_message(owned, "user", "intrusion", user_id="bob")
    with pytest.raises(SessionNotFound):
        await store.add_messages(owned, [NewMessage("user", "intrusion")], user_id="bob")
    with pytest.raises(SessionNotFound):
        await store.create_session(owned, user_id="bob")

    assert await store.search("diary", user_id="bob") == []
    assert await store.list_sessions("bob") == []
    assert [m.content for m in await store.get_messages(owned, user_id="alice")] == ["private diary"]
    assert (await store.get_session(owned, user_id="alice")).last_seq == 1
    assert await store.delete_session(owned, user_id="alice") is True


async def test_owner_can_use_every_operation(store: SessionStore) -> None:
    """Passing the owner's ``user_id`` works for reads, appends, export and delete."""
    sid = new_sid()
    await store.create_session(sid, user_id="olga")
    await store.add_message(sid, "user", "one", user_id="olga")
    await store.add_messages(sid, [NewMessage("assistant", "two")], user_id="olga")
    assert [m.content for m in await store.get_messages(sid, user_id="olga")] == ["one", "two"]
    lines = "".join(await collect(store.export(sid, "jsonl", user_id="olga"))).splitlines()
    assert [json.loads(line)["content"] for line in lines] == ["one", "two"]
    assert await store.delete_session(sid, user_id="olga") is True


async def test_session_without_owner_is_not_any_users(store: SessionStore) -> None:
    """A session created without a user is not visible to a caller acting as a user."""
    sid = new_sid()
    await store.add_message(sid, "user", "anonymous")
    with pytest.raises(SessionNotFound):
        await store.get_messages(sid, user_id="pat")
    with pytest.raises(SessionNotFound):
        await store.add_message(sid, "user", "claim it", user_id="pat")
    assert [m.content for m in await store.get_messages(sid)] == ["anonymous"]
