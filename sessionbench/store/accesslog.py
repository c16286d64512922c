"""The access-trace format shared by the service's access log, workloads, the runner and the advisor.

A trace is a text file, one event per line, tab-separated, after two header lines::

    # sessionbench-trace v2 unit=s compression=1
    t	session	op	roles	sizes	limit	before
    0.000000	s17	append	u	212
    0.000000	s17	read			20
    0.731000	s17	append	a	845

The first line names the version and how to read the ``t`` column:

``unit``         ``s``, ``ms`` or ``us``: the unit of ``t``
``compression``  traffic seconds per second of ``t``: ``1`` when ``t`` is traffic time (what
                 users lived: the access log, ``trace from-postgres``, ``trace synth``), ``120``
                 when it is replay time of a workload compressed 120x (``compare --write-trace``)

Readers honour both (:func:`read_trace` converts to the time base its caller asks for), and
an unknown field, unit or a malformed value is a :class:`TraceFormatError`, never a guess.
Version 1 files (``# sessionbench-trace v1``, no fields) are still read: seconds, compression
unstated (:attr:`TraceHeader.compression` is None; callers then assume their own).

Columns:

``t``        time since the start of the trace (in ``unit``, non-decreasing)
``session``  an opaque session key (workload index, or a hash of a real session id)
``op``       ``append`` (one turn: one or more messages) or ``read`` (last ``limit`` before ``before``)
``roles``    for appends, one letter per message: ``s`` system, ``u`` user, ``a`` assistant, ``t`` tool
``sizes``    for appends, comma-separated content sizes in bytes, one per message
``limit``    for reads, how many messages were requested
``before``   for reads that page back, the ``before_seq``; empty otherwise

No message content and no user ids are ever written.  Round trip: ``write_trace`` then
``read_trace`` gives the same events (times rounded to the microsecond) and the same header.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

MAGIC = "# sessionbench-trace v1"
"""The version-1 first line (still read; the service's access log writes it: wall-clock seconds)."""
MAGIC_PREFIX = "# sessionbench-trace v"
COLUMNS = ("t", "session", "op", "roles", "sizes", "limit", "before")
ROLE_LETTERS = {"system": "s", "user": "u", "assistant": "a", "tool": "t"}
LETTER_ROLES = {v: k for k, v in ROLE_LETTERS.items()}
#: Seconds per unit of the ``t`` column.
UNITS: dict[str, float] = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


class TraceFormatError(ValueError):
    """A trace file is not in the sessionbench-trace format (message names the file or line)."""


@dataclass(frozen=True, slots=True)
class TraceHeader:
    """How to read a trace's times: the unit of ``t`` and its time compression."""

    unit: str = "s"
    compression: float | None = 1.0
    """Traffic seconds per second of ``t``; None: not stated (a version-1 file)."""
    version: int = 2

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise TraceFormatError(f"unknown time unit {self.unit!r} (one of {', '.join(UNITS)})")
        c = self.compression
        if c is not None and not (math.isfinite(c) and c > 0):
            raise TraceFormatError(f"compression must be a positive number, got {c!r}")

    def line(self) -> str:
        """The first line of a file with this header (always version 2)."""
        compression = 1.0 if self.compression is None else self.compression
        return f"{MAGIC_PREFIX}2 unit={self.unit} compression={compression:g}"

    def lines(self) -> str:
        """Both header lines, newline-terminated: what a writer puts first."""
        return self.line() + "\n" + "\t".join(COLUMNS) + "\n"

    @classmethod
    def parse(cls, first: str, where: str = "") -> TraceHeader:
        """The header of a file whose first line is ``first`` (raises naming ``where``)."""
        first = first.rstrip("\r\n")
        if first == MAGIC:
            return cls("s", None, 1)
        if not first.startswith(MAGIC_PREFIX + "2"):
            raise TraceFormatError(f"{where}: not a sessionbench trace (first line must start with {MAGIC_PREFIX!r})")
        fields: dict[str, str] = {}
        for token in first[len(MAGIC_PREFIX) + 1 :].split():
            key, eq, value = token.partition("=")
            if not eq or key not in ("unit", "compression") or key in fields:
                raise TraceFormatError(f"{where}: line 1: unknown or repeated header field {token!r}")
            fields[key] = value
        if set(fields) != {"unit", "compression"}:
            raise TraceFormatError(f"{where}: line 1: the header must state unit= and compression=")
        try:
            compression = float(fields["compression"])
        except ValueError:
            raise TraceFormatError(f"{where}: line 1: compression={fields['compression']!r} is not a number") from None
        try:
            return cls(fields["unit"], compression, 2)
        except TraceFormatError as exc:
            raise TraceFormatError(f"{where}: line 1: {exc}") from None

    def scale_to(self, compression: float | None) -> float:
        """Factor from this file's ``t`` to seconds at ``compression`` (None: this file's own).

        An unstated compression (version 1) is taken to be the one asked for.
        """
        own = self.compression
        if compression is None or own is None:
            return UNITS[self.unit]
        return UNITS[self.unit] * own / compression

    def same_time_base(self, other: TraceHeader) -> bool:
        """Whether events of both files can be merged as they are (unit and compression agree)."""
        return self.unit == other.unit and self.compression == other.compression


@dataclass(frozen=True, slots=True)
class TraceEvent:
    t: float
    session: str
    op: Literal["append", "read"]
    roles: str = ""
    sizes: tuple[int, ...] = ()
    limit: int = 0
    before: int | None = None

    def to_line(self) -> str:
        """The event as a line of a trace in seconds (unit ``s``), without the newline."""
        return "\t".join(
            (
                f"{self.t:.6f}",
                self.session,
                self.op,
                self.roles,
                ",".join(map(str, self.sizes)),
                str(self.limit) if self.op == "read" else "",
                "" if self.before is None else str(self.before),
            )
        )

    @classmethod
    def from_line(cls, line: str, lineno: int = 0, scale: float = 1.0) -> TraceEvent:
        """Parse one line; ``scale`` turns its ``t`` into seconds (:meth:`TraceHeader.scale_to`)."""
        parts = line.rstrip("\n").split("\t")
        if len(parts) != len(COLUMNS):
            raise TraceFormatError(f"line {lineno}: expected {len(COLUMNS)} tab-separated columns, got {len(parts)}")
        t, session, op, roles, sizes, limit, before = parts
        try:
            when = float(t) if scale == 1.0 else round(float(t) * scale, 6)
            if not math.isfinite(when):
                raise ValueError(f"time {t!r} is not finite")
            if op == "append":
                size_values = tuple(int(s) for s in sizes.split(",")) if sizes else ()
                if not size_values or len(size_values) != len(roles) or any(c not in LETTER_ROLES for c in roles):
                    raise ValueError("roles and sizes must match, one letter per message")
                return cls(when, session, "append", roles, size_values)
            if op == "read":
                return cls(when, session, "read", limit=int(limit), before=int(before) if before else None)
        except ValueError as exc:
            raise TraceFormatError(f"line {lineno}: {exc}") from None
        raise TraceFormatError(f"line {lineno}: unknown op {op!r}")


def open_text(path: str | Path, mode: Literal["r", "w"]) -> IO[str]:
    """A trace file as text (``.gz`` is gzip-compressed)."""
    p = Path(path)
    if p.suffix == ".gz":
        return gzip.open(p, "rt" if mode == "r" else "wt", encoding="utf-8")
    return open(p, mode, encoding="utf-8")


def write_trace(path: str | Path, events: Iterable[TraceEvent], *, compression: float = 1.0) -> int:
    """Write events (times in seconds, ``compression`` traffic seconds per second; ``.gz``
    compresses); return how many were written."""
    n = 0
    with open_text(path, "w") as fh:
        fh.write(TraceHeader("s", compression).lines())
        for event in events:
            fh.write(event.to_line() + "\n")
            n += 1
    return n


def read_header(fh: IO[str], where: str) -> TraceHeader:
    """Read and check both header lines from an open trace."""
    header = TraceHeader.parse(fh.readline(), where)
    if tuple(fh.readline().rstrip("\r\n").split("\t")) != COLUMNS:
        raise TraceFormatError(f"{where}: line 2 must name the columns {' '.join(COLUMNS)}")
    return header


def trace_header(path: str | Path) -> TraceHeader:
    """The header of a trace file (reads two lines)."""
    with open_text(path, "r") as fh:
        return read_header(fh, str(path))


def read_trace(path: str | Path, *, compression: float | None = None) -> Iterator[TraceEvent]:
    """Stream events from a trace file, checking the header and time order.

    Times come in seconds at ``compression`` traffic seconds per second (None: the file's
    own): a trace in traffic time read with ``compression=120`` replays 120x faster.
    """
    with open_text(path, "r") as fh:
        scale = read_header(fh, str(path)).scale_to(compression)
        last = float("-inf")
        for lineno, line in enumerate(fh, start=3):
            if not line.strip():
                continue
            event = TraceEvent.from_line(line, lineno, scale)
            if event.t < last:
                raise TraceFormatError(f"line {lineno}: time goes backwards ({event.t} < {last})")
            last = event.t
            yield event
