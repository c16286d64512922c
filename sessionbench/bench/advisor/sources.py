"""``sessionbench trace``: make an access trace (the :mod:`sessionbench.store.accesslog` format) to advise on.

``from-postgres DATABASE_URL``
    Reconstructs a trace from an existing ``chat_messages``-style table: timestamps,
    session ids and message sizes (``octet_length(content)``: contents are never
    fetched), streamed in time order through a server-side cursor.  Column and table
    names are options, so the seed's schema (``id serial, session_id, role, content,
    created_at, metadata``) and the store's (``session_id, seq, ...``) both work as is.
    Rows of one session with the same timestamp form one append (the store writes a
    turn in one statement).  Reads are not in the table; they are modelled: a read of
    the last ``--read-limit`` messages comes with every append holding a user message,
    just before it (``--read-position before``, what the seed's ChatService does: it
    loads the history, then saves the new messages) or just after it (``after``, the
    order of :mod:`sessionbench.bench.harness.workload`).  Session ids are hashed unless ``--keep-session-ids``.
``from-service ACCESS_LOG...``
    Validates and normalises the service's access log (``SESSIONSTORE_ACCESS_LOG``):
    lines that finished out of order are put back in time order within
    ``--reorder-window`` seconds, rotated files are concatenated, malformed lines are
    counted (or fail with ``--strict``).
``synth``
    A trace from the workload model (:mod:`sessionbench.bench.harness.workload`), in traffic seconds
    unless ``--time-compression`` says otherwise (the header records it either way).
``convert SOURCE DEST``
    Text to the advisor's columnar form (a directory; loads at memory speed) or back.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import heapq
import re
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import asyncpg

from sessionbench.store.accesslog import (
    COLUMNS,
    MAGIC_PREFIX,
    ROLE_LETTERS,
    TraceEvent,
    TraceFormatError,
    TraceHeader,
    write_trace,
)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _quote(name: str, *, dotted: bool = False) -> str:
    parts = name.split(".") if dotted else [name]
    if not name or not all(_IDENT.match(p) for p in parts) or len(parts) > 2:
        raise ValueError(f"invalid SQL identifier {name!r}: letters, digits and _ only")
    return ".".join(f'"{p}"' for p in parts)


def session_key(session_id: str, *, keep: bool = False) -> str:
    """The trace's session key: a 16-hex-digit hash of the id (or the id itself if ``keep``)."""
    if keep:
        return session_id
    return hashlib.sha256(session_id.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- from-postgres


@dataclass(frozen=True, slots=True)
class TableSpec:
    """Where the messages are, and how the table names things."""

    table: str = "chat_messages"
    session_column: str = "session_id"
    time_column: str = "created_at"
    role_column: str = "role"
    content_column: str = "content"
    order_column: str | None = None
    """Tie-breaker within a session (``seq``, ``id``); None: detected (seq, then id), else none."""

    def query(self, order_column: str | None) -> str:
        tie = f", {_quote(order_column)}" if order_column else ""
        t = _quote(self.time_column)
        return (
            f"SELECT {_quote(self.session_column)}::text AS s, extract(epoch FROM {t})::float8 AS t, "
            f"{_quote(self.role_column)}::text AS r, octet_length({_quote(self.content_column)}) AS n "
            f"FROM {_quote(self.table, dotted=True)} ORDER BY {t}, {_quote(self.session_column)}{tie}"
        )


async def _order_column(conn: Any, spec: TableSpec) -> str | None:
    if spec.order_column:
        return spec.order_column
    schema, _, table = spec.table.rpartition(".")
    rows = await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = $1 "
        "AND ($2 = '' OR table_schema = $2) AND table_schema = COALESCE(NULLIF($2, ''), current_schema())",
        table,
        schema,
    )
    names = {r["column_name"] for r in rows}
    if not names:
        raise ValueError(f"table {spec.table!r} not found")
    missing = {spec.session_column, spec.time_column, spec.role_column, spec.content_column} - names
    if missing:
        raise ValueError(f"table {spec.table!r} has no column(s) {', '.join(sorted(missing))}")
    return next((c for c in ("seq", "id") if c in names), None)


@dataclass
class PostgresStats:
    rows: int = 0
    appends: int = 0
    reads: int = 0
    unknown_roles: int = 0
    sessions: int = 0


async def postgres_events(
    database_url: str,
    spec: TableSpec | None = None,
    *,
    read_limit: int = 20,
    read_position: str = "before",
    keep_session_ids: bool = False,
    stats: PostgresStats | None = None,
    prefetch: int = 5000,
) -> AsyncIterator[TraceEvent]:
    """Stream trace events from a messages table (server-side cursor, bounded memory).

    Times are seconds since the first row.  ``read_limit=0`` models no reads.
    """
    if read_position not in ("before", "after"):
        raise ValueError("read_position must be 'before' or 'after'")
    spec = spec or TableSpec()
    spec.query(spec.order_column)  # every name is checked as an identifier before any I/O
    st = stats if stats is not None else PostgresStats()
    conn = await asyncpg.connect(database_url, timeout=10)
    seen: set[str] = set()
    try:
        order = await _order_column(conn, spec)
        query = spec.query(order)
        async with conn.transaction(readonly=True):
            t0: float | None = None
            group: list[tuple[str, int]] = []
            key = ""
            when = 0.0

            def flush() -> Iterator[TraceEvent]:
                roles = "".join(r for r, _ in group)
                append = TraceEvent(when, key, "append", roles, tuple(n for _, n in group))
                read = TraceEvent(when, key, "read", limit=read_limit) if read_limit and "u" in roles else None
                st.appends += 1
                if read is not None:
                    st.reads += 1
                    yield from ((read, append) if read_position == "before" else (append, read))
                else:
                    yield append

            async for row in conn.cursor(query, prefetch=prefetch):
                st.rows += 1
                if row["s"] is None or row["t"] is None:
                    continue
                t0 = row["t"] if t0 is None else t0
                k = session_key(row["s"], keep=keep_session_ids)
                t = round(row["t"] - t0, 6)
                letter = ROLE_LETTERS.get(str(row["r"]).lower())
                if letter is None:
                    st.unknown_roles += 1
                    letter = "t"
                if group and (k != key or t != when):
                    for ev in flush():
                        yield ev
                    group = []
                if not group:
                    key, when = k, t
                    if k not in seen and len(seen) < 10_000_000:
                        seen.add(k)
                group.append((letter, int(row["n"] or 0) or 1))
            if group:
                for ev in flush():
                    yield ev
    finally:
        st.sessions = len(seen)
        await conn.close()


async def write_from_postgres(path: Path, database_url: str, spec: TableSpec, **kwargs: Any) -> PostgresStats:
    """Write the trace of :func:`postgres_events` to ``path`` (``.gz`` compresses), streaming."""
    stats = PostgresStats()
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as fh:
        fh.write(TraceHeader("s", 1.0).lines())
        async for ev in postgres_events(database_url, spec, stats=stats, **kwargs):
            fh.write(ev.to_line() + "\n")
    return stats


# ----------------------------------------------------------------------------- from-service


@dataclass
class LogStats:
    lines: int = 0
    events: int = 0
    malformed: int = 0
    reordered: int = 0


def service_events(
    paths: Sequence[Path], *, window: float = 5.0, strict: bool = False, stats: LogStats | None = None
) -> Iterator[TraceEvent]:
    """Events of one or more access logs in time order (a heap holds ``window`` seconds).

    Each log's header is honoured (unit); logs whose headers disagree on the time base
    cannot be concatenated and raise :class:`TraceFormatError`.
    """
    st = stats if stats is not None else LogStats()
    heap: list[tuple[float, int, TraceEvent]] = []
    counter = 0
    latest = float("-inf")
    emitted = float("-inf")
    base: TraceHeader | None = None
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            header: TraceHeader | None = None
            for lineno, line in enumerate(fh, start=1):
                st.lines += 1
                text = line.rstrip("\n")
                if text.startswith(MAGIC_PREFIX):
                    header = TraceHeader.parse(text, str(path))
                    if base is not None and not base.same_time_base(header):
                        raise TraceFormatError(
                            f"{path}: its header ({header.line()}) does not match the first log's ({base.line()})"
                        )
                    base = base or header
                    continue
                if not text.strip() or tuple(text.split("\t")) == COLUMNS:
                    continue
                scale = header.scale_to(None) if header is not None else 1.0
                try:
                    ev = TraceEvent.from_line(text, lineno, scale)
                except TraceFormatError as exc:
                    if strict:
                        raise TraceFormatError(f"{path}: {exc}") from None
                    st.malformed += 1
                    continue
                if ev.t < latest:
                    st.reordered += 1
                latest = max(latest, ev.t)
                if ev.t < emitted:
                    raise TraceFormatError(
                        f"{path}: line {lineno} is {emitted - ev.t:.3f} s older than an event already written; "
                        "raise --reorder-window"
                    )
                heapq.heappush(heap, (ev.t, counter, ev))
                counter += 1
                while heap and heap[0][0] < latest - window:
                    emitted = heap[0][0]
                    st.events += 1
                    yield heapq.heappop(heap)[2]
    while heap:
        st.events += 1
        yield heapq.heappop(heap)[2]


# ----------------------------------------------------------------------------- command


def _cmd_from_postgres(args: argparse.Namespace) -> int:
    spec = TableSpec(
        args.table, args.session_column, args.time_column, args.role_column, args.content_column, args.order_column
    )
    stats = asyncio.run(
        write_from_postgres(
            Path(args.output),
            args.database_url,
            spec,
            read_limit=args.read_limit,
            read_position=args.read_position,
            keep_session_ids=args.keep_session_ids,
        )
    )
    print(
        f"wrote {args.output}: {stats.rows:,} rows -> {stats.appends:,} appends and {stats.reads:,} modelled reads "
        f"of the last {args.read_limit} ({args.read_position} each user message), {stats.sessions:,} sessions"
        + (f"; {stats.unknown_roles:,} rows with an unknown role counted as tool" if stats.unknown_roles else "")
    )
    return 0


def _cmd_from_service(args: argparse.Namespace) -> int:
    stats = LogStats()
    paths = [Path(p) for p in args.access_log]
    header = _first_header(paths)
    events = service_events(paths, window=args.reorder_window, strict=args.strict, stats=stats)
    compression = 1.0 if header is None or header.compression is None else header.compression
    n = write_trace(args.output, events, compression=compression)
    print(
        f"wrote {args.output}: {n:,} events from {stats.lines:,} lines; {stats.reordered:,} put back in order, "
        f"{stats.malformed:,} malformed lines skipped"
    )
    return 0


def _first_header(paths: Sequence[Path]) -> TraceHeader | None:
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline()
        if first.startswith(MAGIC_PREFIX):
            return TraceHeader.parse(first, str(path))
    return None


def _cmd_convert(args: argparse.Namespace) -> int:
    from sessionbench.bench.advisor.parse import convert, is_columnar

    source, dest = Path(args.source), Path(args.dest)
    if not source.exists():
        raise ValueError(f"{source}: no such trace")
    if not is_columnar(source) and dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ValueError(f"{dest} exists: the columnar form is written to a new directory")
    n = convert(source, dest)
    kind = "text" if is_columnar(source) else "columnar"
    print(f"wrote {dest}: {n:,} events ({kind}, traffic time)")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from sessionbench.bench.harness.workload import Workload, generate

    values = {
        f.name: getattr(args, f"w_{f.name}") for f in fields(Workload) if getattr(args, f"w_{f.name}") is not None
    }
    workload = Workload(**values)
    if args.columnar:
        from sessionbench.bench.advisor.parse import ColumnarWriter

        writer = ColumnarWriter(args.output)
        writer.add_events(generate(workload), workload.time_compression)
        writer.close()
        n = writer.events
    else:
        n = write_trace(args.output, generate(workload), compression=workload.time_compression)
    print(f"wrote {args.output}: {n:,} events ({workload.duration:g} s at compression {workload.time_compression:g})")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "trace",
        help="make an access trace: from PostgreSQL, the service's log, or synthetic",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tsub = p.add_subparsers(dest="trace_command", required=True, metavar="SOURCE")

    pg = tsub.add_parser("from-postgres", help="reconstruct a trace from a chat_messages-style table")
    pg.add_argument("database_url")
    pg.add_argument("-o", "--output", required=True, help="trace file to write (.gz compresses)")
    pg.add_argument("--table", default="chat_messages", help="table (optionally schema.table)")
    pg.add_argument("--session-column", default="session_id")
    pg.add_argument("--time-column", default="created_at")
    pg.add_argument("--role-column", default="role")
    pg.add_argument("--content-column", default="content", help="only its octet_length is read")
    pg.add_argument("--order-column", help="tie-breaker within a session (default: seq or id if present)")
    pg.add_argument("--read-limit", type=int, default=20, help="messages each modelled read asks for (0: no reads)")
    pg.add_argument(
        "--read-position",
        choices=("before", "after"),
        default="before",
        help="modelled read just before (seed ChatService) or after each user message",
    )
    pg.add_argument("--keep-session-ids", action="store_true", help="write session ids instead of hashes")
    pg.set_defaults(func=_cmd_from_postgres)

    sv = tsub.add_parser("from-service", help="validate and normalise the service's access log")
    sv.add_argument("access_log", nargs="+", help="SESSIONSTORE_ACCESS_LOG file(s), oldest first")
    sv.add_argument("-o", "--output", required=True)
    sv.add_argument("--reorder-window", type=float, default=5.0, help="seconds of disorder tolerated (default 5)")
    sv.add_argument("--strict", action="store_true", help="fail on the first malformed line")
    sv.set_defaults(func=_cmd_from_service)

    sy = tsub.add_parser("synth", help="generate a trace from the workload model (traffic seconds)")
    sy.add_argument("-o", "--output", required=True)
    from sessionbench.bench.harness.workload import Workload

    defaults = {"duration": 6 * 3600.0, "time_compression": 1.0}
    for f in fields(Workload):
        kind = type(getattr(Workload(), f.name))
        sy.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f"w_{f.name}",
            type=kind,
            default=defaults.get(f.name),
            help=f"Workload.{f.name} (default {defaults.get(f.name, getattr(Workload(), f.name))})",
        )
    sy.add_argument("--columnar", action="store_true", help="write the columnar form (a new directory)")
    sy.set_defaults(func=_cmd_synth)

    cv = tsub.add_parser("convert", help="text trace to the columnar form (a directory) or back")
    cv.add_argument("source", help="a text trace (.tsv, .tsv.gz) or a columnar directory")
    cv.add_argument("dest", help="a new directory (from text) or a text file (from columnar; .gz compresses)")
    cv.set_defaults(func=_cmd_convert)


if __name__ == "__main__":  # pragma: no cover - `python -m sessionbench.bench.advisor.sources` for quick use
    from sessionbench.bench.cli import main

    sys.exit(main(["trace", *sys.argv[1:]]))
