"""``sessionbench serve`` as a child process on 127.0.0.1, owned (and stopped) by us.

One wrapper for every tool that drives the service over HTTP from outside: the Locust
wrapper (``sessionbench loadtest``), the fault-injection driver (which SIGKILLs and
restarts it) and the HTTP benchmark.  Only this child is ever signalled, by its PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from sessionbench.bench.servers import free_port


class ServiceError(RuntimeError):
    """The service could not be started, or is not running."""


class ServiceProcess:
    """``sessionbench serve --backend BACKEND`` on a free (or given) 127.0.0.1 port.

    ``servers="external"`` (the default) serves ``database_url`` / ``redis_url``
    (``servers="embedded"``: the child starts its own servers and stops them); dev
    auth (``dev-<name>`` tokens) is on.  ``start()`` returns once ``/readyz`` answers
    200; ``stop()`` is graceful (SIGINT: uvicorn drains, the store closes its pools),
    ``kill()`` is SIGKILL.  Both may be followed by ``start()`` again, on the same port.
    """

    def __init__(
        self,
        backend: str = "hybrid",
        *,
        database_url: str | None = None,
        redis_url: str | None = None,
        log_path: Path | None = None,
        port: int | None = None,
        servers: str = "external",
        extra_env: Mapping[str, str] | None = None,
        ready_timeout: float = 60.0,
    ) -> None:
        self.backend = backend
        self.port = port or free_port()
        self.log_path = log_path or Path(os.devnull)
        self.servers = servers
        self.ready_timeout = ready_timeout
        urls = {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
        self._env = {
            **os.environ,
            **{name: url for name, url in urls.items() if url is not None},
            "SESSIONSTORE_DEV_AUTH": "1",
            **(extra_env or {}),
        }
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise ServiceError("the service is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> ServiceProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Spawn the child and wait until ``/readyz`` answers 200 (or raise :class:`ServiceError`)."""
        cmd = [sys.executable, "-m", "sessionbench.bench.cli", "serve", "--backend", self.backend,
               "--host", "127.0.0.1", "--port", str(self.port), "--servers", self.servers]  # fmt: skip
        if self._log is None:
            if self.log_path != Path(os.devnull):
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self._env,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code, tail = self._proc.returncode, self.log_tail()
                self.stop()
                raise ServiceError(f"the {self.backend} service exited with code {code}:\n{tail}")
            if self._get("/readyz", timeout=1.0) is not None:
                return
            time.sleep(0.05)
        tail = self.log_tail()
        self.stop()
        raise ServiceError(f"the {self.backend} service was not ready within {self.ready_timeout:.0f} s:\n{tail}")

    async def astart(self) -> None:
        """:meth:`start` without blocking the event loop."""
        await asyncio.to_thread(self.start)

    def _get(self, path: str, timeout: float) -> str | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:  # noqa: S310 - our own http URL
                body: bytes = resp.read()
                return body.decode("utf-8", errors="replace") if 200 <= resp.status < 300 else None
        except (urllib.error.URLError, OSError):
            return None

    def scrape(self) -> str:
        """The service's ``/metrics`` text ("" if it does not answer)."""
        return self._get("/metrics", timeout=5.0) or ""

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL our child (by PID) and reap it; the log stays open for a restart."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            self._proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGINT (uvicorn's graceful stop), SIGKILL if it lingers past 10 s; close the log."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None
