"""The ``sessionbench`` command: thin argument parsing over the bench stages."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Sequence

from bench.servers import MODES, ServerError, open_servers
from store.errors import StoreError

#: Modules that add a subcommand: each has ``register(subparsers) -> None`` and sets
#: ``func`` (``(argparse.Namespace) -> int``) on its parser.  One line per command.
COMMANDS: tuple[str, ...] = (
    "bench.service.cleanup",
    "bench.harness.compare",
    "bench.harness.report",
    "bench.harness.regress",
    "bench.service.serve",
    "bench.service.loadtest",
    "bench.advisor.sources",
    "bench.advisor.command",
    "bench.reliability.faults",
)


def _cmd_servers(args: argparse.Namespace) -> int:
    with open_servers(args.servers) as servers:
        print(servers.describe())
        print(f"DATABASE_URL={servers.database_url}")
        print(f"REDIS_URL={servers.redis_url}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sessionbench",
        description="Measure where LLM chat history should live: memory, PostgreSQL, or Redis + PostgreSQL.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("servers", help="start the embedded PostgreSQL and Redis, print versions and URLs, stop")
    p.add_argument("--servers", choices=MODES, default="auto", help="where servers come from (default: auto)")
    p.set_defaults(func=_cmd_servers)
    for module in COMMANDS:
        importlib.import_module(module).register(sub)
    return parser


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so context managers stop the servers this process started."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        code: int = args.func(args)
    except (ServerError, StoreError, OSError, ValueError) as exc:
        # One readable line, non-zero exit; tracebacks are for bugs, not for bad input.
        print(f"sessionbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sessionbench: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
