"""Peers: the chat-history stores teams already run, as columns of ``sessionbench compare``.

Each peer is driven through its own public API on the same servers, with the same
workload, and implements :class:`sessionbench.bench.harness.runner.Target`.  The peers need the
``peers`` extra; this module imports none of it until a peer is opened, so it can be
imported (and its names listed) without the extra.  ``sessionbench/bench/harness/PEERS.md`` says
exactly what each column does, what it costs per operation and which versions it was
measured with.

``peer-langchain-postgres`` (:class:`LangchainPostgresPeer`)
    langchain-postgres ``PostgresChatMessageHistory`` with its async psycopg 3
    connection, one per operation from a psycopg pool (2 to 20 connections, autocommit).
    Append: ``aadd_messages`` (one pipelined ``executemany`` INSERT, 1 round trip);
    read: ``aget_messages``, the **whole history** (1 round trip), cut to the window
    in this process.
``peer-langchain-redis`` (:class:`LangchainRedisPeer`)
    langchain-community ``RedisChatMessageHistory``: a **sync** redis-py client whose
    async methods are langchain-core's thread-pool fallbacks.  One history object per
    session (each with its own client).  Append: one ``LPUSH`` per message (n round
    trips); read: ``LRANGE 0 -1``, the whole history (1 round trip).  No TTL: the list
    is the only copy of the history.  The warning its import emits ("langchain-community
    is being sunset") is ignored by message at that import (:data:`COMMUNITY_SUNSET`).
``peer-langgraph-postgres`` (:class:`LanggraphPostgresPeer`)
    LangGraph ``AsyncPostgresSaver`` on a psycopg pool, behind a one-node
    ``StateGraph(MessagesState)``.  Append: ``graph.aupdate_state`` (read the latest
    checkpoint, write a new one holding the whole message list: 3 round trips, 2 for
    a thread's first);
    read: ``graph.aget_state`` (1 round trip), the whole list.  The saver holds one
    asyncio lock around every query, so it runs one query at a time per process.

``langgraph-checkpoint-redis`` is not a column: it needs the RedisJSON and RediSearch
modules, which plain Valkey does not have (PEERS.md).

Round trips: redis-py's are counted by :class:`sessionbench.bench.harness.results.DriverCallCounter`;
psycopg's by :class:`PsycopgRoundTrips` (which can add them to a ``DriverCallCounter``'s
``postgres`` count).
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from sessionbench.bench.harness.results import note_postgres
from sessionbench.bench.harness.runner import payload, session_uuid
from sessionbench.store.accesslog import LETTER_ROLES

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage
    from langgraph.graph.state import CompiledStateGraph
    from psycopg import AsyncConnection
    from psycopg.rows import DictRow
    from psycopg_pool import AsyncConnectionPool

__all__ = [
    "PEERS",
    "PEER_EXTRA",
    "LangchainPostgresPeer",
    "LangchainRedisPeer",
    "LanggraphPostgresPeer",
    "PeerUnavailable",
    "PsycopgRoundTrips",
    "missing_packages",
    "open_peer",
    "window",
]

PEERS: tuple[str, ...] = ("peer-langchain-postgres", "peer-langchain-redis", "peer-langgraph-postgres")
#: What to install for the peers.
PEER_EXTRA = "pip install 'sessionbench[peers]'"
#: The import names each peer needs (what ``missing_packages`` looks for).
REQUIRES: dict[str, tuple[str, ...]] = {
    "peer-langchain-postgres": ("langchain_core", "langchain_postgres", "psycopg", "psycopg_pool"),
    "peer-langchain-redis": ("langchain_core", "langchain_community", "redis"),
    "peer-langgraph-postgres": (
        "langchain_core",
        "langgraph",
        "langgraph.checkpoint.postgres",
        "psycopg",
        "psycopg_pool",
    ),
}
#: The one warning the langchain-community import emits (it is "being sunset"); ignored
#: by message at that import only, so any other warning still shows (or fails a test).
COMMUNITY_SUNSET = r".*langchain-community.* is being sunset"
POOL_MIN = 2
POOL_MAX = 20  # the store's PostgreSQL pool (sessionbench.store.settings.PostgresSettings)


class PeerUnavailable(RuntimeError):
    """A peer was asked for but the ``peers`` extra (or part of it) is not installed."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def missing_packages(name: str | None = None) -> list[str]:
    """Import names missing for peer ``name`` (every peer when None); empty when it can run."""
    if name is not None and name not in REQUIRES:
        raise ValueError(f"unknown peer {name!r}; choose one of {', '.join(PEERS)}")
    names = [name] if name is not None else list(PEERS)
    wanted = dict.fromkeys(m for n in names for m in REQUIRES[n])
    return [m for m in wanted if not _installed(m)]


def window(messages: Sequence[Any], limit: int, before: int | None) -> list[Any]:
    """The last ``limit`` of a whole history, before sequence number ``before`` (1-based) when given.

    The peers return every message of the session; this is the store's
    ``get_messages(limit, before_seq)`` applied in this process.
    """
    end = len(messages) if before is None else max(0, min(len(messages), before - 1))
    return list(messages[max(0, end - limit) : end])


class _Messages:
    """LangChain messages for an append: the same payloads the store columns write."""

    def __init__(self) -> None:
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

        self._kinds = {"user": HumanMessage, "assistant": AIMessage, "system": SystemMessage}
        self._tool = ToolMessage
        self._salt = 0

    def make(self, roles: str, sizes: Sequence[int]) -> list[BaseMessage]:
        out: list[BaseMessage] = []
        for role_letter, size in zip(roles, sizes, strict=True):
            self._salt += 1
            role = LETTER_ROLES[role_letter]
            text = payload(size, self._salt)
            if role == "tool":
                out.append(self._tool(content=text, tool_call_id=f"call-{self._salt}"))
            else:
                out.append(self._kinds[role](content=text))
        return out


# ----------------------------------------------------------------------------- psycopg round trips


class _Counter(Protocol):
    postgres: int


class PsycopgRoundTrips(AbstractContextManager["PsycopgRoundTrips"]):
    """Counts psycopg 3 round trips while active: each time a connection sends after it received.

    psycopg runs every exchange with the server as a generator (``psycopg.generators``:
    ``execute`` sends and waits, ``send`` flushes, ``fetch``/``fetch_many`` wait for
    results, ``pipeline_communicate`` sends queued pipeline commands).  This wraps them
    where psycopg's cursor, pipeline and connection code call them and keeps one flag
    per connection: a send after a receive starts a round trip.  A pipeline is one round
    trip up to its Sync (results that happen to arrive earlier do not end it), so the
    count does not depend on timing.  A ``BEGIN``/``COMMIT`` psycopg sends on its own is
    a round trip, as is the one-off ``PREPARE`` of a statement on a connection (asyncpg's
    count leaves that one out; it happens once per statement and connection).  Opening
    a connection is not counted.

    ``into``: also add each round trip to ``into.postgres`` (a
    :class:`~sessionbench.bench.harness.results.DriverCallCounter`), so psycopg peers fill the same
    "PG round trips/turn" row.  Patches module attributes of psycopg for the duration of
    the ``with`` block; only one may be active at a time.  A no-op when psycopg is not
    installed.
    """

    #: ``(module, attribute, role)``: where psycopg's code looks the generators up.
    SITES: tuple[tuple[str, str, str], ...] = (
        ("psycopg.generators", "execute", "both"),  # BEGIN / COMMIT / SET via the connection
        ("psycopg._cursor_base", "execute", "both"),
        ("psycopg._cursor_base", "send", "send"),
        ("psycopg._cursor_base", "fetch", "receive"),
        ("psycopg._server_cursor_base", "execute", "both"),
        ("psycopg._pipeline_base", "send", "send"),
        ("psycopg._pipeline_base", "fetch_many", "receive"),
        ("psycopg._pipeline_base", "pipeline_communicate", "pipeline"),
    )

    def __init__(self, into: _Counter | None = None) -> None:
        self.count = 0
        self.into = into
        self._received: dict[int, bool] = {}
        self._saved: list[tuple[Any, str, Any]] = []
        self._sync_status: Any = None

    def _sent(self, pgconn: object) -> None:
        key = id(pgconn)
        if self._received.get(key, True):
            self._received[key] = False
            self.count += 1
            note_postgres(self.into)

    def _got(self, pgconn: object) -> None:
        self._received[id(pgconn)] = True

    def _wrap(self, original: Callable[..., Any], role: str) -> Callable[..., Any]:
        counter = self

        def both(pgconn: Any, *args: Any) -> Any:
            counter._sent(pgconn)
            result = yield from original(pgconn, *args)
            counter._got(pgconn)
            return result

        def send(pgconn: Any, *args: Any) -> Any:
            counter._sent(pgconn)
            return (yield from original(pgconn, *args))

        def receive(pgconn: Any, *args: Any) -> Any:
            result = yield from original(pgconn, *args)
            if result:
                counter._got(pgconn)
            return result

        def pipeline(pgconn: Any, commands: Any) -> Any:
            if commands:
                counter._sent(pgconn)
            results = yield from original(pgconn, commands)
            if any(batch and batch[0].status == counter._sync_status for batch in results):
                counter._got(pgconn)
            return results

        return {"both": both, "send": send, "receive": receive, "pipeline": pipeline}[role]

    def __enter__(self) -> PsycopgRoundTrips:
        if not _installed("psycopg"):
            return self
        import psycopg.pq

        self._sync_status = psycopg.pq.ExecStatus.PIPELINE_SYNC
        for module_name, attribute, role in self.SITES:
            module = importlib.import_module(module_name)
            original = getattr(module, attribute)
            self._saved.append((module, attribute, original))
            setattr(module, attribute, self._wrap(original, role))
        return self

    def __exit__(self, *exc: object) -> None:
        for module, attribute, original in reversed(self._saved):
            setattr(module, attribute, original)
        self._saved = []


# ----------------------------------------------------------------------------- psycopg pool


async def _pool(database_url: str, *, max_size: int, **kwargs: Any) -> AsyncConnectionPool[Any]:
    """A psycopg pool like the store's (2 to ``max_size`` connections), opened and filled."""
    from psycopg_pool import AsyncConnectionPool

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database_url, min_size=min(POOL_MIN, max_size), max_size=max_size, kwargs=kwargs, open=False
    )
    await pool.open(wait=True, timeout=10.0)
    return pool


# ----------------------------------------------------------------------------- the peers


class LangchainPostgresPeer:
    """langchain-postgres ``PostgresChatMessageHistory`` (async, psycopg 3), one pooled connection per operation."""

    name = "peer-langchain-postgres"
    TABLE = "peer_langchain_messages"

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[Any]]) -> None:
        from langchain_postgres import PostgresChatMessageHistory

        self.pool = pool
        self._history = PostgresChatMessageHistory
        self._messages = _Messages()

    @classmethod
    async def open(cls, database_url: str, *, max_size: int = POOL_MAX) -> LangchainPostgresPeer:
        """Open the pool (autocommit connections) and create the table (``acreate_tables``)."""
        from langchain_postgres import PostgresChatMessageHistory

        pool = await _pool(database_url, max_size=max_size, autocommit=True)
        try:
            async with pool.connection() as conn:
                await PostgresChatMessageHistory.acreate_tables(conn, cls.TABLE)
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    async def append(self, session: str, roles: str, sizes: Sequence[int]) -> None:
        """``aadd_messages``: one INSERT per message, pipelined in one ``executemany`` (1 round trip)."""
        messages = self._messages.make(roles, sizes)
        async with self.pool.connection() as conn:
            await self._history(self.TABLE, session_uuid(session), async_connection=conn).aadd_messages(messages)

    async def messages(self, session: str, limit: int, before: int | None) -> list[BaseMessage]:
        """``aget_messages``: the whole history (1 round trip), then the window of it."""
        async with self.pool.connection() as conn:
            messages = await self._history(self.TABLE, session_uuid(session), async_connection=conn).aget_messages()
        return window(messages, limit, before)

    async def read(self, session: str, limit: int, before: int | None) -> str | None:
        await self.messages(session, limit, before)
        return None

    async def close(self) -> None:
        await self.pool.close()


class LangchainRedisPeer:
    """langchain-community ``RedisChatMessageHistory``: sync redis-py, async methods on a thread pool.

    One history object per session, made on the session's first operation and kept
    until :meth:`close`.  Each makes its own redis-py client and connection: the
    constructor's ``INFO cluster`` and redis-py's connection handshake (``HELLO``,
    ``CLIENT MAINT_NOTIFICATIONS``, two ``CLIENT SETINFO``) are 5 more requests on a
    session's first operation.
    """

    name = "peer-langchain-redis"
    PREFIX = "message_store:"  # the class's default key prefix

    def __init__(self, redis_url: str) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=COMMUNITY_SUNSET, category=DeprecationWarning)
            from langchain_community.chat_message_histories import RedisChatMessageHistory

        self.redis_url = redis_url
        self._cls = RedisChatMessageHistory
        self._histories: dict[str, RedisChatMessageHistory] = {}
        self._messages = _Messages()

    @classmethod
    async def open(cls, redis_url: str) -> LangchainRedisPeer:
        return cls(redis_url)

    def history(self, session: str) -> Any:
        """The session's history object (made on first use)."""
        found = self._histories.get(session)
        if found is None:
            found = self._cls(session_uuid(session), url=self.redis_url, key_prefix=self.PREFIX)
            self._histories[session] = found
        return found

    async def append(self, session: str, roles: str, sizes: Sequence[int]) -> None:
        """``aadd_messages``: one ``LPUSH`` per message, one after another, on a worker thread (n round trips)."""
        await self.history(session).aadd_messages(self._messages.make(roles, sizes))

    async def messages(self, session: str, limit: int, before: int | None) -> list[BaseMessage]:
        """``aget_messages``: ``LRANGE key 0 -1``, the whole history (1 round trip), then the window of it."""
        return window(await self.history(session).aget_messages(), limit, before)

    async def read(self, session: str, limit: int, before: int | None) -> str | None:
        await self.messages(session, limit, before)
        return None

    async def close(self) -> None:
        histories, self._histories = list(self._histories.values()), {}
        for history in histories:
            history.redis_client.close()


class LanggraphPostgresPeer:
    """LangGraph ``AsyncPostgresSaver`` (pooled) behind a one-node ``StateGraph(MessagesState)``."""

    name = "peer-langgraph-postgres"

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[DictRow]], graph: CompiledStateGraph[Any]) -> None:
        self.pool = pool
        self.graph = graph
        self._messages = _Messages()

    @classmethod
    async def open(cls, database_url: str, *, max_size: int = POOL_MAX) -> LanggraphPostgresPeer:
        """The pool with the connection settings the saver requires, ``setup()``, and the compiled graph."""
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from langgraph.graph import END, START, MessagesState, StateGraph
        from psycopg.rows import dict_row

        pool = await _pool(database_url, max_size=max_size, autocommit=True, prepare_threshold=0, row_factory=dict_row)
        try:
            saver = AsyncPostgresSaver(pool)
            await saver.setup()
            builder = StateGraph(MessagesState)
            builder.add_node("noop", _noop)  # a graph needs a node; the turns are written with aupdate_state
            builder.add_edge(START, "noop")
            builder.add_edge("noop", END)
            graph = builder.compile(checkpointer=saver)
        except BaseException:
            await pool.close()
            raise
        return cls(pool, graph)

    @staticmethod
    def config(session: str) -> Any:
        """The run config naming the session's thread."""
        return {"configurable": {"thread_id": session_uuid(session)}}

    async def append(self, session: str, roles: str, sizes: Sequence[int]) -> None:
        """``aupdate_state``: read the latest checkpoint, write one with the whole list (3 round trips; first: 2)."""
        await self.graph.aupdate_state(self.config(session), {"messages": self._messages.make(roles, sizes)})

    async def messages(self, session: str, limit: int, before: int | None) -> list[BaseMessage]:
        """``aget_state``: the latest checkpoint, the whole list (1 round trip), then the window of it."""
        state = await self.graph.aget_state(self.config(session))
        return window(state.values.get("messages", []), limit, before)

    async def read(self, session: str, limit: int, before: int | None) -> str | None:
        await self.messages(session, limit, before)
        return None

    async def close(self) -> None:
        await self.pool.close()


def _noop(state: Any) -> dict[str, Any]:
    return {}


Peer = LangchainPostgresPeer | LangchainRedisPeer | LanggraphPostgresPeer


async def open_peer(name: str, database_url: str, redis_url: str, *, pool_size: int = POOL_MAX) -> Peer:
    """Open peer ``name`` (one of :data:`PEERS`) on these servers; :class:`PeerUnavailable` without the extra."""
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; choose one of {', '.join(PEERS)}")
    missing = missing_packages(name)
    if missing:
        raise PeerUnavailable(f"{name} needs {', '.join(missing)}: {PEER_EXTRA}")
    if name == "peer-langchain-postgres":
        return await LangchainPostgresPeer.open(database_url, max_size=pool_size)
    if name == "peer-langchain-redis":
        return await LangchainRedisPeer.open(redis_url)
    return await LanggraphPostgresPeer.open(database_url, max_size=pool_size)


#: What each column stores where, how, and its round trips once warm (PEERS.md has the details).
ABOUT: dict[str, dict[str, Any]] = {
    "peer-langchain-postgres": {
        "history_in": "PostgreSQL",
        "durable": True,
        "append": "aadd_messages: one JSONB row per message, one pipelined executemany",
        "read": "aget_messages: the whole history, windowed in this process",
        "round_trips": {"append": "1 PostgreSQL", "read": "1 PostgreSQL"},
    },
    "peer-langchain-redis": {
        "history_in": "Redis only (one list per session, no TTL)",
        "durable": False,
        "append": "aadd_messages on a worker thread: one LPUSH per message (sync redis-py)",
        "read": "aget_messages on a worker thread: LRANGE 0 -1, the whole history, windowed in this process",
        "round_trips": {"append": "1 Redis per message", "read": "1 Redis", "first use of a session": "+5 Redis"},
    },
    "peer-langgraph-postgres": {
        "history_in": "PostgreSQL (checkpoints)",
        "durable": True,
        "append": "graph.aupdate_state: a new checkpoint holding the whole message list",
        "read": "graph.aget_state: the latest checkpoint, the whole list, windowed in this process",
        "round_trips": {"append": "3 PostgreSQL (2 for a thread's first)", "read": "1 PostgreSQL"},
    },
}
_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "peer-langchain-postgres": ("langchain-postgres", "langchain-core", "psycopg", "psycopg-pool"),
    "peer-langchain-redis": ("langchain-community", "langchain-core", "redis"),
    "peer-langgraph-postgres": ("langgraph", "langgraph-checkpoint-postgres", "psycopg", "psycopg-pool"),
}


def describe(name: str) -> dict[str, Any]:
    """What a peer column runs, for the result file's settings: :data:`ABOUT` plus the library versions."""
    from importlib import metadata

    versions: dict[str, str] = {}
    for dist in _DISTRIBUTIONS[name]:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return {"peer": name, **ABOUT[name], "versions": versions}
