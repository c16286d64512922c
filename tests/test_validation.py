"""Bad input raises ValidationError naming the field, before any I/O, on every backend.

"Before any I/O" is proven with stores that cannot do I/O: the postgres backend on a
closed asyncpg pool, the hybrid backend on that and on a Redis client aimed at a
127.0.0.1 port that refuses connections.  Any attempt to reach either server would
raise StoreUnavailable or record an error event instead of the ValidationError
(``test_offline_stores_fail_on_valid_input`` shows that they do).  The pure
validators in :mod:`store.base` get property tests with hypothesis.
"""

from __future__ import annotations

import json
import socket
import string
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sessionbench.store import NewMessage, SessionNotFound, SessionStore, StoreUnavailable, ValidationError
from sessionbench.store.backends.hybrid import HybridStore, create_redis
from sessionbench.store.backends.memory import MemoryStore
from sessionbench.store.backends.postgres import PostgresStore, create_pool
from sessionbench.store.models import ROLES
from sessionbench.store.settings import RedisSettings
from sessionbench.store.validation import (
    DEFAULT_LIMITS,
    MAX_OLDER_THAN,
    Limits,
    validate_before_seq,
    validate_cleanup,
    validate_content,
    validate_format,
    validate_limit,
    validate_metadata,
    validate_new_messages,
    validate_query,
    validate_role,
    validate_session_id,
    validate_user_id,
)

SID = str(uuid.uuid4())
KIB64 = 64 * 1024
PROPERTY = settings(max_examples=150, deadline=None, database=None)


class RecordingEvents:
    """A StoreEvents sink that keeps every call, so a test can see whether a backend touched a server."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def cache_result(self, result: str) -> None:
        self.calls.append(("cache_result", (result,)))

    def cache_populate(self, result: str) -> None:
        self.calls.append(("cache_populate", (result,)))

    def cache_invalidation(self, reason: str) -> None:
        self.calls.append(("cache_invalidation", (reason,)))

    def error(self, backend: str, operation: str, kind: str) -> None:
        self.calls.append(("error", (backend, operation, kind)))

    def breaker_state(self, state: int) -> None:
        self.calls.append(("breaker_state", (state,)))


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A 127.0.0.1 port that is bound (so nobody else takes it) but not listening: connects are refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture(params=["memory", "postgres", "hybrid"])
async def offline(request: pytest.FixtureRequest, refused_port: int) -> AsyncIterator[tuple[SessionStore, Any]]:
    """Each backend unable to reach any server, with the events sink that would record an attempt."""
    events = RecordingEvents()
    if request.param == "memory":
        yield MemoryStore(), events
        return
    pool = await create_pool(f"postgresql://postgres@127.0.0.1:{refused_port}/postgres", min_size=0, max_size=1)
    await pool.close()
    durable = PostgresStore(pool, events=events)
    if request.param == "postgres":
        yield durable, events
        return
    redis = create_redis(f"redis://127.0.0.1:{refused_port}/0", RedisSettings())
    try:
        yield HybridStore(redis, durable, events=events), events
    finally:
        await redis.aclose()


async def first_chunk(chunks: AsyncIterator[str]) -> str:
    return await anext(chunks)


Call = Callable[[SessionStore], Awaitable[object]]

# (id, call, the field the ValidationError must name)
BAD_CALLS: list[tuple[str, Call, str]] = [
    # roles
    ("role-unknown", lambda s: s.add_message(SID, "narrator", "x"), "messages[0].role"),
    ("role-wrong-case", lambda s: s.add_message(SID, "User", "x"), "messages[0].role"),
    ("role-empty", lambda s: s.add_message(SID, "", "x"), "messages[0].role"),
    ("role-not-str", lambda s: s.add_message(SID, ["user"], "x"), "messages[0].role"),  # type: ignore[arg-type]
    # content
    ("content-empty", lambda s: s.add_message(SID, "user", ""), "messages[0].content"),
    ("content-over-64k", lambda s: s.add_message(SID, "user", "x" * (KIB64 + 1)), "messages[0].content"),
    ("content-over-64k-bytes", lambda s: s.add_message(SID, "user", "é" * (KIB64 // 2 + 1)), "messages[0].content"),
    ("content-nul", lambda s: s.add_message(SID, "user", "a\x00b"), "messages[0].content"),
    ("content-surrogate", lambda s: s.add_message(SID, "user", "a\ud800b"), "messages[0].content"),
    ("content-bytes", lambda s: s.add_message(SID, "user", b"hi"), "messages[0].content"),  # type: ignore[arg-type]
    # message metadata
    ("meta-list", lambda s: s.add_message(SID, "user", "x", [1]), "messages[0].metadata"),  # type: ignore[arg-type]
    ("meta-str", lambda s: s.add_message(SID, "user", "x", "{}"), "messages[0].metadata"),  # type: ignore[arg-type]
    ("meta-too-big", lambda s: s.add_message(SID, "user", "x", {"k": "v" * 8192}), "messages[0].metadata"),
    ("meta-object", lambda s: s.add_message(SID, "user", "x", {"k": object()}), "messages[0].metadata"),
    ("meta-set", lambda s: s.add_message(SID, "user", "x", {"k": {1, 2}}), "messages[0].metadata"),
    ("meta-nan", lambda s: s.add_message(SID, "user", "x", {"k": float("nan")}), "messages[0].metadata"),
    ("meta-wide-int", lambda s: s.add_message(SID, "user", "x", {"k": 2**64}), "messages[0].metadata"),
    ("meta-tuple-key", lambda s: s.add_message(SID, "user", "x", {(1, 2): "v"}), "messages[0].metadata"),  # type: ignore[dict-item]
    ("meta-nul", lambda s: s.add_message(SID, "user", "x", {"k": "a\x00"}), "messages[0].metadata"),
    ("meta-surrogate", lambda s: s.add_message(SID, "user", "x", {"k": "\udc80"}), "messages[0].metadata"),
    ("meta-too-deep", lambda s: s.add_message(SID, "user", "x", _nested(2000)), "messages[0].metadata"),
    # session ids
    ("sid-malformed", lambda s: s.add_message("not-a-uuid", "user", "x"), "session_id"),
    ("sid-empty", lambda s: s.get_messages(""), "session_id"),
    ("sid-int", lambda s: s.get_session(12345), "session_id"),  # type: ignore[arg-type]
    ("sid-none", lambda s: s.get_messages(None), "session_id"),  # type: ignore[arg-type]
    ("sid-long", lambda s: s.delete_session("0" * 32 + "-" * 40), "session_id"),
    ("sid-create", lambda s: s.create_session("123e4567-e89b-12d3-a456-42661417400"), "session_id"),
    ("sid-export", lambda s: first_chunk(s.export("nope", "csv")), "session_id"),
    # batches
    ("batch-empty", lambda s: s.add_messages(SID, []), "messages"),
    ("batch-too-large", lambda s: s.add_messages(SID, [NewMessage("user", "x")] * 101), "messages"),
    ("batch-a-string", lambda s: s.add_messages(SID, "user: hi"), "messages"),  # type: ignore[arg-type]
    ("batch-item-not-message", lambda s: s.add_messages(SID, [42]), "messages[0]"),  # type: ignore[list-item]
    ("batch-item-no-content", lambda s: s.add_messages(SID, [{"role": "user"}]), "messages[0].content"),
    (
        "batch-second-item-bad",
        lambda s: s.add_messages(SID, [NewMessage("user", "ok"), NewMessage("robot", "bad")]),
        "messages[1].role",
    ),
    # limit and before_seq
    ("limit-0", lambda s: s.get_messages(SID, limit=0), "limit"),
    ("limit-1001", lambda s: s.get_messages(SID, limit=1001), "limit"),
    ("limit-negative", lambda s: s.get_messages(SID, limit=-5), "limit"),
    ("limit-bool", lambda s: s.get_messages(SID, limit=True), "limit"),
    ("limit-str", lambda s: s.get_messages(SID, limit="20"), "limit"),  # type: ignore[arg-type]
    ("limit-float", lambda s: s.get_messages(SID, limit=20.0), "limit"),  # type: ignore[arg-type]
    ("before-seq-0", lambda s: s.get_messages(SID, before_seq=0), "before_seq"),
    ("before-seq-negative", lambda s: s.get_messages(SID, before_seq=-3), "before_seq"),
    ("before-seq-bool", lambda s: s.get_messages(SID, before_seq=True), "before_seq"),
    ("before-seq-str", lambda s: s.get_messages(SID, before_seq="9"), "before_seq"),  # type: ignore[arg-type]
    ("before-seq-huge", lambda s: s.get_messages(SID, before_seq=2**63), "before_seq"),
    # export
    ("format-unknown", lambda s: first_chunk(s.export(SID, "xml")), "format"),
    ("format-wrong-case", lambda s: first_chunk(s.export(SID, "CSV")), "format"),
    ("format-not-str", lambda s: first_chunk(s.export(SID, ["csv"])), "format"),  # type: ignore[arg-type]
    # users
    ("user-empty", lambda s: s.get_messages(SID, user_id=""), "user_id"),
    ("user-too-long", lambda s: s.add_message(SID, "user", "x", user_id="u" * 129), "user_id"),
    ("user-nul", lambda s: s.get_session(SID, user_id="a\x00"), "user_id"),
    ("user-surrogate", lambda s: s.get_messages(SID, user_id="\ud800"), "user_id"),
    ("user-not-str", lambda s: s.list_sessions(7), "user_id"),  # type: ignore[arg-type]
    ("user-delete", lambda s: s.delete_session(SID, user_id=""), "user_id"),
    # sessions
    ("create-meta-list", lambda s: s.create_session(SID, metadata=[("a", 1)]), "metadata"),  # type: ignore[arg-type]
    ("create-meta-too-big", lambda s: s.create_session(SID, metadata={"k": "v" * 9000}), "metadata"),
    ("create-user-empty", lambda s: s.create_session(SID, user_id=""), "user_id"),
    ("list-limit-0", lambda s: s.list_sessions("u", limit=0), "limit"),
    ("list-limit-1001", lambda s: s.list_sessions("u", limit=1001), "limit"),
    ("list-before-naive", lambda s: s.list_sessions("u", before=datetime(2024, 1, 1)), "before"),
    ("list-before-str", lambda s: s.list_sessions("u", before="2024-01-01"), "before"),  # type: ignore[arg-type]
    # search
    ("query-empty", lambda s: s.search(""), "query"),
    ("query-blank", lambda s: s.search("  \t "), "query"),
    ("query-too-long", lambda s: s.search("q" * 257), "query"),
    ("query-nul", lambda s: s.search("a\x00b"), "query"),
    ("query-surrogate", lambda s: s.search("a\ud800"), "query"),
    ("query-not-str", lambda s: s.search(None), "query"),  # type: ignore[arg-type]
    ("search-limit-0", lambda s: s.search("x", limit=0), "limit"),
    ("search-user-empty", lambda s: s.search("x", user_id=""), "user_id"),
    # cleanup
    ("cleanup-negative", lambda s: s.cleanup_inactive(-1), "older_than"),
    ("cleanup-nan", lambda s: s.cleanup_inactive(float("nan")), "older_than"),
    ("cleanup-inf", lambda s: s.cleanup_inactive(float("inf")), "older_than"),
    ("cleanup-past-100-years", lambda s: s.cleanup_inactive(MAX_OLDER_THAN * 2), "older_than"),
    ("cleanup-bool", lambda s: s.cleanup_inactive(True), "older_than"),
    ("cleanup-str", lambda s: s.cleanup_inactive("60"), "older_than"),  # type: ignore[arg-type]
    ("cleanup-batch-0", lambda s: s.cleanup_inactive(60, batch_size=0), "batch_size"),
    ("cleanup-batch-huge", lambda s: s.cleanup_inactive(60, batch_size=100_001), "batch_size"),
]


def _nested(depth: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(depth):
        node["a"] = {}
        node = node["a"]
    return root


@pytest.mark.parametrize(("call", "field"), [pytest.param(c, f, id=i) for i, c, f in BAD_CALLS])
async def test_bad_input_raises_validation_error_before_io(
    offline: tuple[SessionStore, RecordingEvents], call: Call, field: str
) -> None:
    """Each bad input raises ValidationError naming ``field`` without touching PostgreSQL, Redis or memory state."""
    store, events = offline
    with pytest.raises(ValidationError) as caught:
        await call(store)
    assert caught.value.field == field
    assert caught.value.message
    assert str(caught.value).startswith(f"{field}: ")
    assert events.calls == []
    if isinstance(store, MemoryStore):
        assert len(store) == 0


async def test_offline_stores_fail_on_valid_input(offline: tuple[SessionStore, RecordingEvents]) -> None:
    """The offline postgres and hybrid stores do attempt I/O for valid input, so the test above can fail."""
    store, events = offline
    if isinstance(store, MemoryStore):
        assert await store.get_messages(SID) == []
        return
    with pytest.raises(StoreUnavailable):
        await store.get_messages(SID)
    with pytest.raises(StoreUnavailable):
        await store.add_message(SID, "user", "hello")
    kinds = {(c[1][0], c[1][1]) for c in events.calls if c[0] == "error"}
    assert ("postgres", "get_messages") in kinds
    if isinstance(store, HybridStore):
        # Its first call polls PostgreSQL for cache invalidations; with no successful poll it
        # does not trust Redis, so every attempt it makes shows up as a PostgreSQL error.
        assert ("postgres", "cache_sync") in kinds


def test_validation_error_is_a_value_error() -> None:
    """ValidationError is both a StoreError and a ValueError, and keeps ``field`` and ``message``."""
    err = ValidationError("limit", "must be positive")
    assert isinstance(err, ValueError)
    assert (err.field, err.message, str(err)) == ("limit", "must be positive", "limit: must be positive")


# ----------------------------------------------------------------------------- limits that pass


async def test_content_exactly_at_the_limit_is_stored(store: SessionStore) -> None:
    """Content of exactly 64 KiB (counted in UTF-8 bytes) is accepted and read back intact."""
    sid = str(uuid.uuid4())
    ascii_text = "word " * (KIB64 // 5) + "x" * (KIB64 % 5)
    multibyte = "é" * (KIB64 // 2)
    assert len(ascii_text.encode()) == len(multibyte.encode()) == KIB64
    await store.add_messages(sid, [NewMessage("user", ascii_text), NewMessage("assistant", multibyte)])
    assert [m.content for m in await store.get_messages(sid)] == [ascii_text, multibyte]


async def test_limits_at_their_bounds_pass(store: SessionStore) -> None:
    """Metadata of exactly 8 KiB, a batch of 100, limit 1 and 1000 and the oldest cleanup threshold are accepted."""
    sid = str(uuid.uuid4())
    meta = {"k": "v" * (8192 - len('{"k":""}'))}
    assert len(json.dumps(meta, separators=(",", ":")).encode()) == 8192
    await store.create_session(sid, metadata=meta)
    await store.add_messages(sid, [NewMessage("user", f"m{i}", meta) for i in range(100)])
    assert [m.seq for m in await store.get_messages(sid, limit=1)] == [100]
    assert len(await store.get_messages(sid, limit=1000)) == 100
    assert (await store.get_session(sid)).metadata == meta
    assert await store.cleanup_inactive(MAX_OLDER_THAN, batch_size=100_000) == 0
    assert await store.list_sessions(None, limit=1000, before=datetime.now(UTC)) != []


async def test_literal_backslash_u0000_text_is_not_mistaken_for_nul(store: SessionStore) -> None:
    """Metadata holding the six characters ``\\u0000`` (not a NUL) is accepted and round-trips."""
    sid = str(uuid.uuid4())
    meta = {"pattern": "\\u0000", "path": "C:\\\\u0000"}
    await store.add_message(sid, "user", "regex help", meta)
    assert (await store.get_messages(sid))[0].metadata == meta


async def test_rejected_write_leaves_no_trace(store: SessionStore) -> None:
    """A rejected append neither creates the session nor bumps its ``last_seq``."""
    fresh, existing = str(uuid.uuid4()), str(uuid.uuid4())
    await store.add_message(existing, "user", "one")
    for sid in (fresh, existing):
        with pytest.raises(ValidationError):
            await store.add_message(sid, "user", "x" * (KIB64 + 1))
        with pytest.raises(ValidationError):
            await store.add_message(sid, "user", "x", {"bad": object()})
    with pytest.raises(SessionNotFound):
        await store.get_session(fresh)
    assert (await store.get_session(existing)).last_seq == 1
    assert (await store.add_message(existing, "user", "two")).seq == 2


# ----------------------------------------------------------------------------- property tests

SMALL = Limits(content_bytes=64, metadata_bytes=128, max_limit=50, max_batch=5)
text_no_nul = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
anything = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(), st.binary(), st.lists(st.integers(), max_size=3)
)


@PROPERTY
@given(content=text_no_nul)
def test_content_passes_iff_its_utf8_size_is_within_the_limit(content: str) -> None:
    """Any non-empty text without NUL is accepted unchanged exactly when it encodes to at most the byte limit."""
    if len(content.encode()) <= SMALL.content_bytes:
        assert validate_content(content, SMALL) == content
    else:
        with pytest.raises(ValidationError) as caught:
            validate_content(content, SMALL)
        assert caught.value.field == "content"


@PROPERTY
@given(content=st.text(min_size=1, max_size=64))
def test_content_with_nul_or_surrogates_fails(content: str) -> None:
    """Inserting a NUL or a lone surrogate anywhere makes otherwise fine content invalid."""
    for bad in ("\x00", "\ud800"):
        with pytest.raises(ValidationError) as caught:
            validate_content(content[:3] + bad + content[3:], DEFAULT_LIMITS, field="c")
        assert caught.value.field == "c"


@PROPERTY
@given(role=st.text() | anything)
@example(role="user ")
@example(role="USER")
def test_only_the_four_roles_pass(role: object) -> None:
    """Any value other than system / user / assistant / tool is rejected with ``field='role'``."""
    if isinstance(role, str) and role in ROLES:
        assert validate_role(role) == role
        return
    with pytest.raises(ValidationError) as caught:
        validate_role(role)  # type: ignore[arg-type]
    assert caught.value.field == "role"


@PROPERTY
@given(role=st.sampled_from(sorted(ROLES)))
def test_every_role_passes(role: str) -> None:
    """Each of the four roles is accepted."""
    assert validate_role(role) == role


@PROPERTY
@given(value=st.uuids())
def test_session_id_spellings_canonicalise(value: uuid.UUID) -> None:
    """A UUID given as object, canonical, upper-case, braced or bare hex yields the canonical string."""
    canonical = str(value)
    for spelling in (value, canonical, canonical.upper(), "{" + canonical + "}", value.hex):
        assert validate_session_id(spelling) == canonical


@PROPERTY
@given(value=st.text(max_size=80) | anything)
@example(value="123e4567-e89b-12d3-a456-42661417400")
@example(value="g" * 32)
def test_non_uuid_session_ids_fail(value: object) -> None:
    """Anything that is not a UUID spelling raises ValidationError for ``session_id`` (never another error)."""
    try:
        expected: str | None = str(uuid.UUID(value)) if isinstance(value, str) and len(value) <= 64 else None
    except ValueError:
        expected = None
    if expected is not None:
        assert validate_session_id(value) == expected  # type: ignore[arg-type]
        return
    with pytest.raises(ValidationError) as caught:
        validate_session_id(value)  # type: ignore[arg-type]
    assert caught.value.field == "session_id"


@PROPERTY
@given(value=st.integers() | anything)
def test_limit_passes_iff_an_int_in_range(value: object) -> None:
    """``limit`` accepts exactly the ints 1..max_limit (not bools, floats or strings)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= SMALL.max_limit
    if ok:
        assert validate_limit(value, SMALL) == value  # type: ignore[arg-type]
    else:
        with pytest.raises(ValidationError) as caught:
            validate_limit(value, SMALL)  # type: ignore[arg-type]
        assert caught.value.field == "limit"


@PROPERTY
@given(value=st.integers() | anything)
def test_before_seq_passes_iff_none_or_a_positive_bigint(value: object) -> None:
    """``before_seq`` accepts None and ints 1..2**62 only."""
    ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 2**62)
    if ok:
        assert validate_before_seq(value) == value  # type: ignore[arg-type]
    else:
        with pytest.raises(ValidationError) as caught:
            validate_before_seq(value)  # type: ignore[arg-type]
        assert caught.value.field == "before_seq"


@PROPERTY
@given(meta=st.dictionaries(st.text(max_size=8), json_values, max_size=5))
@example(meta={"k": "\\u0000"})
@example(meta={"k": "\\\\u0000"})
@example(meta={"k\x00": 1})
@example(meta={"k": ["\\\x00"]})
@example(meta={"k": "\udc80"})
def test_json_metadata_round_trips_or_is_rejected_for_size_or_nul(meta: dict[str, Any]) -> None:
    """A JSON object is returned equal (as a copy) unless its encoding is over the limit or holds a NUL, a
    surrogate or an integer beyond 64 bits."""
    encoded = json.dumps(meta, ensure_ascii=False, separators=(",", ":"))
    texts = "".join(_strings(meta))
    storable = "\x00" not in texts and not any("\ud800" <= c <= "\udfff" for c in texts)
    storable = storable and all(-(2**63) <= n < 2**64 for n in _ints(meta))
    if storable and len(encoded.encode(errors="replace")) <= SMALL.metadata_bytes:
        result = validate_metadata(meta, SMALL)
        assert result == meta
        assert result is not meta
    else:
        with pytest.raises(ValidationError) as caught:
            validate_metadata(meta, SMALL)
        assert caught.value.field == "metadata"


def _ints(value: Any) -> Iterator[int]:
    """Every integer in a JSON-shaped value (not booleans)."""
    if isinstance(value, int) and not isinstance(value, bool):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _ints(v)
    elif isinstance(value, list):
        for v in value:
            yield from _ints(v)


def _strings(value: Any) -> Iterator[str]:
    """Every string in a JSON-shaped value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@PROPERTY
@given(value=anything)
def test_non_mapping_metadata_fails(value: object) -> None:
    """Metadata that is not a mapping (other than None, meaning empty) is rejected."""
    if value is None:
        assert validate_metadata(value, SMALL) == {}
        return
    with pytest.raises(ValidationError) as caught:
        validate_metadata(value, SMALL)  # type: ignore[arg-type]
    assert caught.value.field == "metadata"


@PROPERTY
@given(
    batch=st.lists(
        st.tuples(st.sampled_from(sorted(ROLES)), st.text(string.ascii_letters, min_size=1, max_size=20)),
        max_size=8,
    )
)
def test_batches_pass_iff_size_is_1_to_max_batch(batch: list[tuple[str, str]]) -> None:
    """A batch of valid messages passes, order kept, exactly when it holds 1..max_batch messages."""
    messages = [NewMessage(role, content) for role, content in batch]
    if 1 <= len(batch) <= SMALL.max_batch:
        assert validate_new_messages(messages, SMALL) == [(r, c, {}) for r, c in batch]
    else:
        with pytest.raises(ValidationError) as caught:
            validate_new_messages(messages, SMALL)
        assert caught.value.field == "messages"


@PROPERTY
@given(fmt=st.text(max_size=10) | anything)
def test_only_the_three_export_formats_pass(fmt: object) -> None:
    """Export formats are exactly csv, jsonl and markdown."""
    if fmt in ("csv", "jsonl", "markdown"):
        assert validate_format(fmt) == fmt
        return
    with pytest.raises(ValidationError) as caught:
        validate_format(fmt)  # type: ignore[arg-type]
    assert caught.value.field == "format"


@PROPERTY
@given(user=st.text(max_size=140) | anything)
def test_user_ids_are_short_storable_text(user: object) -> None:
    """A user id passes iff it is None or a 1..128-character string without NUL or lone surrogates."""
    storable = isinstance(user, str) and "\x00" not in user and not any("\ud800" <= c <= "\udfff" for c in user)
    if user is None or (storable and 1 <= len(user) <= 128):  # type: ignore[arg-type]
        assert validate_user_id(user, DEFAULT_LIMITS) == user  # type: ignore[arg-type]
        return
    with pytest.raises(ValidationError) as caught:
        validate_user_id(user, DEFAULT_LIMITS)  # type: ignore[arg-type]
    assert caught.value.field == "user_id"


@PROPERTY
@given(query=st.text(max_size=300))
def test_queries_pass_iff_non_blank_and_short(query: str) -> None:
    """A search query passes (stripped) iff it has non-space text, at most 256 characters and no NUL."""
    if query.strip() and len(query) <= 256 and "\x00" not in query:
        assert validate_query(query, DEFAULT_LIMITS) == query.strip()
        return
    with pytest.raises(ValidationError) as caught:
        validate_query(query, DEFAULT_LIMITS)
    assert caught.value.field == "query"


@PROPERTY
@given(older_than=st.floats() | st.integers(), batch_size=st.integers(-5, 200_000))
def test_cleanup_arguments(older_than: float, batch_size: int) -> None:
    """Cleanup takes 0..100 years (finite) and a batch size of 1..100000; anything else names the culprit."""
    if not 0 <= older_than <= MAX_OLDER_THAN:
        with pytest.raises(ValidationError) as caught:
            validate_cleanup(older_than, batch_size)
        assert caught.value.field == "older_than"
    elif not 1 <= batch_size <= 100_000:
        with pytest.raises(ValidationError) as caught:
            validate_cleanup(older_than, batch_size)
        assert caught.value.field == "batch_size"
    else:
        validate_cleanup(older_than, batch_size)
