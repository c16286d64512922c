"""Reading traces for the advisor, in bounded memory: chunks of columns from either form.

Two forms hold the same events (:mod:`sessionbench.store.accesslog` defines them):

* the **text** form (``.tsv``, ``.tsv.gz``), parsed here in vectorised blocks (a block
  that looks unusual is re-parsed line by line by :class:`sessionbench.store.accesslog.TraceEvent`);
* a **columnar** form: a directory with ``header.json``, ``events-NNNNN.npy`` (one
  structured array per chunk: ``t`` µs, ``session`` hash, ``nmsg``, ``nbytes``,
  ``limit``, ``before``), ``messages-NNNNN.npy`` (role letter and size of each message,
  for the way back to text) and ``sessions.tsv`` (hash and key of every session).  It
  loads at memory speed: what a month of traffic needs (``sessionbench trace convert``).

:func:`iter_chunks` yields :class:`Chunk` s of either form with times in **traffic**
microseconds (the header's unit and compression applied; a version-1 text file is taken
as traffic seconds) and sessions as 64-bit hashes of their keys (:func:`session_hash`,
the same for both forms, so session sampling picks the same sessions).  Round trips:
text -> columns -> text gives the same lines; columns -> text -> columns the same arrays.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from sessionbench.store.accesslog import (
    COLUMNS,
    TraceEvent,
    TraceFormatError,
    TraceHeader,
)

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
BoolA = npt.NDArray[np.bool_]

US = 1_000_000
_BLOCK = 1 << 22
CHUNK_EVENTS = 1 << 20
COLUMNAR = "sessionbench-trace-columns"
EVENT_DTYPE = np.dtype(
    [("t", "<i8"), ("session", "<u8"), ("nmsg", "<i4"), ("nbytes", "<i8"), ("limit", "<i4"), ("before", "<i8")]
)
MESSAGE_DTYPE = np.dtype([("role", "u1"), ("size", "<i4")])

# ----------------------------------------------------------------------------- session hash

_SEED = 0x243F6A8885A308D3
_MUL = 0x9E3779B97F4A7C15
_FIN = 0xBF58476D1CE4E5B9
_M64 = (1 << 64) - 1


def session_hash(key: str | bytes) -> int:
    """A 64-bit hash of a session key (its UTF-8 bytes in 8-byte little-endian words).

    The vectorised parser computes the same value (:func:`_hash_fields`); sampling by
    ``hash < rate x 2**64`` keeps whole sessions (SHARDS).
    """
    data = key.encode() if isinstance(key, str) else key
    h = _SEED
    for i in range(0, len(data), 8):
        w = int.from_bytes(data[i : i + 8].ljust(8, b"\0"), "little")
        h = ((h ^ w) * _MUL) & _M64
        h ^= h >> 29
    h ^= len(data)
    h = (h * _FIN) & _M64
    return h ^ (h >> 32)


def _hash_fields(arr: npt.NDArray[np.uint8], start: I64, end: I64) -> U64:
    """:func:`session_hash` of every field ``arr[start:end]``, vectorised."""
    lens = end - start
    width = -(-int(lens.max()) // 8) * 8 if lens.size else 8
    idx = start[:, None] + np.arange(width)
    mat = np.where(idx < end[:, None], arr[np.minimum(idx, arr.size - 1)], np.uint8(0)).astype(np.uint8)
    words = np.ascontiguousarray(mat).view("<u8")
    nwords = -(-lens // 8)
    h = np.full(lens.size, _SEED, np.uint64)
    with np.errstate(over="ignore"):
        for c in range(words.shape[1]):
            mixed = (h ^ words[:, c]) * np.uint64(_MUL)
            mixed ^= mixed >> np.uint64(29)
            h = np.where(c < nwords, mixed, h)
        h ^= lens.astype(np.uint64)
        h *= np.uint64(_FIN)
        h ^= h >> np.uint64(32)
    out: U64 = h
    return out


def sample_threshold(rate: float) -> np.uint64:
    """Sessions whose hash is below this are in a sample of ``rate`` (0 < rate <= 1)."""
    return np.uint64(min(_M64, int(rate * 2.0**64)))


# ----------------------------------------------------------------------------- chunks


@dataclass
class Chunk:
    """Events in trace order as columns; ``t`` in traffic µs, ``session`` hashed."""

    t: I64
    session: U64
    nmsg: npt.NDArray[np.int32]
    """Messages of an append; 0 for a read."""
    nbytes: I64
    limit: npt.NDArray[np.int32]
    before: I64
    """``before_seq`` of a read that pages back, -1 otherwise."""
    messages: npt.NDArray[Any] | None = None
    """Role letter and size of each message (:data:`MESSAGE_DTYPE`), when asked for."""
    names: dict[int, str] = field(default_factory=dict)
    """Session key of each hash first seen in this chunk, when asked for."""

    @property
    def events(self) -> int:
        return int(self.t.size)

    @property
    def is_read(self) -> BoolA:
        out: BoolA = self.nmsg == 0
        return out

    def select(self, mask: BoolA) -> Chunk:
        """The events where ``mask`` (messages and names are dropped)."""
        return Chunk(self.t[mask], self.session[mask], self.nmsg[mask], self.nbytes[mask], self.limit[mask],
                     self.before[mask])  # fmt: skip

    @classmethod
    def concat(cls, parts: list[Chunk]) -> Chunk:
        if not parts:
            return _empty()

        def cat(name: str) -> Any:
            return np.concatenate([getattr(p, name) for p in parts])

        return cls(cat("t"), cat("session"), cat("nmsg"), cat("nbytes"), cat("limit"), cat("before"))

    def to_records(self) -> npt.NDArray[Any]:
        rec = np.empty(self.events, EVENT_DTYPE)
        for name in EVENT_DTYPE.names or ():
            rec[name] = getattr(self, name)
        return rec

    @classmethod
    def from_records(cls, rec: npt.NDArray[Any]) -> Chunk:
        def col(name: str) -> Any:
            return rec[name].astype(EVENT_DTYPE[name].newbyteorder("="))

        return cls(col("t"), col("session"), col("nmsg"), col("nbytes"), col("limit"), col("before"))


def _empty() -> Chunk:
    return Chunk(np.empty(0, np.int64), np.empty(0, np.uint64), np.empty(0, np.int32), np.empty(0, np.int64),
                 np.empty(0, np.int32), np.empty(0, np.int64))  # fmt: skip


def events_to_chunk(events: Iterable[TraceEvent], scale_us: float = float(US), *, messages: bool = False) -> Chunk:
    """Columns straight from events (times in seconds times ``scale_us``); tests, replays, the writer."""
    ev = list(events)
    names: dict[int, str] = {}
    hashes = []
    for e in ev:
        h = session_hash(e.session)
        hashes.append(h)
        if messages:
            names.setdefault(h, e.session)
    msgs = None
    if messages:
        msgs = np.array([(ord(r), s) for e in ev for r, s in zip(e.roles, e.sizes, strict=True)], MESSAGE_DTYPE)
    return Chunk(
        np.array([round(e.t * scale_us) for e in ev], np.int64),
        np.array(hashes, np.uint64),
        np.array([len(e.sizes) for e in ev], np.int32),
        np.array([sum(e.sizes) for e in ev], np.int64),
        np.array([e.limit if e.op == "read" else 0 for e in ev], np.int32),
        np.array([-1 if e.before is None else e.before for e in ev], np.int64),
        msgs,
        names,
    )


# ----------------------------------------------------------------------------- text parsing


def _digits(arr: npt.NDArray[np.uint8], start: I64, end: I64, *, seps: bool = False) -> tuple[I64, I64, bool]:
    """Sum of the decimal numbers in each field ``arr[start:end]`` (comma-separated if ``seps``).

    Returns (sums, number counts, ok).  ``ok`` is False when a field holds anything but
    digits (and commas), or an empty number.
    """
    lens = end - start
    n = lens.size
    total = int(lens.sum())
    if total == 0:
        return np.zeros(n, np.int64), np.zeros(n, np.int64), True
    fid = np.repeat(np.arange(n), lens)
    offs = np.cumsum(lens) - lens
    pos = start[fid] + (np.arange(total) - offs[fid])
    ch = arr[pos].astype(np.int64)
    is_digit = (ch >= 48) & (ch <= 57)
    is_sep = ch == 44 if seps else np.zeros(total, bool)
    if not np.all(is_digit | is_sep):
        return np.zeros(n, np.int64), np.zeros(n, np.int64), False
    # Next separator (comma or field end) for each character.
    sep_pos = np.sort(np.concatenate([pos[is_sep], end[lens > 0]]))
    nxt = sep_pos[np.searchsorted(sep_pos, pos)]
    exp = nxt - pos - 1
    if exp.size and exp.max() > 18:
        return np.zeros(n, np.int64), np.zeros(n, np.int64), False
    vals = np.where(is_digit, (ch - 48) * (10 ** np.minimum(exp, 18)), 0)
    cs = np.concatenate([[0], np.cumsum(vals)])
    sums = cs[offs + lens] - cs[offs]
    # Empty numbers: a separator at the field start, two in a row, or a trailing one.
    if seps:
        prev_is_boundary = np.ones(total, bool)
        prev_is_boundary[1:] = (fid[1:] != fid[:-1]) | is_sep[:-1]
        if np.any(is_sep & prev_is_boundary) or np.any(is_sep & (pos == end[fid] - 1)):
            return sums, np.zeros(n, np.int64), False
        counts = np.bincount(fid[is_sep], minlength=n) + (lens > 0)
    else:
        counts = (lens > 0).astype(np.int64)
    return sums, counts.astype(np.int64), True


def _right_aligned(arr: npt.NDArray[np.uint8], start: I64, end: I64, width: int, pad: int) -> npt.NDArray[np.uint8]:
    """Fields as rows of a (fields, width) matrix, right-aligned, padded on the left with ``pad``."""
    idx = end[:, None] - width + np.arange(width)
    mat: npt.NDArray[np.uint8] = np.where(idx >= start[:, None], arr[np.maximum(idx, 0)], np.uint8(pad))
    return mat


def _ints(arr: npt.NDArray[np.uint8], start: I64, end: I64, *, seps: bool = False) -> tuple[I64, I64, bool]:
    """:func:`_digits`, fast for fields of one number (most of them): a right-aligned digit matrix."""
    lens = end - start
    n = lens.size
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), True
    width = int(lens.max())
    if width == 0:
        return np.zeros(n, np.int64), np.zeros(n, np.int64), True
    if width > 18:
        return _digits(arr, start, end, seps=seps)
    digits = _right_aligned(arr, start, end, width, 48).astype(np.int64) - 48
    bad = ((digits < 0) | (digits > 9)).any(axis=1)
    values = digits @ (10 ** np.arange(width - 1, -1, -1, dtype=np.int64))
    counts = (lens > 0).astype(np.int64)
    if bad.any():
        if not seps:
            return values, counts, False
        rows = np.flatnonzero(bad)  # several comma-separated numbers
        sub, sub_counts, ok = _digits(arr, start[rows], end[rows], seps=True)
        values[rows], counts[rows] = sub, sub_counts
        return values, counts, ok
    return values, counts, True


def _time_us(arr: npt.NDArray[np.uint8], start: I64, end: I64) -> tuple[I64, bool]:
    """Parse ``123.456789``-style times to integer µs (at most 6 decimals, no sign or exponent)."""
    lens = end - start
    if lens.size and lens.min() >= 8 and lens.max() <= 19 and np.all(arr[end - 7] == 46):
        # The writer's format, "%.6f": right-align, drop the dot, one dot product with powers of ten.
        mat = _right_aligned(arr, start, end, int(lens.max()), 48)
        digits = np.delete(mat, mat.shape[1] - 7, axis=1).astype(np.int64) - 48
        if digits.min() >= 0 and digits.max() <= 9:
            return digits @ (10 ** np.arange(digits.shape[1] - 1, -1, -1, dtype=np.int64)), True
    return _time_generic(arr, start, end)


def _time_generic(arr: npt.NDArray[np.uint8], start: I64, end: I64) -> tuple[I64, bool]:
    lens = end - start
    n = lens.size
    if n == 0:
        return np.zeros(0, np.int64), True
    if lens.min() < 1:
        return np.zeros(n, np.int64), False
    total = int(lens.sum())
    fid = np.repeat(np.arange(n), lens)
    offs = np.cumsum(lens) - lens
    pos = start[fid] + (np.arange(total) - offs[fid])
    ch = arr[pos].astype(np.int64)
    is_dot = ch == 46
    is_digit = (ch >= 48) & (ch <= 57)
    if not np.all(is_digit | is_dot) or np.any(np.bincount(fid[is_dot], minlength=n) > 1):
        return np.zeros(n, np.int64), False
    dot = end.copy()
    dot[fid[is_dot]] = pos[is_dot]
    d = dot[fid]
    exp = np.where(pos < d, d - pos - 1 + 6, 6 - (pos - d))
    if np.any(is_digit & ((exp < 0) | (exp > 18))):
        return np.zeros(n, np.int64), False
    vals = np.where(is_digit, (ch - 48) * (10 ** np.clip(exp, 0, 18)), 0)
    cs = np.concatenate([[0], np.cumsum(vals)])
    return cs[offs + lens] - cs[offs], True


def _parse_block(buf: bytes, keep: bool) -> Chunk | None:
    """Vectorised parse of whole lines; None when anything looks unusual (the caller re-parses slowly).

    Times come out in µs of the ``t`` column read as seconds (the caller applies the header).
    """
    arr = np.frombuffer(buf, dtype=np.uint8)
    nl = np.flatnonzero(arr == 10)
    if nl.size == 0:
        return None
    starts = np.concatenate([[0], nl[:-1] + 1]).astype(np.int64)
    ends = nl.astype(np.int64)
    if np.any(ends == starts) or np.any(arr[ends - 1] == 13):
        return None  # blank lines or CRLF: the slow path handles them
    tabs = np.flatnonzero(arr == 9).astype(np.int64)
    per_line = np.diff(np.searchsorted(tabs, np.concatenate([[0], ends])))
    if tabs.size != 6 * nl.size or np.any(per_line != 6):
        return None
    tb = tabs.reshape(-1, 6)
    op_len = tb[:, 2] - tb[:, 1] - 1
    op_ch = arr[tb[:, 1] + 1]
    is_read = (op_ch == ord("r")) & (op_len == 4)
    is_append = (op_ch == ord("a")) & (op_len == 6)
    if not np.all(is_read | is_append):
        return None
    for mask, word in ((is_read, b"read"), (is_append, b"append")):
        at = tb[mask, 1, None] + 1 + np.arange(len(word))
        if at.size and not np.all(arr[at] == np.frombuffer(word, np.uint8)):
            return None
    t, ok = _time_us(arr, starts, tb[:, 0])
    if not ok:
        return None
    sizes, counts, ok = _ints(arr, tb[:, 3] + 1, tb[:, 4], seps=True)
    if not ok:
        return None
    limit, _, ok = _ints(arr, tb[:, 4] + 1, tb[:, 5])
    if not ok:
        return None
    bef, _, ok = _ints(arr, tb[:, 5] + 1, ends)
    if not ok:
        return None
    nroles = tb[:, 3] - tb[:, 2] - 1
    # Appends: one role letter per size, no limit/before; reads: no roles/sizes.
    rl_start = tb[:, 2] + 1
    roles_ok = True
    role_chars = np.empty(0, np.uint8)
    if nroles.sum():
        fid = np.repeat(np.arange(nroles.size), nroles)
        offs = np.cumsum(nroles) - nroles
        pos = rl_start[fid] + (np.arange(int(nroles.sum())) - offs[fid])
        role_chars = arr[pos]
        roles_ok = bool(np.all(np.isin(role_chars, np.frombuffer(b"suat", np.uint8))))
    lim_len = tb[:, 5] - tb[:, 4] - 1
    bef_len = ends - tb[:, 5] - 1
    good = roles_ok & bool(
        np.all(np.where(is_append, (nroles > 0) & (counts == nroles) & (lim_len == 0) & (bef_len == 0), True))
        & np.all(np.where(is_read, (nroles == 0) & (counts == 0) & (lim_len > 0), True))
    )
    if not good:
        return None
    s_start, s_end = tb[:, 0] + 1, tb[:, 1]
    s_len = s_end - s_start
    if s_len.min() < 1 or s_len.max() > 200:
        return None
    chunk = Chunk(
        t,
        _hash_fields(arr, s_start, s_end),
        np.where(is_append, nroles, 0).astype(np.int32),
        np.where(is_append, sizes, 0),
        np.where(is_read, limit, 0).astype(np.int32),
        np.where(is_read & (bef_len > 0), bef, -1),
    )
    if keep:
        multi = np.flatnonzero(is_append & (nroles > 1))
        msg_sizes = sizes[is_append].astype(np.int64)
        if multi.size:  # turns of several messages: their sizes one by one (rare)
            lines = buf.split(b"\n")
            per_event = [
                [int(x) for x in lines[i].split(b"\t")[4].split(b",")] if nroles[i] > 1 else [int(sizes[i])]
                for i in np.flatnonzero(is_append)
            ]
            msg_sizes = np.array([x for sizes_of in per_event for x in sizes_of], np.int64)
        chunk.messages = np.empty(role_chars.size, MESSAGE_DTYPE)
        chunk.messages["role"] = role_chars
        chunk.messages["size"] = msg_sizes
        first = np.unique(chunk.session, return_index=True)[1]
        chunk.names = {int(chunk.session[i]): buf[s_start[i] : s_end[i]].decode() for i in first}
    return chunk


def _slow_block(lines: list[str], lineno: int, keep: bool) -> Chunk:
    events = [TraceEvent.from_line(line, lineno + i) for i, line in enumerate(lines) if line.strip()]
    return events_to_chunk(events, messages=keep)


def _check_order(t: I64, last: int, lineno: int) -> int:
    if t.size:
        back = np.flatnonzero(np.diff(t) < 0)
        if t[0] < last or back.size:
            where = lineno + (int(back[0]) + 1 if back.size and t[0] >= last else 0)
            raise TraceFormatError(f"line {where}: time goes backwards")
        return int(t[-1])
    return last


def _open_binary(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]  # GzipFile is a binary IO
    return open(path, "rb")


def _scale(t: I64, factor: float) -> I64:
    if factor == 1.0:
        return t
    out: I64 = np.rint(t * factor).astype(np.int64)
    return out


def _text_chunks(path: Path, *, block_bytes: int, keep: bool) -> Iterator[Chunk]:
    with _open_binary(path) as fh:
        header = TraceHeader.parse(fh.readline().decode("utf-8", "replace"), str(path))
        if tuple(fh.readline().decode("utf-8", "replace").rstrip("\r\n").split("\t")) != COLUMNS:
            raise TraceFormatError(f"{path}: line 2 must name the columns {' '.join(COLUMNS)}")
        factor = header.scale_to(1.0)  # to traffic seconds (a version-1 file: taken as traffic)
        lineno, last = 3, -(1 << 62)
        rest = b""
        while True:
            data = rest + fh.read(block_bytes)
            at_end = len(data) == len(rest)
            if at_end:
                if data and not data.endswith(b"\n"):
                    data += b"\n"
                rest = b""
            else:
                cut = data.rfind(b"\n") + 1
                data, rest = data[:cut], data[cut:]
            if data:
                chunk = _parse_block(data, keep)
                if chunk is None:
                    chunk = _slow_block(data.decode("utf-8").split("\n")[:-1], lineno, keep)
                last = _check_order(chunk.t, last, lineno)
                chunk.t = _scale(chunk.t, factor)
                lineno += data.count(b"\n")
                yield chunk
            if at_end:
                break


def is_columnar(path: str | Path) -> bool:
    return (Path(path) / "header.json").is_file()


def columnar_header(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        meta: dict[str, Any] = json.loads((p / "header.json").read_text())
    except (OSError, ValueError) as exc:
        raise TraceFormatError(f"{p}: unreadable header.json ({exc})") from None
    if meta.get("format") != COLUMNAR or meta.get("version") != 1:
        raise TraceFormatError(f"{p}: not a {COLUMNAR} v1 directory")
    TraceHeader(str(meta.get("unit")), float(meta.get("compression", 0)))  # validates both
    if meta["unit"] != "us":
        raise TraceFormatError(f"{p}: columnar traces are in us, header says {meta['unit']!r}")
    return meta


def _columnar_chunks(path: Path, *, keep: bool) -> Iterator[Chunk]:
    meta = columnar_header(path)
    factor = float(meta["compression"])
    names: dict[int, str] = {}
    if keep:
        with open(path / "sessions.tsv", encoding="utf-8") as fh:
            for line in fh:
                h, _, key = line.rstrip("\n").partition("\t")
                names[int(h, 16)] = key
    last = -(1 << 62)
    for part in meta["chunks"]:
        rec = np.load(path / part["events"], allow_pickle=False)
        if rec.dtype != EVENT_DTYPE or rec.size != part["n"]:
            raise TraceFormatError(f"{path / part['events']}: not the chunk header.json describes")
        chunk = Chunk.from_records(rec)
        del rec
        last = _check_order(chunk.t, last, 0)
        chunk.t = _scale(chunk.t, factor)
        if keep:
            chunk.messages = np.load(path / part["messages"], allow_pickle=False)
            first = np.unique(chunk.session, return_index=True)[1]
            chunk.names = {int(chunk.session[i]): names[int(chunk.session[i])] for i in first}
        yield chunk


def iter_chunks(path: str | Path, *, block_bytes: int = _BLOCK, keep: bool = False) -> Iterator[Chunk]:
    """Chunks of a trace of either form, in order (``keep``: with messages and session keys).

    Raises :class:`sessionbench.store.accesslog.TraceFormatError` naming the line (text) or file.
    """
    p = Path(path)
    if is_columnar(p):
        yield from _columnar_chunks(p, keep=keep)
    else:
        yield from _text_chunks(p, block_bytes=block_bytes, keep=keep)


def load(path: str | Path) -> Chunk:
    """The whole trace as one chunk (small traces, tests)."""
    return Chunk.concat(list(iter_chunks(path)))


def estimate_events(path: str | Path) -> int:
    """Events in a trace: exact for the columnar form, from the file size for text."""
    p = Path(path)
    if is_columnar(p):
        return int(columnar_header(p)["events"])
    size = p.stat().st_size
    return max(1, int(size * (4.0 if p.suffix == ".gz" else 1.0) / 36))


# ----------------------------------------------------------------------------- writing


class ColumnarWriter:
    """Writes a columnar trace directory chunk by chunk (traffic µs, compression 1)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        if any(self.path.iterdir()):
            raise FileExistsError(f"{self.path} is not empty")
        self.chunks: list[dict[str, Any]] = []
        self.events = 0
        self._names = open(self.path / "sessions.tsv", "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._seen: set[int] = set()

    def add(self, chunk: Chunk) -> None:
        if chunk.messages is None:
            raise ValueError("a chunk written to a columnar trace needs its messages (iter_chunks keep=True)")
        i = len(self.chunks)
        ev, msg = f"events-{i:05d}.npy", f"messages-{i:05d}.npy"
        np.save(self.path / ev, chunk.to_records(), allow_pickle=False)
        np.save(self.path / msg, chunk.messages, allow_pickle=False)
        for h, key in chunk.names.items():
            if h not in self._seen:
                self._seen.add(h)
                self._names.write(f"{h:016x}\t{key}\n")
        self.chunks.append({"events": ev, "messages": msg, "n": chunk.events})
        self.events += chunk.events

    def add_events(self, events: Iterable[TraceEvent], compression: float = 1.0) -> None:
        """Append events (times in seconds at ``compression``) in chunks of :data:`CHUNK_EVENTS`."""
        buf: list[TraceEvent] = []
        for e in events:
            buf.append(e)
            if len(buf) >= CHUNK_EVENTS:
                self.add(events_to_chunk(buf, US * compression, messages=True))
                buf = []
        if buf:
            self.add(events_to_chunk(buf, US * compression, messages=True))

    def close(self) -> Path:
        self._names.close()
        meta = {"format": COLUMNAR, "version": 1, "unit": "us", "compression": 1.0, "events": self.events,
                "sessions": len(self._seen), "chunks": self.chunks}  # fmt: skip
        (self.path / "header.json").write_text(json.dumps(meta, indent=1))
        return self.path


def chunk_events(chunk: Chunk) -> Iterator[TraceEvent]:
    """The events of a chunk kept with messages and names (times in traffic seconds)."""
    if chunk.messages is None:
        raise ValueError("chunk_events needs a chunk read with keep=True")
    pos = 0
    roles = chunk.messages["role"]
    sizes = chunk.messages["size"]
    for i in range(chunk.events):
        key = chunk.names.get(int(chunk.session[i])) or f"{int(chunk.session[i]):016x}"
        t = int(chunk.t[i]) / US
        n = int(chunk.nmsg[i])
        if n:
            r = "".join(chr(c) for c in roles[pos : pos + n])
            yield TraceEvent(t, key, "append", r, tuple(int(x) for x in sizes[pos : pos + n]))
            pos += n
        else:
            b = int(chunk.before[i])
            yield TraceEvent(t, key, "read", limit=int(chunk.limit[i]), before=None if b < 0 else b)


def iter_events(path: str | Path) -> Iterator[TraceEvent]:
    """Events of a trace of either form, times in traffic seconds (for replays and conversion)."""
    names: dict[int, str] = {}
    for chunk in iter_chunks(path, keep=True):
        names.update(chunk.names)
        chunk.names = names
        yield from chunk_events(chunk)


def convert(source: str | Path, dest: str | Path) -> int:
    """Text -> columnar (``dest`` a new directory) or columnar -> text (``dest`` a file); events written."""
    from sessionbench.store.accesslog import write_trace

    if is_columnar(source):
        return write_trace(dest, iter_events(source), compression=1.0)
    writer = ColumnarWriter(dest)
    for chunk in iter_chunks(source, keep=True):
        writer.add(chunk)
    writer.close()
    return writer.events
