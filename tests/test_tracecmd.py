"""`sessionbench trace`: traces reconstructed from PostgreSQL (the store's schema and the
seed's), normalised from the service's access log, and synthesised from the workload."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from sessionbench.bench.advisor import sources as tracecmd
from sessionbench.bench.cli import main
from sessionbench.bench.harness.workload import Workload, generate
from sessionbench.store import SessionStore
from sessionbench.store.accesslog import (
    COLUMNS,
    MAGIC,
    TraceEvent,
    TraceFormatError,
    TraceHeader,
    read_trace,
    trace_header,
    write_trace,
)


async def test_from_postgres_on_a_database_filled_by_the_store(
    postgres_store: SessionStore, database_url: str, tmp_path: Path
) -> None:
    """Each turn the store wrote becomes one append with its roles and byte sizes, after a modelled read."""
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    await postgres_store.add_message(a, "user", "héllo")  # 6 bytes in UTF-8
    await postgres_store.add_messages(a, [{"role": "assistant", "content": "x" * 40}, {"role": "tool", "content": "y"}])
    await postgres_store.add_message(b, "system", "s" * 7)
    await postgres_store.add_message(a, "user", "z" * 3)
    out = tmp_path / "pg.tsv"
    stats = await tracecmd.write_from_postgres(out, database_url, tracecmd.TableSpec(), read_limit=20)
    events = list(read_trace(out))
    assert (stats.rows, stats.appends, stats.reads, stats.sessions) == (5, 4, 2, 2)
    ka, kb = tracecmd.session_key(a), tracecmd.session_key(b)
    shape = [(e.session, e.op, e.roles, e.sizes, e.limit) for e in events]
    assert shape == [
        (ka, "read", "", (), 20),
        (ka, "append", "u", (6,), 0),
        (ka, "append", "at", (40, 1), 0),
        (kb, "append", "s", (7,), 0),
        (ka, "read", "", (), 20),
        (ka, "append", "u", (3,), 0),
    ]
    assert events[0].t == 0.0
    assert all(x.t <= y.t for x, y in itertools.pairwise(events))


async def test_from_postgres_on_the_seed_schema(database_url: str, tmp_path: Path) -> None:
    """The seed's own table (serial id, naive timestamps, one row per message) works with --table only."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DROP SCHEMA IF EXISTS seedapp CASCADE; CREATE SCHEMA seedapp")
        await conn.execute(
            """
            CREATE TABLE seedapp.chat_sessions (session_id UUID PRIMARY KEY, user_id INTEGER,
                created_at TIMESTAMP DEFAULT NOW(), last_message_at TIMESTAMP DEFAULT NOW(),
                metadata JSONB, is_active BOOLEAN DEFAULT TRUE);
            CREATE TABLE seedapp.chat_messages (id SERIAL PRIMARY KEY,
                session_id UUID REFERENCES seedapp.chat_sessions(session_id) ON DELETE CASCADE,
                role VARCHAR(20) NOT NULL, content TEXT NOT NULL, created_at TIMESTAMP DEFAULT NOW(), metadata JSONB);
            """
        )
        # Fixed ids: rows at the same instant are ordered by session id, then by the serial id.
        s1, s2 = uuid.UUID(int=1), uuid.UUID(int=2)
        t0 = datetime(2025, 3, 1, 12, 0, 0)
        await conn.executemany("INSERT INTO seedapp.chat_sessions (session_id) VALUES ($1)", [(s1,), (s2,)])
        rows = [
            (s1, "user", "hi", t0),
            (s1, "assistant", "hello there", t0 + timedelta(seconds=2)),
            (s2, "user", "a" * 10, t0 + timedelta(seconds=2)),  # same instant as s1's answer
            (s1, "user", "more", t0 + timedelta(hours=3)),
        ]
        await conn.executemany(
            "INSERT INTO seedapp.chat_messages (session_id, role, content, created_at) VALUES ($1, $2, $3, $4)", rows
        )
    finally:
        await conn.close()
    out = tmp_path / "seed.tsv.gz"
    argv = ["trace", "from-postgres", database_url, "-o", str(out), "--table", "seedapp.chat_messages"]
    code = await asyncio.to_thread(main, [*argv, "--read-limit", "10", "--keep-session-ids"])
    assert code == 0
    events = list(read_trace(out))
    got = [(e.t, e.session, e.op, e.roles, e.sizes) for e in events]
    assert got == [
        (0.0, str(s1), "read", "", ()),
        (0.0, str(s1), "append", "u", (2,)),
        (2.0, str(s1), "append", "a", (11,)),
        (2.0, str(s2), "read", "", ()),
        (2.0, str(s2), "append", "u", (10,)),
        (10800.0, str(s1), "read", "", ()),
        (10800.0, str(s1), "append", "u", (4,)),
    ]
    assert {e.limit for e in events if e.op == "read"} == {10}


async def test_from_postgres_rejects_unsafe_identifiers(database_url: str, tmp_path: Path) -> None:
    """Table and column names are identifiers, never SQL: anything else fails before a query runs."""
    spec = tracecmd.TableSpec(table="chat_messages; DROP TABLE x")
    with pytest.raises(ValueError, match="invalid SQL identifier"):
        await tracecmd.write_from_postgres(tmp_path / "x.tsv", database_url, spec)
    with pytest.raises(ValueError, match="no column"):
        await tracecmd.write_from_postgres(tmp_path / "x.tsv", database_url, tracecmd.TableSpec(time_column="when"))


def test_from_service_puts_late_lines_back_in_order(tmp_path: Path) -> None:
    """Access-log lines written out of order are sorted within the window; malformed lines are skipped or fatal."""
    log = tmp_path / "access.log"
    ev = [
        TraceEvent(1.0, "h1", "append", "u", (5,)),
        TraceEvent(2.0, "h1", "read", limit=20, before=3),
        TraceEvent(0.5, "h2", "read", limit=20),  # a slow request, logged when it finished
    ]
    log.write_text(f"{MAGIC}\n" + "\n".join(e.to_line() for e in ev) + "\nnot a trace line\n")
    out = tmp_path / "trace.tsv"
    assert main(["trace", "from-service", str(log), "-o", str(out)]) == 0
    assert [e.t for e in read_trace(out)] == [0.5, 1.0, 2.0]
    with pytest.raises(TraceFormatError, match="line 5"):
        list(tracecmd.service_events([log], strict=True))
    with pytest.raises(TraceFormatError, match="reorder-window"):
        list(tracecmd.service_events([log], window=0.1))


def test_synth_writes_the_workload_trace(tmp_path: Path) -> None:
    """`trace synth` writes exactly the events of bench.harness.workload for the given options, in traffic seconds."""
    out = tmp_path / "synth.tsv"
    assert main(["trace", "synth", "-o", str(out), "--duration", "1800", "--seed", "5"]) == 0
    expected = tmp_path / "expected.tsv"
    write_trace(expected, generate(Workload(duration=1800, time_compression=1.0, seed=5)))
    assert out.read_text() == expected.read_text()


def test_header_records_unit_and_compression_and_every_reader_honours_it(tmp_path: Path) -> None:
    """A v2 header states unit and compression; read_trace rescales to what its caller asks; v1 still reads."""
    events = [TraceEvent(0.0, "a", "append", "u", (5,)), TraceEvent(2.5, "a", "read", limit=20)]
    path = tmp_path / "replay.tsv"
    write_trace(path, events, compression=120)
    assert path.read_text().splitlines()[0] == "# sessionbench-trace v2 unit=s compression=120"
    assert trace_header(path) == TraceHeader("s", 120.0)
    assert [e.t for e in read_trace(path)] == [0.0, 2.5]  # as written: replay seconds
    assert [e.t for e in read_trace(path, compression=1)] == [0.0, 300.0]  # traffic seconds
    assert [e.t for e in read_trace(path, compression=60)] == [0.0, 5.0]
    ms = tmp_path / "ms.tsv"
    ms.write_text("# sessionbench-trace v2 unit=ms compression=1\n" + "\t".join(COLUMNS) + "\n"
                  "1500\ta\tappend\tu\t5\t\t\n")  # fmt: skip
    assert [e.t for e in read_trace(ms)] == [1.5]
    from sessionbench.bench.advisor.parse import load

    assert load(ms).t.tolist() == [1_500_000]
    assert load(path).t.tolist() == [0, 300_000_000]  # the advisor always works in traffic time
    v1 = tmp_path / "v1.tsv"
    v1.write_text(f"{MAGIC}\n" + "\t".join(COLUMNS) + "\n" + events[1].to_line() + "\n")
    assert trace_header(v1).compression is None
    assert [e.t for e in read_trace(v1, compression=120)] == [2.5]  # unstated: taken as the caller's


@pytest.mark.parametrize(
    ("first", "message"),
    [
        ("# sessionbench-trace v2 unit=min compression=1", "unknown time unit"),
        ("# sessionbench-trace v2 unit=s compression=0", "compression must be a positive number"),
        ("# sessionbench-trace v2 unit=s compression=1 gzip=1", "unknown or repeated header field"),
        ("# sessionbench-trace v2 unit=s", "must state unit= and compression="),
        ("# sessionbench-trace v3", "not a sessionbench trace"),
    ],
)
def test_a_header_that_cannot_be_honoured_is_an_error(tmp_path: Path, first: str, message: str) -> None:
    """An unknown unit or field, a bad compression or another version fails instead of being guessed."""
    path = tmp_path / "bad.tsv"
    path.write_text(first + "\n" + "\t".join(COLUMNS) + "\n")
    with pytest.raises(TraceFormatError, match=message):
        list(read_trace(path))


def test_logs_with_different_time_bases_are_not_concatenated(tmp_path: Path) -> None:
    """from-service refuses to merge logs whose headers disagree on unit or compression."""
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    write_trace(a, [TraceEvent(1.0, "h1", "append", "u", (5,))])
    write_trace(b, [TraceEvent(2.0, "h1", "read", limit=20)], compression=120)
    with pytest.raises(TraceFormatError, match="does not match the first log"):
        list(tracecmd.service_events([a, b]))


def test_synth_and_compare_agree_on_the_time_base(tmp_path: Path) -> None:
    """`trace synth` writes traffic seconds and says so; read at the compare's compression it replays faster."""
    out = tmp_path / "synth.tsv"
    assert main(["trace", "synth", "-o", str(out), "--duration", "600", "--seed", "2"]) == 0
    assert trace_header(out) == TraceHeader("s", 1.0)
    traffic = [e.t for e in read_trace(out)]
    replay = [e.t for e in read_trace(out, compression=120)]
    assert replay == pytest.approx([t / 120 for t in traffic], abs=1e-6)
    compressed = tmp_path / "compressed.tsv"
    argv = ["trace", "synth", "-o", str(compressed), "--duration", "5", "--time-compression", "120", "--seed", "2"]
    assert main(argv) == 0
    assert trace_header(compressed) == TraceHeader("s", 120.0)
    assert [e.t for e in read_trace(compressed, compression=1)][:50] == pytest.approx(traffic[:50], abs=1e-3)


def test_convert_round_trips_through_the_columnar_form(tmp_path: Path) -> None:
    """`trace convert` to the columnar form and back gives the same lines; an existing target is refused."""
    text = tmp_path / "t.tsv"
    write_trace(text, generate(Workload(duration=1800, time_compression=1.0, seed=4)))
    columns, back = tmp_path / "t.columns", tmp_path / "back.tsv"
    assert main(["trace", "convert", str(text), str(columns)]) == 0
    assert main(["trace", "convert", str(columns), str(back)]) == 0
    assert back.read_text() == text.read_text()
    assert main(["trace", "convert", str(text), str(columns)]) == 2
