"""``pop_message`` on every backend, and the OpenAI Agents SDK session adapter on the store.

The adapter is checked differentially: the same seeded random sequence of
``get_items(limit)`` / ``add_items`` / ``pop_item`` / ``clear_session`` calls runs on the
SDK's own ``SQLiteSession`` and on :class:`sessionbench.store.integrations.agents.StoreSession` over
each backend, and every result must be equal, step by step.  The hybrid tests prove
that no cache entry ever serves a popped message, including when the append that
wrote it reaches Redis only after the pop, and when the popping process cannot reach
Redis at all.  Tests that need the SDK skip without the ``agents`` extra (fail under CI=true).
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from sessionbench.store import NewMessage, SessionNotFound, SessionStore, ValidationError, open_store
from sessionbench.store.backends.hybrid import HybridStore, create_redis
from sessionbench.store.backends.postgres import PostgresStore, create_pool, migrate
from sessionbench.store.instrumentation.wrapper import InstrumentedStore
from sessionbench.store.settings import CacheSettings, RedisSettings
from tests.hybrid_support import open_hybrid
from tests.optional_extras import require
from tests.test_roundtrips import WireCounter

#: Random calls per backend in the differential test (three backends: 3 x this in total).
DIFFERENTIAL_STEPS = 2000


def new_sid() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def sdk() -> Any:
    """The ``agents`` package (skipped, or failed under CI=true, without the agents extra)."""
    return require("agents")


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A bound, non-listening 127.0.0.1 port: connecting to it is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


# ----------------------------------------------------------------------------- pop_message, every backend


async def test_pop_message_removes_the_newest_and_never_reuses_its_seq(store: SessionStore) -> None:
    """A pop returns the newest message and removes it for good; the next append takes the following seq."""
    sid = new_sid()
    await store.add_messages(sid, [NewMessage("user", f"m{i}") for i in range(1, 5)])
    assert [m.content for m in await store.get_messages(sid)] == ["m1", "m2", "m3", "m4"]  # warms a cache
    popped = await store.pop_message(sid)
    assert popped is not None
    assert (popped.seq, popped.role, popped.content) == (4, "user", "m4")
    assert [m.content for m in await store.get_messages(sid)] == ["m1", "m2", "m3"]
    assert (await store.get_session(sid)).last_seq == 4
    fresh = await store.add_message(sid, "assistant", "m5")
    assert fresh.seq == 5
    for _ in range(2):
        assert [(m.seq, m.content) for m in await store.get_messages(sid)] == [(1, "m1"), (2, "m2"), (3, "m3"),
                                                                              (5, "m5")]  # fmt: skip
        assert [m.seq for m in await store.get_messages(sid, limit=2, before_seq=5)] == [2, 3]
        assert [m.seq for m in await store.get_messages(sid, limit=1)] == [5]


async def test_pop_message_of_an_empty_or_unknown_session(store: SessionStore) -> None:
    """Popping a session with nothing left gives None; an unknown one gives None, or SessionNotFound as a user."""
    session = await store.create_session()
    assert await store.pop_message(session.session_id) is None
    await store.add_message(session.session_id, "user", "only")
    popped = await store.pop_message(session.session_id)
    assert popped is not None
    assert popped.content == "only"
    assert await store.pop_message(session.session_id) is None
    assert await store.get_messages(session.session_id) == []
    assert await store.pop_message(new_sid()) is None
    with pytest.raises(SessionNotFound):
        await store.pop_message(new_sid(), user_id="ann")
    with pytest.raises(ValidationError):
        await store.pop_message("not-a-uuid")


async def test_pop_message_respects_the_owner(store: SessionStore) -> None:
    """Another user's pop raises SessionNotFound and removes nothing; the owner's pop works."""
    sid = new_sid()
    await store.add_messages(sid, [NewMessage("user", "a"), NewMessage("assistant", "b")], user_id="olga")
    with pytest.raises(SessionNotFound):
        await store.pop_message(sid, user_id="bob")
    assert len(await store.get_messages(sid)) == 2
    popped = await store.pop_message(sid, user_id="olga")
    assert popped is not None
    assert popped.content == "b"


async def test_concurrent_pops_take_distinct_messages(store: SessionStore) -> None:
    """Concurrent pops each remove a different message until none is left, and the rest get None."""
    sid = new_sid()
    await store.add_messages(sid, [NewMessage("user", f"m{i}") for i in range(1, 21)])
    await store.get_messages(sid)
    popped = await asyncio.gather(*(store.pop_message(sid) for _ in range(24)))
    got = [m.seq for m in popped if m is not None]
    assert sorted(got) == list(range(1, 21))
    assert popped.count(None) == 4
    assert await store.get_messages(sid) == []


@pytest.mark.parametrize("backend", ["postgres", "hybrid"])
async def test_pop_message_round_trips(backend: str, database_url: str, redis_url: str) -> None:
    """A pop is 1 PostgreSQL query, and on the hybrid 1 Redis round trip (a DEL), which an empty pop skips."""
    admin = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
    pool = await create_pool(database_url, min_size=1, max_size=1)
    client = create_redis(redis_url, RedisSettings())
    try:
        await migrate(pool)
        store: PostgresStore | HybridStore = PostgresStore(pool)
        if backend == "hybrid":
            store = HybridStore(client, store, cache=CacheSettings(sync_interval=30.0))
            await store.load_scripts()
        counter = WireCounter(admin, pool)
        await counter.attach()
        sid, warm = new_sid(), new_sid()
        for target in (sid, warm):
            await store.add_messages(target, [NewMessage("user", "a"), NewMessage("assistant", "b")])
            await store.get_messages(target)  # an entry to delete, where there is a cache
        await store.pop_message(warm)  # warm-up: the statement is prepared
        counts = await counter.count(lambda: store.pop_message(sid))
        assert len(counts.pg_queries) == 1, counts.pg_queries
        assert counts.redis_round_trips == (1 if backend == "hybrid" else 0), counts
        assert counts.redis_commands == ({"del": 1} if backend == "hybrid" else {}), counts
        empty = await store.create_session()
        counts = await counter.count(lambda: store.pop_message(empty.session_id))
        assert (len(counts.pg_queries), counts.redis_round_trips) == (1, 0), counts
        await store.close()
    finally:
        await client.aclose()
        await pool.close()
        await admin.aclose()


async def test_instrumented_store_times_pop_message() -> None:
    """The metrics wrapper forwards pop_message and times it as its own operation."""
    registry = CollectorRegistry()
    inner = await open_store("memory")
    wrapped = InstrumentedStore(inner, backend="memory", registry=registry)
    sid = new_sid()
    await wrapped.add_message(sid, "user", "x")
    popped = await wrapped.pop_message(sid)
    assert popped is not None
    assert popped.content == "x"
    assert await wrapped.pop_message(sid) is None
    count = registry.get_sample_value(
        "sessionstore_operation_duration_seconds_count",
        {"backend": "memory", "operation": "pop_message", "outcome": "ok"},
    )
    assert count == 2.0
    await wrapped.close()


# ----------------------------------------------------------------------------- the hybrid cache and pops


async def test_hybrid_cache_never_serves_a_popped_message(hybrid_store: SessionStore) -> None:
    """After a pop the session's entry holds no popped message and every read, cached or not, omits it."""
    assert isinstance(hybrid_store, HybridStore)
    store = hybrid_store
    sid = new_sid()
    await store.add_messages(sid, [NewMessage("user", f"m{i}") for i in range(1, 6)])
    assert (await store.read(sid, limit=3)).cache == "miss"
    hit = await store.read(sid, limit=3)
    assert (hit.cache, [m.content for m in hit.messages]) == ("hit", ["m3", "m4", "m5"])

    popped = await store.pop_message(sid)
    assert popped is not None
    assert popped.content == "m5"
    assert (await store.inspect(sid)).last is None  # the entry is gone, not patched
    for limit in (1, 3, 20):
        for _ in range(2):
            assert "m5" not in [m.content for m in await store.get_messages(sid, limit=limit)]
    # The newest message was popped, so no entry can end at last_seq: nothing is cached yet.
    assert (await store.inspect(sid)).last is None

    await store.add_message(sid, "assistant", "m6")
    assert [m.content for m in await store.get_messages(sid, limit=20)] == ["m1", "m2", "m3", "m4", "m6"]
    entry = await store.inspect(sid)
    assert entry.last == 6
    assert [m.seq for m in entry.messages(sid)] == [6]  # only the run of seqs above the gap
    assert (await store.read(sid, limit=1)).cache == "hit"
    below_gap = await store.read(sid, limit=2)
    assert (below_gap.cache, [m.content for m in below_gap.messages]) == ("bypass", ["m4", "m6"])
    await store.add_messages(sid, [NewMessage("user", "m7"), NewMessage("assistant", "m8")])
    hit = await store.read(sid, limit=3)
    assert (hit.cache, [m.content for m in hit.messages]) == ("hit", ["m6", "m7", "m8"])


async def test_a_delayed_append_cannot_put_a_popped_message_back(hybrid_store: SessionStore) -> None:
    """An append whose cache update reaches Redis only after its message was popped never puts it back."""
    # The append commits, its message is popped and the session read (a refill); then,
    # before or after a later append, the first append's script runs.  The popped seq is
    # never given out again, so the script finds no entry or one at or past that seq.
    assert isinstance(hybrid_store, HybridStore)
    store = hybrid_store
    sid = new_sid()
    await store.add_messages(sid, [NewMessage("user", f"m{i}") for i in range(1, 4)])
    await store.get_messages(sid)
    assert (await store.inspect(sid)).last == 3

    async def visible() -> list[str]:
        seen = []
        for limit in (1, 2, 20):
            seen += [m.content for m in await store.get_messages(sid, limit=limit)]
        return seen

    for late_after_next_append in (False, True):
        delayed = await store.durable._append(sid, None, [("assistant", "popped", {})])  # committed, no script yet
        popped = await store.pop_message(sid)
        assert popped is not None
        assert (popped.seq, popped.content) == (delayed[0].seq, "popped")
        assert "popped" not in await visible()  # reads after the pop, which may refill the entry
        if late_after_next_append:
            await store.add_message(sid, "user", "next")
            assert "popped" not in await visible()
        assert await store._extend(sid, delayed)  # the late script runs now
        assert "popped" not in [m.content for m in (await store.inspect(sid)).messages(sid)]
        assert "popped" not in await visible()
    assert [m.content for m in await store.get_messages(sid, limit=20)] == ["m1", "m2", "m3", "next"]


async def test_a_pop_without_redis_is_recorded_for_every_process(
    database_url: str, redis_url: str, refused_port: int
) -> None:
    """A process that cannot reach Redis records its pop, and a process holding the entry drops it when it syncs."""
    async with (
        open_hybrid(database_url, redis_url) as healthy,
        open_hybrid(database_url, f"redis://127.0.0.1:{refused_port}/0") as cut_off,
    ):
        sid = new_sid()
        await healthy.add_messages(sid, [NewMessage("user", "keep"), NewMessage("assistant", "pop me")])
        await healthy.get_messages(sid)
        hit = await healthy.read(sid)
        assert (hit.cache, [m.content for m in hit.messages]) == ("hit", ["keep", "pop me"])

        popped = await cut_off.pop_message(sid)
        assert popped is not None
        assert popped.content == "pop me"
        assert [m.content for m in await cut_off.get_messages(sid)] == ["keep"]  # from PostgreSQL

        await healthy.sync.tick()  # the background poll, run now instead of waiting for it
        for _ in range(2):
            assert [m.content for m in await healthy.get_messages(sid)] == ["keep"]
        assert (await healthy.inspect(sid)).last is None


# ----------------------------------------------------------------------------- the adapter

_WORDS = ["hello", "Привет", "Γειά", "漢字", "🦒", "naïve", "שלום", "e\u0301", '"quoted"', "back\\slash", "tab\t",
          "line\nbreak", "nul\x00", "lone\ud800", "{}", "[1]", "<b>"]  # fmt: skip


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 6)))


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 2 else 6)
    if kind == 0:
        return rng.randint(-(2**70), 2**70)
    if kind == 1:
        return rng.choice([0.1, -0.0, 1e300, 3.14159, -2.5e-8])
    if kind == 2:
        return rng.choice([True, False, None])
    if kind in (3, 4, 5):
        return _text(rng)
    if kind in (6, 7):
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {f"k{i}": _value(rng, depth + 1) for i in range(rng.randint(0, 3))}


def random_item(rng: random.Random) -> dict[str, Any]:
    """One Responses-API input item of a random kind (as the SDK stores them), with awkward text."""
    n = rng.randrange(1_000_000)
    kind = rng.randrange(9)
    if kind == 0:
        return {"role": "user", "content": _text(rng)}
    if kind == 1:
        return {"role": rng.choice(["system", "developer"]), "content": _text(rng)}
    if kind == 2:
        parts: list[dict[str, Any]] = [{"type": "input_text", "text": _text(rng)}]
        if rng.random() < 0.5:
            parts.append({"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"})
        return {"type": "message", "role": "user", "content": parts}
    if kind == 3:
        return {"id": f"msg_{n}", "type": "message", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": _text(rng), "annotations": []}]}  # fmt: skip
    if kind == 4:
        args = json.dumps({"city": _text(rng), "extra": _value(rng)})
        return {"type": "function_call", "call_id": f"call_{n}", "name": "lookup", "arguments": args,
                "id": f"fc_{n}", "status": "completed"}  # fmt: skip
    if kind == 5:
        output: Any = _text(rng) if rng.random() < 0.6 else [{"type": "input_text", "text": _text(rng)}]
        return {"type": "function_call_output", "call_id": f"call_{n}", "output": output}
    if kind == 6:
        return {"id": f"rs_{n}", "type": "reasoning", "summary": [{"type": "summary_text", "text": _text(rng)}]}
    if kind == 7:
        return {"type": "custom_item", "payload": _value(rng), "nested": {"deep": [_value(rng), _value(rng)]}}
    return {}


async def test_store_session_satisfies_the_sdk_protocol(sdk: Any, memory_store: SessionStore) -> None:
    """StoreSession passes the SDK's runtime Session check and maps any session id to a store UUID."""
    from sessionbench.store.integrations.agents import NAMESPACE, StoreSession, store_session_id

    session = StoreSession("user-123", memory_store)
    assert isinstance(session, sdk.memory.Session)
    assert session.session_id == "user-123"
    assert session.store_session_id == str(uuid.uuid5(NAMESPACE, "user-123"))
    same = str(uuid.uuid4())
    assert store_session_id(same) == same
    assert store_session_id(same.upper()) == same


async def test_every_kind_of_item_round_trips_losslessly(sdk: Any, store: SessionStore) -> None:
    """Items of every kind come back equal to what was added, from PostgreSQL and from the cache alike."""
    from sessionbench.store.integrations.agents import ITEM_KEY, StoreSession

    rng = random.Random(7)
    items = [random_item(rng) for _ in range(60)]
    session = StoreSession(new_sid(), store)
    await session.add_items(items)  # type: ignore[arg-type]
    for _ in range(2):  # the second read is a hit where there is a cache
        assert await session.get_items() == items
        assert await session.get_items(limit=10) == items[-10:]
    stored = await store.get_messages(session.store_session_id, limit=100)
    assert all(m.metadata == {ITEM_KEY: 1} for m in stored)
    assert {m.role for m in stored} <= {"system", "user", "assistant", "tool"}
    assert "tool" in {m.role for m in stored}


async def test_an_oversized_item_is_refused_before_anything_is_written(sdk: Any, store: SessionStore) -> None:
    """An item beyond the store's content limit raises ValidationError naming it, and no item of the call is stored."""
    from sessionbench.store.integrations.agents import StoreSession

    session = StoreSession(new_sid(), store, batch_size=2)
    items = [{"role": "user", "content": "fine"}] * 5 + [{"role": "user", "content": "x" * 70_000}]
    with pytest.raises(ValidationError) as caught:
        await session.add_items(items)  # type: ignore[arg-type]
    assert caught.value.field == "items[5].content"
    with pytest.raises(ValidationError) as caught:
        await session.add_items([{"role": "user", "content": {1, 2}}])  # type: ignore[list-item]
    assert caught.value.field == "items[0]"
    assert await session.get_items() == []


async def _differential(sdk: Any, store: SessionStore, seed: int, steps: int) -> dict[str, int]:
    """Run ``steps`` random calls on SQLiteSession and StoreSession pairs; assert every result is equal."""
    from sessionbench.store.integrations.agents import StoreSession

    rng = random.Random(seed)
    settings = [None, {"limit": 4}]  # a dict, as the SDK also accepts
    sids = [new_sid(), new_sid()]
    refs = [sdk.SQLiteSession(sids[0]), sdk.SQLiteSession(sids[1], session_settings=settings[1])]

    def ours(i: int) -> StoreSession:  # a fresh adapter each time: all state is in the store
        return StoreSession(sids[i], store, session_settings=settings[i], page_size=7, batch_size=3)

    counts = {"get_items": 0, "add_items": 0, "pop_item": 0, "clear_session": 0}
    try:
        for step in range(steps):
            i = rng.randrange(2)
            ref, mine = refs[i], ours(i)
            op = rng.choices(list(counts), weights=[40, 38, 18, 4])[0]
            counts[op] += 1
            where = f"seed {seed} step {step} session {i} {op}"
            if op == "get_items":
                limit = rng.choice([None, None, 0, -1, 1, 2, 3, 5, 8, 15, 40])
                assert await mine.get_items(limit) == await ref.get_items(limit), f"{where}({limit})"
            elif op == "add_items":
                items = [random_item(rng) for _ in range(rng.choice([0, 1, 1, 2, 3, 4, 7]))]
                await ref.add_items(items)
                await mine.add_items(items)
            elif op == "pop_item":
                assert await mine.pop_item() == await ref.pop_item(), where
            else:
                await ref.clear_session()
                await mine.clear_session()
        for i in range(2):
            assert await ours(i).get_items(-1) == await refs[i].get_items(-1)
    finally:
        for ref in refs:
            ref.close()
    return counts


async def test_store_session_matches_sqlite_session_step_by_step(sdk: Any, store: SessionStore) -> None:
    """The same seeded random get_items/add_items/pop_item/clear_session calls give SQLiteSession's results."""
    counts = await _differential(sdk, store, seed=20240611, steps=DIFFERENTIAL_STEPS)
    assert sum(counts.values()) == DIFFERENTIAL_STEPS
    assert min(counts.values()) > 0
    print(f"differential: {DIFFERENTIAL_STEPS} steps on {type(store).__name__}: {counts}")


class _ScriptedModel:
    """An offline model for the SDK's Runner: calls the ``lookup`` tool, then answers with its output."""

    def build(self, sdk: Any) -> Any:
        from agents.items import ModelResponse
        from agents.models.interface import Model
        from agents.usage import Usage
        from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

        class Scripted(Model):  # type: ignore[misc]
            async def get_response(self, *args: Any, **kwargs: Any) -> Any:
                items = args[1] if len(args) > 1 else kwargs["input"]
                last = items[-1] if isinstance(items, list) else {}
                n = len(items) if isinstance(items, list) else 1
                if isinstance(last, dict) and last.get("type") == "function_call_output":
                    text = ResponseOutputText(type="output_text", text=f"done: {last['output']}", annotations=[])
                    out: Any = ResponseOutputMessage(id=f"msg_{n}", type="message", role="assistant",
                                                     status="completed", content=[text])  # fmt: skip
                else:
                    out = ResponseFunctionToolCall(type="function_call", call_id=f"call_{n}", name="lookup",
                                                   arguments=json.dumps({"city": "Zürich"}), id=f"fc_{n}",
                                                   status="completed")  # fmt: skip
                return ModelResponse(output=[out], usage=Usage(), response_id=None)

            def stream_response(self, *args: Any, **kwargs: Any) -> Any:
                raise NotImplementedError

        return Scripted()


async def test_the_sdk_runner_keeps_tool_calls_in_the_store(sdk: Any, hybrid_store: SessionStore) -> None:
    """Runner.run with a StoreSession on the hybrid stores the items SQLiteSession stores, tool calls included."""
    from sessionbench.store.integrations.agents import StoreSession

    sdk.set_tracing_disabled(True)

    @sdk.function_tool
    def lookup(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city} ✓"

    agent = sdk.Agent(name="weather", model=_ScriptedModel().build(sdk), tools=[lookup])
    ref, ours = sdk.SQLiteSession("runner"), StoreSession("runner", hybrid_store)
    try:
        for question in ("weather?", "and tomorrow?"):
            expected = await sdk.Runner.run(agent, question, session=ref)
            got = await sdk.Runner.run(agent, question, session=ours)
            assert got.final_output == expected.final_output == "done: sunny in Zürich ✓"
        items = await ours.get_items()
        assert items == await ref.get_items()
        assert [item.get("type", "message") for item in items] == ["message", "function_call",
                                                                     "function_call_output", "message"] * 2  # fmt: skip
    finally:
        ref.close()
