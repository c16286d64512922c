"""The servers under every other test are real PostgreSQL and Redis, and can be faulted."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ClusterDownError, MovedError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from sessionbench.bench.servers import (
    CLUSTER_SLOTS,
    EmbeddedPgBouncer,
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedRedisCluster,
    ServerError,
    Servers,
    docker_engine,
    open_servers,
    parse_redis_spec,
    resolve_mode,
    slot_ranges,
)

ROOT = Path(__file__).resolve().parent.parent


async def test_postgres_is_real(servers: Servers) -> None:
    """`select version()` answers from a real PostgreSQL server."""
    conn = await asyncpg.connect(servers.database_url)
    try:
        version = await conn.fetchval("select version()")
    finally:
        await conn.close()
    print(f"\n{version}")
    assert version.startswith("PostgreSQL ")


async def test_redis_is_real(servers: Servers) -> None:
    """`INFO server` answers from a real Redis-protocol server."""
    client = aioredis.Redis.from_url(servers.redis_url)
    try:
        info = await client.info("server")
    finally:
        await client.aclose()
    version = info.get("valkey_version") or info.get("redis_version")
    print(f"\nredis_version={info.get('redis_version')} valkey_version={info.get('valkey_version')}")
    assert version


async def test_embedded_servers_bind_loopback(servers: Servers) -> None:
    """Embedded servers listen on 127.0.0.1 only."""
    if servers.mode != "embedded":
        pytest.skip(f"mode is {servers.mode}")
    assert "127.0.0.1" in servers.database_url
    assert "127.0.0.1" in servers.redis_url
    client = aioredis.Redis.from_url(servers.redis_url)
    try:
        bind = await client.config_get("bind")
    finally:
        await client.aclose()
    assert bind["bind"].split() == ["127.0.0.1"]


async def test_redis_kill_and_restart_on_same_port(embedded_redis: EmbeddedRedis) -> None:
    """After kill -9 the port refuses connections; restart brings Redis back on the same port, empty."""
    client = aioredis.Redis.from_url(embedded_redis.url, socket_timeout=1, retry=None)
    port = embedded_redis.port
    try:
        await client.set("k", "v")
        embedded_redis.kill()
        with pytest.raises(RedisConnectionError):
            await client.get("k")
        embedded_redis.restart()
        assert embedded_redis.port == port
        assert await client.get("k") is None
    finally:
        await client.aclose()


async def test_postgres_kill_and_restart_keeps_committed_data(embedded_postgres: EmbeddedPostgres) -> None:
    """SIGKILL of the postmaster group, then restart on the same port: committed rows survive."""
    url = embedded_postgres.url
    conn = await asyncpg.connect(url)
    await conn.execute("create table if not exists smoke(x int)")
    await conn.execute("insert into smoke values (42)")
    await conn.close()
    embedded_postgres.kill()
    with pytest.raises(OSError, match=r"[Cc]onnect"):
        await asyncpg.connect(url, timeout=2)
    embedded_postgres.restart()
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("select count(*) from smoke where x = 42") >= 1
        await conn.execute("drop table smoke")
    finally:
        await conn.close()


def test_auto_mode_prefers_urls_from_environment() -> None:
    """`auto` becomes `external` only when both URLs are set, `embedded` otherwise."""
    assert resolve_mode("auto", {"DATABASE_URL": "postgresql://x", "REDIS_URL": "redis://y"}) == "external"
    assert resolve_mode("auto", {"DATABASE_URL": "postgresql://x"}) == "embedded"
    assert resolve_mode("auto", {}) == "embedded"
    with pytest.raises(ServerError, match="unknown server mode"):
        resolve_mode("cloud", {})


def test_docker_probe_answers_quickly_with_a_reason() -> None:
    """The Docker probe asks the engine and returns a one-line reason either way."""
    ok, why = docker_engine()
    print(f"\ndocker: {ok} ({why})")
    assert isinstance(ok, bool)
    assert why
    assert "\n" not in why


# ----------------------------------------------------------------------------- topology and pooler options


def test_redis_spec_and_pooler_are_validated_before_anything_starts() -> None:
    """`single` and `cluster:N` (1-16) parse; anything else, and cluster/pooler in external mode, are ServerErrors."""
    assert parse_redis_spec("single") is None
    assert parse_redis_spec("cluster:3") == 3
    for bad in ("cluster", "cluster:0", "cluster:17", "cluster:x", "cluster:³", "cluster: 3", "sentinel:3", ""):
        with pytest.raises(ServerError, match="unknown Redis topology"):
            parse_redis_spec(bad)
    external = {"DATABASE_URL": "postgresql://x", "REDIS_URL": "redis://y"}
    asks = [("auto", external, {"redis": "cluster:3"}, "start embedded servers"),
            ("external", external, {"pooler": "pgbouncer"}, "start embedded servers"),
            ("embedded", {}, {"pooler": "pgpool"}, "unknown pooler")]  # fmt: skip
    for mode, environ, options, message in asks:
        with pytest.raises(ServerError, match=message), open_servers(mode, environ=environ, **options):
            pass
    assert slot_ranges(3) == [(0, 5460), (5461, 10921), (10922, 16383)]


# ----------------------------------------------------------------------------- Redis Cluster


def _client(port: int) -> redis.Redis:
    """A plain client of one node: no cluster redirection, no retries."""
    return redis.Redis(
        host="127.0.0.1", port=port, socket_timeout=2, retry=Retry(NoBackoff(), 0), decode_responses=True
    )


@pytest.fixture
def cluster(redis_cluster: EmbeddedRedisCluster) -> Iterator[EmbeddedRedisCluster]:
    """The module's cluster with every master's keyspace empty."""
    for port in redis_cluster.ports:
        with _client(port) as node:
            node.flushall()
    yield redis_cluster


@pytest.fixture
def cluster_client(cluster: EmbeddedRedisCluster) -> Iterator[RedisCluster]:
    """A redis-py cluster client that found the other masters from ``cluster.url`` alone."""
    client = RedisCluster.from_url(cluster.url, decode_responses=True, socket_timeout=2)
    try:
        yield client
    finally:
        client.close()


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port`` (from /proc/net/tcp and tcp6)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                found.add("127.0.0.1" if address == "0100007F" else address)
    return found


def test_cluster_has_three_masters_covering_every_slot(
    cluster: EmbeddedRedisCluster, cluster_client: RedisCluster
) -> None:
    """Three connected masters on 127.0.0.1, one slot range each, full coverage required, every node ok."""
    assert cluster.url == f"redis://127.0.0.1:{cluster.ports[0]}/0"
    assert sorted(node.port for node in cluster_client.get_primaries()) == sorted(cluster.ports)
    assert cluster_client.get_replicas() == []
    assert set(cluster.states().values()) == {"ok"}
    with _client(cluster.ports[0]) as node0:
        table = node0.execute_command("CLUSTER NODES")
        assert node0.config_get("cluster-require-full-coverage") == {"cluster-require-full-coverage": "yes"}
    expected = {f"127.0.0.1:{n.port}": [[str(first), str(last)]] for n, (first, last) in
                zip(cluster.nodes, cluster.slot_ranges, strict=True)}  # fmt: skip
    assert {address: entry["slots"] for address, entry in table.items()} == expected
    assert all("master" in entry["flags"] and entry["connected"] for entry in table.values())
    for node in cluster.nodes:  # client port and cluster bus
        assert _listening_addresses(node.port) == _listening_addresses(node.bus_port) == {"127.0.0.1"}
    assert sum(last - first + 1 for first, last in cluster.slot_ranges) == CLUSTER_SLOTS


def test_hash_tagged_keys_land_on_the_master_that_owns_their_slot(
    cluster: EmbeddedRedisCluster, cluster_client: RedisCluster
) -> None:
    """`{s42}:m` and `{s42}:h` share a slot; they live on its owner, and any other master answers MOVED."""
    keys = ["{s42}:m", "{s42}:h"]
    for key in keys:
        cluster_client.set(key, key)
    slot = cluster.keyslot(keys[0])
    assert cluster.keyslot(keys[1]) == slot == key_slot(b"s42")  # the server and the client agree
    owner = cluster.node_for_key(keys[0])
    first, last = cluster.slot_ranges[owner.index]
    assert first <= slot <= last
    with _client(owner.port) as node:
        assert [node.get(k) for k in keys] == keys
        assert node.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 2
    other = next(n for n in cluster.nodes if n is not owner)
    with _client(other.port) as node, pytest.raises(MovedError, match=f"{slot} 127.0.0.1:{owner.port}"):
        node.get(keys[0])


def test_keys_spread_over_every_master(cluster: EmbeddedRedisCluster, cluster_client: RedisCluster) -> None:
    """300 distinct keys end up on all three masters, each key on the master owning its slot."""
    cluster_client.mset_nonatomic({f"session:{i}": str(i) for i in range(300)})
    per_node: dict[int, int] = {}
    for node, (first, last) in zip(cluster.nodes, cluster.slot_ranges, strict=True):
        with _client(node.port) as client:
            keys = list(client.scan_iter(count=1000))
        assert all(first <= key_slot(k.encode()) <= last for k in keys)
        per_node[node.port] = len(keys)
    print(f"\nkeys per master: {per_node}")
    assert sum(per_node.values()) == 300
    assert all(count > 0 for count in per_node.values())


def _wait_states(cluster: EmbeddedRedisCluster, ports: list[int], state: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while {cluster.states()[p] for p in ports} != {state}:
        assert time.monotonic() < deadline, f"no cluster_state:{state} on {ports}: {cluster.states()}"
        time.sleep(0.05)


@pytest.mark.faults
def test_killed_master_takes_the_cluster_down_until_it_restarts(
    cluster: EmbeddedRedisCluster, cluster_client: RedisCluster
) -> None:
    """SIGKILL of one master by PID: the others answer CLUSTERDOWN; restart on the same ports brings all slots back."""
    victim, survivor = cluster.nodes[1], cluster.nodes[0]
    lost = next(f"k{i}" for i in range(1000) if cluster.node_for_key(f"k{i}") is victim)
    kept = next(f"k{i}" for i in range(1000) if cluster.node_for_key(f"k{i}") is survivor)
    cluster_client.set(lost, "1")
    cluster_client.set(kept, "1")
    pid = victim.pid
    assert pid is not None
    cluster.kill(victim.index)
    assert victim.pid is None
    assert not Path(f"/proc/{pid}").exists()
    alive = [n.port for n in cluster.nodes if n is not victim]
    _wait_states(cluster, alive, "fail")
    with _client(survivor.port) as node, pytest.raises(ClusterDownError) as down:
        node.get(kept)  # its own slot, yet refused: full coverage is required
    print(f"\nafter kill -9 of {victim.port}: {type(down.value).__name__}: {down.value}")
    cluster.restart(victim.index)
    assert victim.pid not in (None, pid)
    assert set(cluster.states().values()) == {"ok"}
    with _client(victim.port) as node:
        assert node.get(lost) is None  # no persistence: a crash loses the node's keys
    with _client(survivor.port) as node:
        assert node.get(kept) == "1"
    cluster_client.set(lost, "2")
    assert cluster_client.get(lost) == "2"


# ----------------------------------------------------------------------------- PgBouncer


async def test_pgbouncer_transaction_mode_breaks_asyncpg_statement_cache(pgbouncer: EmbeddedPgBouncer) -> None:
    """Through PgBouncer in transaction mode, asyncpg's default statement cache fails on a statement's second use."""
    conn = await asyncpg.connect(pgbouncer.url)
    try:
        assert await conn.fetchval("SELECT $1::int", 1) == 1
        with pytest.raises(asyncpg.InvalidSQLStatementNameError, match="does not exist") as failed:
            await conn.fetchval("SELECT $1::int", 1)
    finally:
        await conn.close()
    print(f"\ndefault statement cache through PgBouncer: {type(failed.value).__name__}: {failed.value}")


async def test_pgbouncer_transaction_mode_serves_sixteen_clients_without_statement_cache(
    pgbouncer: EmbeddedPgBouncer, embedded_postgres: EmbeddedPostgres
) -> None:
    """With statement_cache_size=0, 16 concurrent clients run statements, transactions and cursors through PgBouncer."""
    pool = await asyncpg.create_pool(pgbouncer.url, min_size=16, max_size=16, statement_cache_size=0)
    try:
        assert pool is not None
        # The server sees PostgreSQL's own port: there is a proxy in between.
        assert await pool.fetchval("SELECT inet_server_port()") == embedded_postgres.port != pgbouncer.port

        async def client(i: int) -> int:
            total = 0
            for r in range(10):
                async with pool.acquire() as conn, conn.transaction():
                    total += await conn.fetchval("SELECT $1::int + $2::int", i, r)
                    async for row in conn.cursor("SELECT g FROM generate_series(1, 20) g WHERE g > $1", 15, prefetch=2):
                        total += row["g"]
            return total

        totals = await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(16))), timeout=60)
    finally:
        await pool.close()
    assert totals == [10 * i + 45 + 10 * (16 + 17 + 18 + 19 + 20) for i in range(16)]


def test_pgbouncer_runs_unprivileged_and_stops_by_pid(
    embedded_postgres: EmbeddedPostgres, pgbouncer_binary: Path
) -> None:
    """A PgBouncer of its own listens on 127.0.0.1 only (as nobody under root); stop() ends exactly its PID."""
    with pytest.raises(ServerError, match="unknown pool_mode"):
        EmbeddedPgBouncer(embedded_postgres, pool_mode="sessions", binary=pgbouncer_binary)
    bouncer = EmbeddedPgBouncer(embedded_postgres, binary=pgbouncer_binary)
    bouncer.start()
    pid = bouncer.pid
    try:
        assert pid is not None
        assert Path(f"/proc/{pid}/exe").resolve() == pgbouncer_binary.resolve()
        uid = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:"))
        if os.geteuid() == 0:
            assert int(uid.split()[1]) != 0
        assert _listening_addresses(bouncer.port) == {"127.0.0.1"}
        print(f"\n{bouncer.version()} pid {pid} on 127.0.0.1:{bouncer.port}, {uid}")
    finally:
        bouncer.stop()
    assert bouncer.pid is None
    assert not Path(f"/proc/{pid}").exists()
    assert _listening_addresses(bouncer.port) == set()


# ----------------------------------------------------------------------------- sessionbench servers


class _ServersCommand:
    """`sessionbench servers ...` as a child process: its export lines, then SIGTERM to its PID."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sessionbench.bench.cli", "servers", "--servers", "embedded", *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def exports(self, seconds: float = 60) -> dict[str, str]:
        """The ``export NAME=value`` lines, read as they are printed (flushed while the servers run)."""
        found: dict[str, str] = {}
        deadline = time.monotonic() + seconds
        while len(found) < 2:
            remaining = deadline - time.monotonic()
            assert self.proc.poll() is None, f"exited with {self.proc.poll()} after printing {found}"
            assert remaining > 0, f"only {found} within {seconds} s"
            try:
                line = self.lines.get(timeout=min(remaining, 1))
            except queue.Empty:
                continue
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").strip().partition("=")
                found[name] = value
        return found

    def terminate(self, seconds: float = 60) -> tuple[int, str]:
        """SIGTERM, then the exit code and stderr (SIGKILL only if it outlives ``seconds``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
        return self.proc.returncode, err


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None, url
    return port


async def test_servers_command_keeps_a_cluster_running_until_sigterm() -> None:
    """`sessionbench servers --redis cluster:3` prints exports, serves until SIGTERM, then stops every server."""
    command = _ServersCommand("--redis", "cluster:3")
    try:
        urls = command.exports()
        conn = await asyncpg.connect(urls["DATABASE_URL"], timeout=10)
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
        client = RedisCluster.from_url(urls["REDIS_URL"], socket_timeout=2)
        try:
            ports = sorted(node.port for node in client.get_primaries())
            assert len(ports) == 3
        finally:
            client.close()
        for port in ports:  # (the cluster client's cluster_info() leaks a socket in redis-py 8.1)
            with _client(port) as node:
                assert "cluster_state:ok" in node.execute_command("CLUSTER", "INFO")
        assert command.proc.poll() is None  # still serving after the exports
    finally:
        code, err = command.terminate()
    assert code == 0, err
    assert "servers stopped" in err
    for port in [_port(urls["DATABASE_URL"]), *ports]:
        assert _listening_addresses(port) == set(), f"port {port} still listening after SIGTERM"


async def test_servers_command_puts_pgbouncer_in_front_of_postgres(pgbouncer_binary: Path) -> None:
    """`sessionbench servers --pooler pgbouncer` exports a DATABASE_URL through PgBouncer and stops it on SIGTERM."""
    command = _ServersCommand("--pooler", "pgbouncer")
    try:
        urls = command.exports()
        conn = await asyncpg.connect(urls["DATABASE_URL"], timeout=10, statement_cache_size=0)
        try:
            postgres_port = await conn.fetchval("SELECT inet_server_port()")
        finally:
            await conn.close()
        assert postgres_port != _port(urls["DATABASE_URL"])
    finally:
        code, err = command.terminate()
    assert code == 0, err
    for port in (_port(urls["DATABASE_URL"]), postgres_port, _port(urls["REDIS_URL"])):
        assert _listening_addresses(port) == set(), f"port {port} still listening after SIGTERM"
