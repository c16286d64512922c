"""``sessionbench serve``: the HTTP service (:mod:`sessionbench.store.http`) on uvicorn.

Servers come from :mod:`sessionbench.bench.servers`: embedded PostgreSQL and Redis by default,
``DATABASE_URL``/``REDIS_URL`` with ``--servers external`` (or ``auto`` when both are
set); the memory backend needs none.  Service settings come from the environment
(:meth:`sessionbench.store.http.ServiceSettings.from_env`).  Dev auth (``dev-<name>`` tokens) is on by
default only when binding a loopback address with no tokens configured, and the start-up
lines say so.  Ctrl-C or SIGTERM: uvicorn drains requests, the store closes its pools, the
embedded servers stop.

Every argument and setting is checked before any server starts (:func:`check_bind`,
``ServiceSettings.from_env``): a bad one is a ValueError, one line and exit 2 from
:func:`sessionbench.bench.cli.main`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import signal
import socket
import sys
from collections.abc import Mapping
from dataclasses import replace
from types import FrameType
from typing import Any

from sessionbench.bench.servers import MODES, open_servers
from sessionbench.store.settings import BACKENDS, Settings

LOOPBACK = "127.0.0.1"
MAX_PORT = 65535

DESCRIPTION = (
    "Run the HTTP service on uvicorn. PostgreSQL and Redis are embedded ones by default, or the "
    "servers in DATABASE_URL and REDIS_URL with --servers external (auto picks those when both are set); "
    "the memory backend needs neither. Service settings come from SESSIONSTORE_* environment variables. "
    "On a loopback address (127.0.0.1, ::1, localhost) with no SESSIONSTORE_TOKENS or "
    "SESSIONSTORE_TOKENS_FILE, dev tokens are enabled (Bearer dev-<name> acts as user <name>); any other "
    "address is refused unless tokens (or SESSIONSTORE_DEV_AUTH=1) are configured. Ctrl-C or SIGTERM "
    "drains requests, closes the store and stops embedded servers."
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the HTTP service on uvicorn (embedded PostgreSQL + Redis by default)",
        description=DESCRIPTION,
    )
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="store backend (default: SESSIONSTORE_BACKEND, else hybrid)")  # fmt: skip
    p.add_argument("--host", default=LOOPBACK, metavar="ADDRESS",
                   help="IP address or host name to bind (default: 127.0.0.1)")  # fmt: skip
    p.add_argument("--port", type=int, default=8000, metavar="PORT",
                   help=f"TCP port number, 0 to {MAX_PORT} (default: 8000; 0 picks a free one)")  # fmt: skip
    p.add_argument("--servers", choices=[m for m in MODES if m != "docker"], default="auto",
                   help="where PostgreSQL and Redis come from (default: auto)")  # fmt: skip
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default: warning)")  # fmt: skip
    p.set_defaults(func=run)


def check_bind(host: str, port: int) -> bool:
    """Check ``--host``/``--port`` without binding anything; True when ``host`` is loopback.

    A host name is resolved (``localhost`` is loopback when every address it resolves to
    is); an empty host binds every interface, so it is not.  ValueError (one line) for a
    port outside 0-65535 or a name that does not resolve.
    """
    if isinstance(port, bool) or not 0 <= port <= MAX_PORT:
        raise ValueError(f"--port must be a TCP port number from 0 to {MAX_PORT} (0 picks a free one), not {port}")
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ValueError(f"--host {host!r} does not resolve to an address ({exc})") from None
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def run(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    loopback = check_bind(args.host, args.port)  # before any import, server or setting

    import uvicorn

    from sessionbench.store.http import ServiceSettings, create_app
    from sessionbench.store.instrumentation.telemetry import TRACER_NAME, configure_tracing

    env = os.environ if environ is None else environ
    service = ServiceSettings.from_env(env)
    notes: list[str] = []
    if not service.tokens and not service.dev_auth:
        if not loopback:
            raise ValueError(
                f"no bearer tokens configured for {args.host}, which is not a loopback address: set "
                "SESSIONSTORE_TOKENS or SESSIONSTORE_TOKENS_FILE (dev tokens are on by default only on loopback)"
            )
        service = replace(service, dev_auth=True)
        notes.append(f"dev auth enabled because the service binds {args.host} and no tokens are configured")
    elif service.dev_auth and not loopback:
        notes.append(f"WARNING: dev tokens accepted on {args.host}; anyone who can connect can act as any user")
    provider = configure_tracing(env)
    tracer = provider.get_tracer(TRACER_NAME) if provider is not None else None

    with contextlib.ExitStack() as stack:
        base = Settings.from_env(env)
        backend = args.backend or base.backend
        where = "no servers (in-process memory)"
        if backend == "memory":
            settings = replace(base, backend="memory")
        elif backend == "postgres" and args.servers != "embedded" and base.database_url and not base.redis_url:
            settings = replace(base, backend="postgres")  # PostgreSQL alone needs no Redis
            where = "external PostgreSQL (DATABASE_URL)"
        else:
            servers = stack.enter_context(open_servers(args.servers, environ=env))
            settings = replace(base, backend=backend, database_url=servers.database_url,
                               redis_url=servers.redis_url)  # fmt: skip
            where = f"{servers.mode} servers: {servers.describe()}"
        app = create_app(settings, service=service, tracer=tracer)
        config = uvicorn.Config(
            app, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
            lifespan="on", server_header=False, proxy_headers=False,  # nothing here uses client addresses
        )  # fmt: skip
        server = uvicorn.Server(config)
        print(f"sessionbench serve: backend {backend} on {where}", flush=True)
        print(f"  auth: {service.auth_mode}", flush=True)
        for note in notes:
            print(f"  {note}", flush=True)
        print(f"  tracing: {'OTLP export on' if provider is not None else 'off (OTEL_EXPORTER_OTLP_ENDPOINT unset)'}")
        print(f"  server: uvicorn {uvicorn.__version__}, loop {config.loop}, http {config.http}")
        if service.access_log:
            print(f"  access log: {service.access_log}")
        previous = signal.signal(signal.SIGTERM, _interrupt)  # uvicorn re-raises it after draining
        try:
            # uvicorn's loop factory: uvloop when installed, as `uvicorn` itself would run it
            with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
                runner.run(_serve(server, args.host))
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            if provider is not None:
                provider.shutdown()
        if not server.started:
            print("sessionbench serve: the service did not start (see the messages above)", file=sys.stderr)
            return 1
        print("sessionbench serve: stopped", flush=True)
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


async def _serve(server: Any, host: str) -> None:
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn exposes only a flag
        await asyncio.sleep(0.05)
    if server.started:
        port = server.servers[0].sockets[0].getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        print(f"  listening on http://{shown}:{port}  (Ctrl-C to stop)", flush=True)
    await task
