"""The ``sessionbench`` command: thin argument parsing over the bench stages."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import re
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence

from sessionbench.bench.servers import MODES, POOLERS, REDIS_SPEC_HELP, ServerError, open_servers, parse_redis_spec
from sessionbench.store.errors import StoreError

#: Modules that add a subcommand: each has ``register(subparsers) -> None`` and sets
#: ``func`` (``(argparse.Namespace) -> int``) on its parser.  One line per command.
COMMANDS: tuple[str, ...] = (
    "sessionbench.bench.service.cleanup",
    "sessionbench.bench.harness.compare",
    "sessionbench.bench.harness.report",
    "sessionbench.bench.harness.regress",
    "sessionbench.bench.harness.overhead",
    "sessionbench.bench.harness.hotpath",
    "sessionbench.bench.reliability.bounds",
    "sessionbench.bench.service.http_bench",
    "sessionbench.bench.service.serve",
    "sessionbench.bench.service.loadtest",
    "sessionbench.bench.advisor.sources",
    "sessionbench.bench.advisor.command",
    "sessionbench.bench.reliability.faults",
)


def _redis_spec(text: str) -> str:
    """argparse type for --redis: the spec itself, checked before anything starts."""
    try:
        parse_redis_spec(text)
    except ServerError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM (a second press must not leave servers half-stopped), then restore."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _cmd_servers(args: argparse.Namespace) -> int:
    with (
        contextlib.ExitStack() as after_stop,
        open_servers(args.servers, redis=args.redis, pooler=args.pooler) as servers,
    ):
        try:
            print(f"# {servers.describe()}", flush=True)
            print(f"export DATABASE_URL={shlex.quote(servers.database_url)}", flush=True)
            print(f"export REDIS_URL={shlex.quote(servers.redis_url)}", flush=True)
            if args.once or servers.mode == "external":
                return 0
            print("sessionbench: servers running; Ctrl-C or SIGTERM stops them", file=sys.stderr, flush=True)
            with contextlib.suppress(KeyboardInterrupt):  # SIGTERM arrives as KeyboardInterrupt too (_terminate)
                while True:
                    time.sleep(3600)
        finally:
            # after_stop exits last: a second Ctrl-C or SIGTERM is ignored until every server has stopped
            after_stop.enter_context(_signals_ignored())
    print("sessionbench: servers stopped", file=sys.stderr, flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sessionbench",
        description="Measure where LLM chat history should live: memory, PostgreSQL, or Redis + PostgreSQL.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "servers",
        help="start PostgreSQL and Redis, print export lines, keep them running until Ctrl-C or SIGTERM",
        description="Start the embedded PostgreSQL and Redis (or a Redis cluster, or PgBouncer in front of "
        "PostgreSQL), print '# versions' and 'export DATABASE_URL=...' / 'export REDIS_URL=...' lines, and keep "
        "the servers running until Ctrl-C or SIGTERM, which stops them (exit 0). With --once, or in external "
        "mode (nothing started here), print and exit.",
    )
    p.add_argument("--servers", choices=MODES, default="auto", help="where servers come from (default: auto)")
    p.add_argument("--redis", type=_redis_spec, default="single", metavar="TOPOLOGY",
                   help=f"{REDIS_SPEC_HELP}; default: single (embedded mode only)")  # fmt: skip
    p.add_argument("--pooler", choices=POOLERS, default="none",
                   help="pgbouncer: PgBouncer in transaction mode in front of PostgreSQL, DATABASE_URL points "
                   "through it (Debian's pgbouncer package; embedded mode only); default: none")  # fmt: skip
    p.add_argument("--once", action="store_true", help="print versions and URLs, then stop the servers at once")
    p.set_defaults(func=_cmd_servers)
    for module in COMMANDS:
        importlib.import_module(module).register(sub)
    for command in sub.choices.values():  # descriptions are module docstrings: show them as plain text
        command.description = plain_text(command.description)
        for action in command._actions:
            if isinstance(action.help, str):
                action.help = plain_text(action.help)
    return parser


_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|exc|obj):`~?([^`]+)`")


def plain_text(text: str | None) -> str | None:
    """A docstring as ``--help`` shows it: Sphinx roles, double backticks and ** emphasis removed."""
    if text is None:
        return None
    text = _ROLE.sub(r"\1", text)
    return text.replace("``", "").replace("**", "")


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so context managers stop the servers this process started."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except ModuleNotFoundError as exc:  # a core-only install: the store works, the harness needs its extra
        print(
            f"sessionbench: error: the harness needs the 'bench' extra (missing module {exc.name!r}): "
            "pip install 'sessionbench[bench]'",
            file=sys.stderr,
        )
        return 2
    args = parser.parse_args(argv)
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
