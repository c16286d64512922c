"""A stateful property test: the hybrid store against a plain in-memory model.

Hypothesis drives random sequences of appends (single and batch, some concurrent),
reads (``limit``, ``before_seq``, some concurrent with appends), session deletes,
forced expiry and deletion of cache keys (all or some of a session's keys), epoch
bumps, Redis kill + restart and Redis freeze + thaw, against real servers.  The
property: **a read never returns a history that differs from the model of
acknowledged writes** (reads racing a write may return the state before or after
it, nothing else).  Between steps an invariant reads the cache straight from Redis:
every entry the store would serve is a contiguous, up-to-date suffix of the model.

The cache is tiny (4 messages) so windows roll constantly, the dirty-session bound
is 1 so outages overflow it into epoch bumps, and Redis timeouts and the breaker's
reset are short (50 ms) so outages are cheap.

Runs ``EXAMPLES x STEPS`` (40 x 50 = 2,000 steps by default; ``SESSIONBENCH_LONG=1``
for 300 x 100).  The machine owns its event loop (created in ``__init__``, closed in
``teardown``) and runs each rule's coroutine on it: no pytest-asyncio inside.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Awaitable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from redis.asyncio.cluster import RedisCluster

from sessionbench.bench.servers import EmbeddedRedis, EmbeddedRedisCluster, Servers
from sessionbench.store.backends.hybrid import HybridStore, create_redis
from sessionbench.store.backends.postgres import PostgresStore, create_pool, migrate
from sessionbench.store.models import Message, NewMessage
from sessionbench.store.settings import CacheSettings, RedisSettings
from tests.hybrid_support import RecordingEvents, cache_keys, read_cache_entries

T = TypeVar("T")
pytestmark = pytest.mark.faults

LONG = os.environ.get("SESSIONBENCH_LONG", "") not in ("", "0")
EXAMPLES, STEPS = (300, 100) if LONG else (55, 50)
SESSIONS = 2
CACHE_SIZE = 4
ROLES = ("user", "assistant", "system", "tool")


@dataclass
class Config:
    database_url: str
    redis_url: str
    redis_server: EmbeddedRedis | None  # None: a Redis Cluster, not killed or frozen here
    cluster: bool = False


session_index = st.integers(0, SESSIONS - 1)
rarely = st.integers(0, 3).map(lambda n: n == 0)  # disruptive rules act on about 1 in 4 of their draws
key_choice = st.sampled_from(["mhl", "mh", "m", "m", "h", "l"])  # the list alone: what LRU eviction does


class HybridVsModel(RuleBasedStateMachine):
    """Hybrid store vs a dict of acknowledged messages per session."""

    steps_run: ClassVar[int] = 0
    seen: ClassVar[Counter[str]] = Counter()
    examples_run: ClassVar[int] = 0
    instances: ClassVar[int] = 0

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        HybridVsModel.instances += 1
        HybridVsModel.examples_run += 1
        self.prefix = f"sm{HybridVsModel.instances}"
        self.sids = [str(uuid.uuid4()) for _ in range(SESSIONS)]
        self.model: dict[str, list[Message]] = {sid: [] for sid in self.sids}
        self.counter = 0
        self.up = True
        self.frozen = False
        self.disrupted = False
        self.events = RecordingEvents()
        self.loop = asyncio.new_event_loop()
        self.closing = AsyncExitStack()  # _close() undoes exactly what _open got to
        try:
            self.run(self._open())
        except BaseException:
            # hypothesis calls teardown() only on a machine it built: close what _open made
            self.run(self._close())
            self.loop.close()
            raise

    # -- plumbing ------------------------------------------------------------------------
    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 30))

    async def _open(self) -> None:
        self.pool = await create_pool(self.cfg.database_url, min_size=1, max_size=4)
        self.closing.push_async_callback(self.pool.close)
        await migrate(self.pool)
        # Short timeouts make kills and freezes of the single server quick to notice; the
        # cluster is never disrupted, so there a timeout would only be the busy machine.
        timeout = 1.0 if self.cfg.cluster else 0.05
        fast = RedisSettings(socket_timeout=timeout, connect_timeout=timeout, breaker_failures=3, breaker_reset=0.05)
        self.client = create_redis(self.cfg.redis_url, fast, cluster=self.cfg.cluster)
        self.closing.push_async_callback(self.client.aclose)
        if self.cfg.cluster:
            self.admin = RedisCluster.from_url(self.cfg.redis_url, decode_responses=True, socket_timeout=2)
        else:
            self.admin = aioredis.Redis.from_url(self.cfg.redis_url, decode_responses=True, socket_timeout=2)
        self.closing.push_async_callback(self.admin.aclose)
        if self.cfg.cluster:
            await self.client.initialize()
        cache = CacheSettings(size=CACHE_SIZE, dirty_max=1, key_prefix=self.prefix)
        self.store = HybridStore(self.client, PostgresStore(self.pool), cache=cache, breaker=fast, events=self.events)
        self.closing.push_async_callback(self.store.close)
        await self.store.load_scripts()

    def teardown(self) -> None:
        ev = self.events
        HybridVsModel.seen.update(
            [f"result:{r}" for r in ev.results]
            + [f"populate:{p}" for p in ev.populates]
            + [f"invalidation:{i}" for i in ev.invalidations]
            + [f"breaker:{b}" for b in ev.breaker]
        )
        try:
            if self.frozen and self.cfg.redis_server is not None:
                self.cfg.redis_server.thaw()
            if not self.up and self.cfg.redis_server is not None:
                self.cfg.redis_server.restart()
            self.run(self._close())
        finally:
            self.loop.close()

    async def _close(self) -> None:
        await self.closing.aclose()

    def _text(self) -> str:
        self.counter += 1
        return f"m{self.counter}"

    def _expected(self, sid: str, limit: int, before: int | None) -> list[Message]:
        history = [m for m in self.model[sid] if before is None or m.seq < before]
        return history[-limit:]

    def _step(self) -> None:
        HybridVsModel.steps_run += 1

    def _admin_ok(self) -> bool:
        return self.up and not self.frozen

    # -- writes --------------------------------------------------------------------------
    @rule(s=session_index, role=st.sampled_from(ROLES), meta=st.booleans())
    def append(self, s: int, role: str, meta: bool) -> None:
        self._step()
        sid = self.sids[s]
        msg = self.run(self.store.add_message(sid, role, self._text(), {"n": self.counter} if meta else None))
        assert msg.seq == len(self.model[sid]) + 1
        self.model[sid].append(msg)

    @rule(s=session_index, n=st.integers(1, 4))
    def append_turn(self, s: int, n: int) -> None:
        self._step()
        sid = self.sids[s]
        batch = [NewMessage(ROLES[i % 2], self._text()) for i in range(n)]
        stored = self.run(self.store.add_messages(sid, batch))
        assert [m.seq for m in stored] == list(range(len(self.model[sid]) + 1, len(self.model[sid]) + n + 1))
        self.model[sid].extend(stored)

    @rule(s=session_index, go=rarely)
    def delete_session(self, s: int, go: bool) -> None:
        self._step()
        sid = self.sids[s]
        if not go:
            return
        assert self.run(self.store.delete_session(sid)) == bool(self.model[sid])
        self.model[sid] = []

    # -- reads ---------------------------------------------------------------------------
    @rule(s=session_index, limit=st.integers(1, CACHE_SIZE))
    def read_recent(self, s: int, limit: int) -> None:
        """The chat service's read: the last few messages (what the cache is for)."""
        self._step()
        sid = self.sids[s]
        assert self.run(self.store.get_messages(sid, limit=limit)) == self._expected(sid, limit, None)

    @rule(s=session_index, limit=st.integers(1, 3 * CACHE_SIZE), before=st.none() | st.integers(1, 40))
    def read(self, s: int, limit: int, before: int | None) -> None:
        self._step()
        sid = self.sids[s]
        got = self.run(self.store.get_messages(sid, limit=limit, before_seq=before))
        assert got == self._expected(sid, limit, before)

    @rule(s=session_index, limit=st.integers(1, CACHE_SIZE), twice=st.booleans())
    def read_racing_appends(self, s: int, limit: int, twice: bool) -> None:
        """A read and one or two appends to the same session, concurrently on the loop."""
        self._step()
        sid = self.sids[s]
        states = [self._expected(sid, limit, None)]
        writes = [self.store.add_message(sid, "user", self._text()) for _ in range(2 if twice else 1)]

        async def together() -> tuple[list[Message], list[Message]]:
            got, *stored = await asyncio.gather(self.store.get_messages(sid, limit=limit), *writes)
            return got, stored

        got, stored = self.run(together())
        for msg in sorted(stored, key=lambda m: m.seq):
            assert msg.seq == len(self.model[sid]) + 1
            self.model[sid].append(msg)
            states.append(self._expected(sid, limit, None))
        assert got in states
        assert self.run(self.store.get_messages(sid, limit=limit)) == states[-1]

    # -- the cache under attack ----------------------------------------------------------
    @precondition(_admin_ok)
    @rule(s=session_index, which=key_choice)
    def expire_keys(self, s: int, which: str) -> None:
        """Force-expire some of a session's cache keys (PEXPIRE 1 ms, then wait past it)."""
        self._step()
        keys = dict(zip("mhl", cache_keys(self.sids[s], self.prefix), strict=True))

        async def expire() -> None:
            for k in which:
                await self.admin.pexpire(keys[k], 1)
            await asyncio.sleep(0.003)

        self.run(expire())

    @precondition(_admin_ok)
    @rule(s=session_index, which=key_choice)
    def delete_keys(self, s: int, which: str) -> None:
        self._step()
        keys = dict(zip("mhl", cache_keys(self.sids[s], self.prefix), strict=True))
        self.run(self.admin.delete(*(keys[k] for k in which)))

    @rule(go=rarely)
    def bump_epoch(self, go: bool) -> None:
        """Someone (another instance after an overflow) invalidated the whole namespace in PostgreSQL."""
        self._step()
        if go:
            self.run(self.pool.execute("UPDATE sessionstore_cache_epoch SET epoch = epoch + 1"))

    @precondition(lambda self: self.up and not self.frozen and self.cfg.redis_server is not None)
    @rule(go=rarely)
    def kill_redis(self, go: bool) -> None:
        self._step()
        if not go or self.cfg.redis_server is None:
            return
        self.cfg.redis_server.kill()
        self.up = False
        self.disrupted = True

    @precondition(lambda self: not self.up and self.cfg.redis_server is not None)
    @rule()
    def restart_redis(self) -> None:
        self._step()
        assert self.cfg.redis_server is not None
        self.cfg.redis_server.restart()
        self.up = True
        self.run(self.admin.connection_pool.disconnect())  # the test's own client reconnects; the store must cope

    @precondition(lambda self: self.up and not self.frozen and self.cfg.redis_server is not None)
    @rule(go=rarely)
    def freeze_redis(self, go: bool) -> None:
        """SIGSTOP: Redis keeps its data and connections but answers nothing (a partition)."""
        self._step()
        if not go or self.cfg.redis_server is None:
            return
        self.cfg.redis_server.freeze()
        self.frozen = True
        self.disrupted = True

    @precondition(lambda self: self.frozen and self.cfg.redis_server is not None)
    @rule()
    def thaw_redis(self) -> None:
        self._step()
        assert self.cfg.redis_server is not None
        self.cfg.redis_server.thaw()
        self.frozen = False

    @precondition(lambda self: self.disrupted)
    @rule()
    def wait_for_breaker(self) -> None:
        """If the breaker is open, let its reset time pass so the next call probes Redis."""
        self._step()
        if self.store.breaker.state != self.store.breaker.CLOSED:
            time.sleep(0.055)

    # -- what Redis holds ----------------------------------------------------------------
    @invariant()
    def cache_entries_are_current_suffixes(self) -> None:
        """Every entry the store could serve is the model's newest ``min(last, size)`` messages."""
        if not self._admin_ok() or self.store.sync.bump_pending:
            return  # nothing to read, or the whole namespace is about to be invalidated

        epoch = self.store.sync.epoch
        found = self.run(read_cache_entries(self.admin, self.sids, self.prefix))
        for sid, entry in zip(self.sids, found, strict=True):
            if entry is None or entry.epoch != epoch or sid in self.store.sync.dirty:
                continue  # absent, dead (a read drops it), or dropped before the cache is used again
            if entry.last > 0 and not entry.messages:
                continue  # the list was expired or deleted on its own; a read drops the entry
            history = self.model[sid]
            assert entry.last == len(history), f"stale entry for {sid}: last {entry.last}, model {len(history)}"
            assert len(entry.messages) == min(entry.last, CACHE_SIZE)
            assert entry.messages == history[len(history) - len(entry.messages) :]


def _run_machine(cfg: Config, examples: int, steps: int) -> float:
    HybridVsModel.steps_run = HybridVsModel.examples_run = 0
    HybridVsModel.seen.clear()
    started = time.monotonic()
    run_state_machine_as_test(
        lambda: HybridVsModel(cfg),
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            print_blob=True,
        ),
    )
    return time.monotonic() - started


def test_hybrid_matches_model_under_faults(servers: Servers, embedded_redis: EmbeddedRedis) -> None:
    """Random appends, reads, expiries, key deletions, Redis kills and freezes never make hybrid differ from a model."""
    cfg = Config(servers.database_url, servers.redis_url, embedded_redis)
    try:
        elapsed = _run_machine(cfg, EXAMPLES, STEPS)
    finally:
        embedded_redis.thaw()
        if not _answers(embedded_redis):
            embedded_redis.restart()
    print(f"\nstateful: {HybridVsModel.examples_run} examples, {HybridVsModel.steps_run} steps in {elapsed:.1f} s")
    print("stateful paths:", dict(sorted(HybridVsModel.seen.items())))
    assert HybridVsModel.steps_run >= 2000, HybridVsModel.steps_run
    for path in ("result:hit", "result:miss", "result:error", "populate:stored", "breaker:1"):
        assert HybridVsModel.seen[path] > 0, f"the run never exercised {path}"


def test_hybrid_on_a_redis_cluster_matches_model(servers: Servers, redis_cluster: EmbeddedRedisCluster) -> None:
    """The same machine on a 3-master Valkey cluster (no kills or freezes): the hybrid never differs from the model."""
    cfg = Config(servers.database_url, redis_cluster.url, None, cluster=True)
    elapsed = _run_machine(cfg, EXAMPLES // 3, STEPS)
    print(
        f"\ncluster stateful: {HybridVsModel.examples_run} examples, {HybridVsModel.steps_run} steps in {elapsed:.1f} s"
    )
    print("stateful paths:", dict(sorted(HybridVsModel.seen.items())))
    assert HybridVsModel.steps_run >= 600, HybridVsModel.steps_run
    for path in ("result:hit", "result:miss", "populate:stored"):
        assert HybridVsModel.seen[path] > 0, f"the run never exercised {path}"


def _answers(server: EmbeddedRedis) -> bool:
    return server.pid is not None and server._ready()
