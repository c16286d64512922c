"""The access-trace format shared by the service's access log, workloads, the runner and the advisor.

A trace is a text file, one event per line, tab-separated, after two header lines::

    # sessionbench-trace v1
    t	session	op	roles	sizes	limit	before
    0.000000	s17	append	u	212
    0.000000	s17	read			20
    0.731000	s17	append	a	845

Columns:

``t``        seconds since the start of the trace (float, non-decreasing)
``session``  an opaque session key (workload index, or a hash of a real session id)
``op``       ``append`` (one turn: one or more messages) or ``read`` (last ``limit`` before ``before``)
``roles``    for appends, one letter per message: ``s`` system, ``u`` user, ``a`` assistant, ``t`` tool
``sizes``    for appends, comma-separated content sizes in bytes, one per message
``limit``    for reads, how many messages were requested
``before``   for reads that page back, the ``before_seq``; empty otherwise

No message content and no user ids are ever written.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

MAGIC = "# sessionbench-trace v1"
COLUMNS = ("t", "session", "op", "roles", "sizes", "limit", "before")
ROLE_LETTERS = {"system": "s", "user": "u", "assistant": "a", "tool": "t"}
LETTER_ROLES = {v: k for k, v in ROLE_LETTERS.items()}


class TraceFormatError(ValueError):
    """A trace file is not in the sessionbench-trace v1 format (message names the line)."""


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
    def from_line(cls, line: str, lineno: int = 0) -> TraceEvent:
        parts = line.rstrip("\n").split("\t")
        if len(parts) != len(COLUMNS):
            raise TraceFormatError(f"line {lineno}: expected {len(COLUMNS)} tab-separated columns, got {len(parts)}")
        t, session, op, roles, sizes, limit, before = parts
        try:
            if op == "append":
                size_values = tuple(int(s) for s in sizes.split(",")) if sizes else ()
                if not size_values or len(size_values) != len(roles) or any(c not in LETTER_ROLES for c in roles):
                    raise ValueError("roles and sizes must match, one letter per message")
                return cls(float(t), session, "append", roles, size_values)
            if op == "read":
                return cls(float(t), session, "read", limit=int(limit), before=int(before) if before else None)
        except ValueError as exc:
            raise TraceFormatError(f"line {lineno}: {exc}") from None
        raise TraceFormatError(f"line {lineno}: unknown op {op!r}")


def _open(path: Path, mode: Literal["r", "w"]) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt" if mode == "r" else "wt", encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def write_trace(path: str | Path, events: Iterable[TraceEvent]) -> int:
    """Write events (``.gz`` compresses); return how many were written."""
    n = 0
    with _open(Path(path), "w") as fh:
        fh.write(MAGIC + "\n" + "\t".join(COLUMNS) + "\n")
        for event in events:
            fh.write(event.to_line() + "\n")
            n += 1
    return n


def read_trace(path: str | Path) -> Iterator[TraceEvent]:
    """Stream events from a trace file, checking the header and time order."""
    with _open(Path(path), "r") as fh:
        if fh.readline().rstrip("\n") != MAGIC:
            raise TraceFormatError(f"{path}: not a sessionbench trace (first line must be {MAGIC!r})")
        if tuple(fh.readline().rstrip("\n").split("\t")) != COLUMNS:
            raise TraceFormatError(f"{path}: line 2 must name the columns {' '.join(COLUMNS)}")
        last = float("-inf")
        for lineno, line in enumerate(fh, start=3):
            if not line.strip():
                continue
            event = TraceEvent.from_line(line, lineno)
            if event.t < last:
                raise TraceFormatError(f"line {lineno}: time goes backwards ({event.t} < {last})")
            last = event.t
            yield event
