"""The TTL and cache-size advisor's computations: pure functions over an access trace.

:func:`load_trace` reads a :mod:`store.accesslog` file once (parsed in vectorised blocks)
into compact columns; :func:`analyse` then derives, for every read, the quantities that
decide its fate in the hybrid store for *every* setting at once, and integrates them.

The model is the store's real semantics (``store/hybrid.py``):

* an **entry** (one session's window) is created only by a read **miss** without
  ``before_seq`` on a session that has messages (the populate); appends extend an
  entry that exists and never create one; reads with ``before_seq`` never populate;
* **sliding** TTL: every read and every append that finds the entry refreshes it, so a
  read hits iff an entry was populated earlier and no gap between the session's
  consecutive events since the last populating read was >= TTL.  The *key* of a read is
  that largest gap; the read is present for every TTL above its key, which makes the
  hit-ratio curve exact for all TTLs from the sorted keys;
* **fixed** TTL counts from the populate; the populate times depend on the TTL (a read
  at or after expiry populates again), so fixed curves are computed exactly at each
  TTL of the grid (one vectorised greedy chain per TTL);
* the window always holds the last ``min(cache_size, history)`` messages, so a read
  needing the newest ``need`` messages (``min(limit, history)``, or the paged range
  up to the newest message) is answered iff ``need <= cache_size``; otherwise it is a
  ``bypass`` (one PostgreSQL read, no populate, the TTL still refreshes).

Memory is integrated over time as three components (entries, cached messages, cached
content bytes) per (TTL, cache_size) and turned into bytes with a :class:`RedisModel`
measured on the real Redis (``bench/advise.py``).  Cached content bytes of a window are
``min(cache_size, N)`` times the session's mean message size (exact when the window
holds the whole history).  The LRU miss-ratio curve for a ``maxmemory`` uses exact
byte-weighted stack distances (:func:`stack_distances`, O(n log² n), vectorised) over
optionally SHARDS-sampled sessions.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from store.accesslog import COLUMNS, MAGIC, TraceEvent, TraceFormatError

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BoolA = npt.NDArray[np.bool_]

US = 1_000_000
#: Gaps are kept in microseconds below 2**43 µs (101 days); larger ones are "forever".
GAP_CAP = (1 << 43) - 2
NO_ANCHOR = (1 << 43) - 1
#: Default TTL grid in seconds (plus infinity).
DEFAULT_TTLS: tuple[float, ...] = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 14400, 21600,
    43200, 86400, 172800, 259200, 604800, 1209600, 2592000,
)  # fmt: skip
#: Fixed-TTL grid (each fixed TTL costs a pass of its own; the sliding curve is exact for all TTLs).
DEFAULT_FIXED_TTLS: tuple[float, ...] = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400, 604800)
#: Cache sizes shown in tables and plots (every size up to NEED_CAP is computed).
DEFAULT_SIZES: tuple[int, ...] = (1, 2, 5, 10, 20, 30, 50, 100, 200, 500, 1000)
#: Hit ratio and memory by cache size are exact for every size up to this.
NEED_CAP = 4096
_BLOCK = 1 << 22


# ----------------------------------------------------------------------------- loading


@dataclass
class TraceColumns:
    """A trace as columns, in trace order.  Times in µs since the trace's zero."""

    t: I64
    sid: npt.NDArray[np.int32]
    is_read: BoolA
    nmsg: npt.NDArray[np.int32]
    nbytes: I64
    limit: npt.NDArray[np.int32]
    before: I64
    sessions: list[str]

    @property
    def events(self) -> int:
        return int(self.t.size)


class _Builder:
    def __init__(self) -> None:
        self.ids: dict[bytes, int] = {}
        self.parts: list[dict[str, Any]] = []
        self.last_t = -1

    def add(self, cols: dict[str, Any], keys: list[bytes], inverse: I64, lineno: int) -> None:
        gid = np.empty(len(keys), dtype=np.int32)
        ids = self.ids
        for i, k in enumerate(keys):
            v = ids.get(k)
            if v is None:
                v = ids[k] = len(ids)
            gid[i] = v
        cols["sid"] = gid[inverse]
        t = cols["t"]
        if t.size:
            back = np.flatnonzero(np.diff(t) < 0)
            if t[0] < self.last_t or back.size:
                where = lineno + (int(back[0]) + 1 if back.size and t[0] >= self.last_t else 0)
                raise TraceFormatError(f"line {where}: time goes backwards")
            self.last_t = int(t[-1])
        self.parts.append(cols)

    def build(self) -> TraceColumns:
        names = ("t", "sid", "is_read", "nmsg", "nbytes", "limit", "before")
        dtypes = (np.int64, np.int32, np.bool_, np.int32, np.int64, np.int32, np.int64)
        cat: dict[str, Any] = {
            n: (np.concatenate([p[n] for p in self.parts]) if self.parts else np.empty(0, d)).astype(d, copy=False)
            for n, d in zip(names, dtypes, strict=True)
        }
        self.parts = []
        sessions = [k.decode() for k in self.ids]
        return TraceColumns(sessions=sessions, **cat)


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


def _parse_block(buf: bytes, lineno: int) -> tuple[dict[str, Any], list[bytes], I64] | None:
    """Vectorised parse of whole lines; None when anything looks unusual (the caller re-parses slowly)."""
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
    if nroles.sum():
        fid = np.repeat(np.arange(nroles.size), nroles)
        offs = np.cumsum(nroles) - nroles
        pos = rl_start[fid] + (np.arange(int(nroles.sum())) - offs[fid])
        roles_ok = bool(np.all(np.isin(arr[pos], np.frombuffer(b"suat", np.uint8))))
    lim_len = tb[:, 5] - tb[:, 4] - 1
    bef_len = ends - tb[:, 5] - 1
    good = roles_ok & bool(
        np.all(np.where(is_append, (nroles > 0) & (counts == nroles) & (lim_len == 0) & (bef_len == 0), True))
        & np.all(np.where(is_read, (nroles == 0) & (counts == 0) & (lim_len > 0), True))
    )
    if not good:
        return None
    # Session keys: fixed-width rows, unique per block, mapped to global ids by the builder.
    s_start, s_end = tb[:, 0] + 1, tb[:, 1]
    s_len = s_end - s_start
    if s_len.min() < 1 or s_len.max() > 200:
        return None
    # Right-aligned, NUL-padded on the left (keys never hold NUL; the padding is stripped).
    uniq, inverse = _unique_rows(_right_aligned(arr, s_start, s_end, int(s_len.max()), 0))
    cols = {
        "t": t,
        "is_read": is_read,
        "nmsg": np.where(is_append, nroles, 0).astype(np.int32),
        "nbytes": np.where(is_append, sizes, 0),
        "limit": np.where(is_read, limit, 0).astype(np.int32),
        "before": np.where(is_read & (bef_len > 0), bef, -1),
    }
    return cols, [bytes(u).lstrip(b"\0") for u in uniq], inverse.astype(np.int64)


def _unique_rows(mat: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[Any], I64]:
    """Distinct rows (as bytes-like keys) and each row's index among them.

    Rows are hashed as 64-bit words (fast); a hash collision is detected by comparing
    every row with its group's representative, and then exact sorting is used instead.
    """
    rows, width = mat.shape
    words = -(-width // 8)
    padded = np.zeros((rows, words * 8), np.uint8)
    padded[:, :width] = mat
    w64 = padded.view(np.uint64)
    h = np.zeros(rows, np.uint64)
    for c in range(words):
        h = (h ^ w64[:, c]) * np.uint64(0x9E3779B97F4A7C15)
        h ^= h >> np.uint64(29)
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    if np.array_equal(w64, w64[first][inverse]):
        keys = np.ascontiguousarray(mat[first]).view(f"S{width}").ravel()
        return keys, inverse.astype(np.int64)
    keys, inv = np.unique(np.ascontiguousarray(mat).view(f"S{width}").ravel(), return_inverse=True)
    return keys, inv.astype(np.int64)


def _slow_block(lines: list[str], lineno: int) -> tuple[dict[str, Any], list[bytes], I64]:
    events = [TraceEvent.from_line(line, lineno + i) for i, line in enumerate(lines) if line.strip()]
    keys: dict[bytes, int] = {}
    inv = np.array([keys.setdefault(e.session.encode(), len(keys)) for e in events], dtype=np.int64)
    cols = {
        "t": np.array([round(e.t * US) for e in events], dtype=np.int64),
        "is_read": np.array([e.op == "read" for e in events], dtype=bool),
        "nmsg": np.array([len(e.sizes) for e in events], dtype=np.int32),
        "nbytes": np.array([sum(e.sizes) for e in events], dtype=np.int64),
        "limit": np.array([e.limit if e.op == "read" else 0 for e in events], dtype=np.int32),
        "before": np.array([-1 if e.before is None else e.before for e in events], dtype=np.int64),
    }
    return cols, list(keys), inv


def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]  # GzipFile is a binary IO
    return open(path, "rb")


def load_trace(path: str | Path, *, block_bytes: int = _BLOCK) -> TraceColumns:
    """Read a trace file into :class:`TraceColumns` (one pass, vectorised; ``.gz`` works).

    Raises :class:`store.accesslog.TraceFormatError` naming the line for malformed input.
    """
    p = Path(path)
    builder = _Builder()
    with _open(p) as fh:
        head = fh.readline().decode("utf-8", "replace").rstrip("\n")
        if head != MAGIC:
            raise TraceFormatError(f"{path}: not a sessionbench trace (first line must be {MAGIC!r})")
        if tuple(fh.readline().decode("utf-8", "replace").rstrip("\n").split("\t")) != COLUMNS:
            raise TraceFormatError(f"{path}: line 2 must name the columns {' '.join(COLUMNS)}")
        lineno = 3
        rest = b""
        while True:
            chunk = fh.read(block_bytes)
            data = rest + chunk
            if not chunk:
                if data and not data.endswith(b"\n"):
                    data += b"\n"
                rest = b""
            else:
                cut = data.rfind(b"\n") + 1
                data, rest = data[:cut], data[cut:]
            if data:
                parsed = _parse_block(data, lineno)
                if parsed is None:
                    parsed = _slow_block(data.decode("utf-8").split("\n")[:-1], lineno)
                builder.add(*parsed, lineno)
                lineno += data.count(b"\n")
            if not chunk:
                break
    return builder.build()


def columns_from_events(events: Sequence[TraceEvent]) -> TraceColumns:
    """Columns straight from events (tests, the validation replay)."""
    builder = _Builder()
    if events:
        builder.add(*_slow_block([e.to_line() for e in events], 1), 1)
    return builder.build()


# ----------------------------------------------------------------------------- analysis


@dataclass
class Analysis:
    """Everything the one pass produces (raw counts; :func:`summarise` makes it JSON)."""

    ttls: F64
    """TTL grid in seconds; the last entry is ``inf``."""
    events: int
    reads: int
    appends: int
    messages: int
    content_bytes: int
    sessions: int
    duration: float
    """Seconds from the first to the last event."""
    sliding_hits: I64
    """[ttl, size 0..NEED_CAP] reads present (key < ttl) with need <= size (cumulative)."""
    fixed_ttls: F64
    """The fixed-TTL grid (seconds, ``inf`` last); ``fixed_*`` arrays are indexed by it."""
    fixed_hits: I64
    sliding_keys: I64
    """Sorted keys (µs) of reads, for the exact minimal TTL; with their needs in :attr:`sliding_needs`."""
    sliding_needs: npt.NDArray[np.int32]
    mem_sliding: F64
    """[weight (1, N, mean size, N x mean size), ttl, history length N (capped)]: time
    integrals / duration of cached entries; :meth:`memory` turns them into
    (entries, messages, content bytes) for any cache size."""
    mem_fixed: F64
    peak_sliding: I64
    peak_fixed: I64
    end_sliding: F64
    """Like :attr:`mem_sliding` for what is cached at the trace's last instant."""
    end_fixed: F64
    need_counts: I64
    """Reads by need (0..NEED_CAP, the last bin is "more")."""
    cold_reads: int
    """Reads that miss at every TTL (no populating read before them in their session)."""
    access: dict[str, Any] = field(default_factory=dict)
    """Per-access arrays for the stack-distance pass (sid, n_after, mean size, need, is_read)."""


def _group_starts(s: npt.NDArray[np.int32]) -> BoolA:
    first = np.ones(s.size, bool)
    if s.size > 1:
        first[1:] = s[1:] != s[:-1]
    return first


def _seg_cumsum_excl(values: I64, first: BoolA) -> I64:
    """Per group (runs starting where ``first``), the sum of earlier values in the group."""
    cs = np.cumsum(values) - values
    start = np.maximum.accumulate(np.where(first, np.arange(values.size), 0))
    out: I64 = cs - cs[start]
    return out


def _seg_cummax(values: I64, seg_start: BoolA) -> I64:
    """Running max within segments; values in [0, 2**43)."""
    out = np.empty_like(values)
    seg = np.cumsum(seg_start) - 1
    n = values.size
    pos = 0
    per = 1 << 19  # segments per slab keeps seg << 43 inside int64
    while pos < n:
        base = seg[pos]
        end = int(np.searchsorted(seg, base + per, "left"))
        rel = (seg[pos:end] - base).astype(np.int64) << 43
        out[pos:end] = np.maximum.accumulate(rel | values[pos:end]) - rel
        pos = end
    return out


def _need(n_before: I64, limit: I64, before: I64) -> I64:
    """Messages the newest part of the window must hold for a read (0: empty answer)."""
    upper = np.where(before >= 0, np.minimum(n_before, before - 1), n_before)
    lower = np.maximum(1, upper - limit + 1)
    need: I64 = np.where(upper >= lower, n_before - lower + 1, 0)
    return need


def _by_n(index: I64, weight: F64 | None, n_after: I64, mu: F64, bins: int) -> F64:
    """Bincount ``weight`` (None: 1) x (1, N, mu, N x mu) at ``index`` (a flat [ttl, N] index)."""
    out = np.empty((4, bins))
    out[0] = np.bincount(index, weights=weight, minlength=bins)[:bins]
    for c in (1, 2, 3):  # one weight array at a time: big traces stay small in memory
        w = n_after * mu if c == 3 else (n_after if c == 1 else mu)
        out[c] = np.bincount(index, weights=w if weight is None else w * weight, minlength=bins)[:bins]
    return out


def memory_components(table: F64, size: int) -> F64:
    """(entries, messages, content bytes) per TTL for one cache size, from a [4, ttl, N] table."""
    size = min(int(size), NEED_CAP)
    one, wn, wmu, wp = table
    entries = one.sum(axis=1)
    msgs = wn[:, : size + 1].sum(axis=1) + size * one[:, size + 1 :].sum(axis=1)
    byts = wp[:, : size + 1].sum(axis=1) + size * wmu[:, size + 1 :].sum(axis=1)
    out: F64 = np.stack([entries, msgs, byts])
    return out


def _first_at_least(times: I64, lo: I64, hi: I64, target: I64) -> I64:
    """Vectorised bisection: first index in [lo, hi) with times >= target (hi if none)."""
    lo = lo.copy()
    hi = hi.copy()
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi) // 2
        midc = np.minimum(mid, times.size - 1)
        ge = times[midc] >= target
        hi = np.where(active & ge, mid, hi)
        lo = np.where(active & ~ge, mid + 1, lo)


def analyse(
    cols: TraceColumns,
    *,
    ttls: Sequence[float] = DEFAULT_TTLS,
    fixed_ttls: Sequence[float] | None = DEFAULT_FIXED_TTLS,
    stack_sample: float | None = 1.0,
) -> Analysis:
    """One pass over the trace's columns: every curve of the advisor, exact for the trace.

    ``fixed_ttls`` is the grid of fixed TTLs (None: the same as ``ttls``).  ``stack_sample``
    keeps per-access arrays for :func:`stack_distances` for a fraction of the sessions
    (SHARDS: chosen by a hash of the session); None keeps none.
    """
    n = cols.events
    grid = np.array([*sorted({float(x) for x in ttls if x > 0 and math.isfinite(x)}), math.inf])
    grid_us = np.array([min(round(x * US), NO_ANCHOR) for x in grid[:-1]] + [NO_ANCHOR], dtype=np.int64)
    K = grid.size
    fgrid = (
        grid
        if fixed_ttls is None
        else np.array([*sorted({float(x) for x in fixed_ttls if x > 0 and math.isfinite(x)}), math.inf])
    )
    fgrid_us = np.array([min(round(x * US), NO_ANCHOR) for x in fgrid[:-1]] + [NO_ANCHOR], dtype=np.int64)
    KF = fgrid.size
    NB = NEED_CAP + 2  # history-length bins: 0..NEED_CAP, then "more"
    if n == 0:
        raise ValueError("the trace has no events")

    order = np.argsort(cols.sid, kind="stable")
    s = cols.sid[order]
    t = cols.t[order]
    is_read = cols.is_read[order]
    nmsg = cols.nmsg[order].astype(np.int64)
    nbytes = cols.nbytes[order]
    first = _group_starts(s)
    last = np.ones(n, bool)
    last[:-1] = first[1:]
    t_end = int(cols.t[-1])
    duration = max((t_end - int(cols.t[0])) / US, 1e-9)

    gap = np.empty(n, np.int64)
    gap[0] = 0
    gap[1:] = t[1:] - t[:-1]
    gap = np.where(first, GAP_CAP, np.minimum(gap, GAP_CAP))
    n_before = _seg_cumsum_excl(nmsg, first)
    p_before = _seg_cumsum_excl(nbytes, first)
    n_after = n_before + nmsg
    p_after = p_before + nbytes
    limit = cols.limit[order].astype(np.int64)
    before = cols.before[order]
    need = np.where(is_read, _need(n_before, limit, before), 0)
    anchor = is_read & (before < 0) & (n_before > 0)
    total_messages, total_bytes = int(nmsg.sum()), int(nbytes.sum())
    del limit, before, nmsg, nbytes, p_before  # keep peak memory down on big traces

    # Sliding keys: the largest gap since the last populating read (NO_ANCHOR before any).
    anchors_before = _seg_cumsum_excl(anchor.astype(np.int64), first) > 0
    seg_start = first.copy()
    seg_start[1:] |= anchor[:-1] & ~first[1:]
    key = np.where(anchors_before, _seg_cummax(gap, seg_start), NO_ANCHOR)
    key_after = np.where(anchor, 0, key)
    follow = np.empty(n, np.int64)  # time until the session's next event (or the trace's end)
    follow[:-1] = gap[1:]
    follow[last] = t_end - t[last]
    del gap, seg_start

    reads = int(is_read.sum())
    r_key = key[is_read]
    r_need = need[is_read]
    need_c = np.minimum(r_need, NEED_CAP)
    need_counts = np.bincount(need_c, minlength=NEED_CAP + 1).astype(np.int64)

    # Reads by (first grid TTL at which present, need), cumulated along both axes.
    present_bin = np.searchsorted(grid_us, r_key, "right").astype(np.int64)
    h = np.bincount(present_bin * (NEED_CAP + 1) + need_c, minlength=(K + 1) * (NEED_CAP + 1))
    sliding_hits = np.cumsum(np.cumsum(h.reshape(K + 1, NEED_CAP + 1)[:K], axis=0), axis=1).astype(np.int64)
    del present_bin, h
    srt = np.argsort(r_key, kind="stable")
    sorted_keys, sorted_needs = r_key[srt], r_need[srt].astype(np.int32)
    cold_reads = int((r_key >= NO_ANCHOR).sum())
    del srt, r_key, r_need, need_c

    # Sliding memory: after event i the entry is there for min(follow, ttl) if key_after < ttl.
    mu = np.where(n_after > 0, p_after / np.maximum(n_after, 1), 0.0)
    kb = np.searchsorted(grid_us, key_after, "right")  # present from grid index kb on
    fb = np.searchsorted(grid_us, follow, "right")  # follow < ttl from grid index fb on
    # Split min(follow, ttl) into follow (k >= max(kb, fb)) and ttl (kb <= k < fb): the
    # follow part is added at k = hi, the ttl part is a difference array over [lo, hi).
    lo, hi = kb, np.maximum(kb, fb)
    nbin = np.minimum(n_after, NB - 1)
    hi_idx = hi * NB + nbin
    a_part = _by_n(hi_idx, follow / US, n_after, mu, (K + 1) * NB)
    b_part = _by_n(lo * NB + nbin, None, n_after, mu, (K + 1) * NB)
    b_part -= _by_n(hi_idx, None, n_after, mu, (K + 1) * NB)
    del hi_idx
    a_cum = np.cumsum(a_part.reshape(4, K + 1, NB)[:, :K], axis=1)
    b_cum = np.cumsum(b_part.reshape(4, K + 1, NB)[:, :K], axis=1)
    grid_fin = np.where(np.isfinite(grid), grid, 0.0)
    mem_sliding = (a_cum + grid_fin[None, :, None] * b_cum) / duration
    # The last instant: sessions whose entry is alive at t_end.
    alive_bin = np.searchsorted(grid_us, np.maximum(key_after[last], follow[last]), "right")
    lnb = nbin[last]
    end_sliding = _by_n(alive_bin * NB + lnb, None, n_after[last], mu[last], (K + 1) * NB)
    end_sliding = np.cumsum(end_sliding.reshape(4, K + 1, NB)[:, :K], axis=1)
    del kb, fb, lo, hi, a_part, b_part, p_after

    # Peak concurrently cached sessions (sliding): creations are populating misses,
    # expiries at t + ttl after an event whose entry then sits idle >= ttl.
    inv = np.empty(n, np.int64)
    inv[order] = np.arange(n)
    o_anchor = anchor[inv]
    ot = cols.t
    a_t, a_key = ot[o_anchor], key[inv][o_anchor]
    # Only an event followed by a gap larger than its key can ever be where an entry expires.
    o_kafter, o_follow = key_after[inv], follow[inv]
    can = np.flatnonzero(o_kafter < o_follow)
    c_t, c_kafter, c_follow = ot[can], o_kafter[can], o_follow[can]
    del o_kafter, o_follow, can
    peak_sliding = np.zeros(K, np.int64)
    for k in range(K):
        T = grid_us[k]
        created = a_t[a_key >= T]
        if created.size == 0:
            continue
        if k == K - 1:
            peak_sliding[k] = created.size
            continue
        expired = c_t[(c_kafter < T) & (c_follow >= T)] + T
        live = np.arange(1, created.size + 1) - np.searchsorted(expired, created, "right")
        peak_sliding[k] = int(live.max())
    del key, key_after, o_anchor, a_t, a_key, c_t, c_kafter, c_follow, n_before

    # Fixed TTL: per grid TTL, a greedy chain of populates per session.
    a_idx = np.flatnonzero(anchor)
    at = t[a_idx]
    a_first = np.ones(a_idx.size, bool)
    if a_idx.size > 1:
        a_first[1:] = s[a_idx[1:]] != s[a_idx[:-1]]
    a_grp_end = np.empty(a_idx.size, np.int64)  # one past the last anchor of the same session
    if a_idx.size:
        starts = np.flatnonzero(a_first)
        ends = np.append(starts[1:], a_idx.size)
        a_grp_end = np.repeat(ends, ends - starts)
    a_gap = np.full(a_idx.size, GAP_CAP, np.int64)
    if a_idx.size > 1:
        a_gap[1:] = np.where(a_first[1:], GAP_CAP, at[1:] - at[:-1])
    fixed_hits = np.zeros((KF, NEED_CAP + 1), np.int64)
    mem_fixed = np.zeros((4, KF, NB))
    end_fixed = np.zeros((4, KF, NB))
    peak_fixed = np.zeros(KF, np.int64)
    orig_pos = order  # sorted-domain position -> trace position (time order)
    marks = np.zeros(n + 1, np.int64)  # reused by every fixed TTL (no page faults per TTL)
    flags = np.zeros(n, bool)
    grp_first_idx = np.flatnonzero(first)
    # Monotone keys (session, time rank) over the session-sorted events: "first event of
    # this session at or after time x" is one searchsorted, for many queries at once.
    # The key is session x span + time when that fits in 63 bits (queries then come sorted,
    # cache-friendly), else session x (n + 1) + rank of the time among the trace's times.
    gid = np.cumsum(first, dtype=np.int64) - 1
    t0 = int(cols.t[0])
    span = t_end - t0 + 2
    direct = int(gid[-1] + 1) * span < (1 << 62)
    uniq_t = np.empty(0, np.int64) if direct else cols.t[np.concatenate([[True], np.diff(cols.t) != 0])]
    scale = span if direct else n + 1
    ev_key = gid * scale + ((t - t0) if direct else np.searchsorted(uniq_t, t))
    gid = gid.astype(np.int32)
    a_key, a_gid = ev_key[a_idx], gid[a_idx]

    def first_key(keys: I64, groups: I64, at_least: I64) -> I64:
        """Index of the first key of ``groups`` at or after time ``at_least`` (the group's end if none)."""
        where = np.minimum(at_least - t0, span - 1) if direct else np.searchsorted(uniq_t, at_least, "left")
        found: I64 = np.searchsorted(keys, groups.astype(np.int64) * scale + where, "left")
        return found

    grp_end = np.append(grp_first_idx[1:], n)  # one past each session's last event
    a_time = np.argsort(orig_pos[a_idx])  # anchors in time order
    at_in_time = at[a_time]
    for k in range(KF):
        T = fgrid_us[k]
        populate = np.zeros(a_idx.size, bool)
        if k == KF - 1:
            populate[a_first] = True
        else:
            forced = a_first | (a_gap >= T)
            populate[forced] = True
            # Runs between forced populates: follow the chain of "first anchor >= last + T".
            run_end = np.empty(a_idx.size, np.int64)
            fpos = np.flatnonzero(forced)
            nxt_forced = np.append(fpos[1:], a_idx.size)
            run_end[fpos] = np.minimum(nxt_forced, a_grp_end[fpos])
            cur = fpos
            cur_end = run_end[fpos]
            while cur.size:
                nxt = np.maximum(first_key(a_key, a_gid[cur], at[cur] + T), cur + 1)
                keep = nxt < cur_end
                cur, cur_end = nxt[keep], cur_end[keep]
                populate[cur] = True
        # Each populate covers its session's events in [populate, populate + T): disjoint
        # ranges of the session-sorted events, found by bisection, marked by a difference array.
        pp = a_idx[populate]
        pt = t[pp]
        stop = grp_end[gid[pp]] if k == KF - 1 else np.maximum(first_key(ev_key, gid[pp], pt + T), pp + 1)
        # The populate time (+1, so that 0 means "not covered") runs along its range.
        marks[pp] = pt + 1
        marks[stop] -= pt + 1
        np.cumsum(marks, out=marks)
        cov = np.flatnonzero(marks[:n])
        p_cov = marks[cov] - 1
        marks[:] = 0
        flags[pp] = True  # populates (sorted positions)
        hit_read = cov[is_read[cov] & ~flags[cov]]
        flags[pp] = False
        fixed_hits[k] = np.cumsum(np.bincount(need[hit_read].clip(max=NEED_CAP), minlength=NEED_CAP + 1))
        # Memory: after a covered event the entry lives until the next event or populate + T.
        left = p_cov + T - t[cov]
        life = np.minimum(follow[cov], left) / US
        mem_fixed[:, k] = _by_n(nbin[cov], life, n_after[cov], mu[cov], NB)
        alive = cov[last[cov] & (follow[cov] < left)]
        end_fixed[:, k] = _by_n(nbin[alive], None, n_after[alive], mu[alive], NB)
        del cov, p_cov, hit_read, left, life, alive
        # Populates in time order without sorting: flag their trace positions.
        created = at_in_time[populate[a_time]]
        if created.size:
            live = np.arange(1, created.size + 1) - np.searchsorted(created, created - T, "right")
            peak_fixed[k] = int(live.max()) if k < KF - 1 else created.size
    mem_fixed /= duration

    access: dict[str, Any] = {}
    if stack_sample is not None:
        # Accesses: every event of a session once it has been populated (LRU ignores TTLs).
        o_seen = (anchors_before | anchor)[inv]
        sid = cols.sid
        if stack_sample < 1.0:
            mixed = (sid.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)
            o_seen &= mixed < np.uint64(int(stack_sample * (1 << 24)))
        sel = np.flatnonzero(o_seen)
        access = {
            "sid": sid[sel],
            "n_after": n_after[inv][sel],
            "mu": mu[inv][sel].astype(np.float32),
            "need": np.where(cols.is_read[sel], need[inv][sel], -1).astype(np.int32),
            "rate": float(stack_sample),
            "reads": int(cols.is_read[np.isin(sid, np.unique(sid[sel]))].sum()) if stack_sample < 1.0 else reads,
        }

    return Analysis(
        ttls=grid,
        events=n,
        reads=reads,
        appends=n - reads,
        messages=total_messages,
        content_bytes=total_bytes,
        sessions=len(cols.sessions),
        duration=duration,
        sliding_hits=sliding_hits,
        fixed_ttls=fgrid,
        fixed_hits=fixed_hits,
        sliding_keys=sorted_keys,
        sliding_needs=sorted_needs,
        mem_sliding=mem_sliding,
        mem_fixed=mem_fixed,
        peak_sliding=peak_sliding,
        peak_fixed=peak_fixed,
        end_sliding=end_sliding,
        end_fixed=end_fixed,
        need_counts=need_counts,
        cold_reads=cold_reads,
        access=access,
    )


# ----------------------------------------------------------------------------- reference model


@dataclass
class Simulated:
    """What :func:`simulate` counts for one setting."""

    hits: int = 0
    misses: int = 0
    bypasses: int = 0
    peak_entries: int = 0
    entry_seconds: float = 0.0
    message_seconds: float = 0.0
    end_entries: int = 0
    end_messages: int = 0


def simulate(events: Sequence[TraceEvent], ttl: float, size: int, *, sliding: bool = True) -> Simulated:
    """Event-by-event model of the hybrid store for one (TTL, size): the oracle the tests
    check :func:`analyse` against.  Slow (pure Python); times in µs like :func:`analyse`."""
    ttl_us = min(round(ttl * US), NO_ANCHOR) if math.isfinite(ttl) else NO_ANCHOR
    out = Simulated()
    n_msgs: dict[str, int] = {}
    expires: dict[str, int] = {}  # session -> expiry time (µs) of its entry
    since: dict[str, int] = {}  # session -> time its current window state began
    live = 0
    t_end = round(events[-1].t * US) if events else 0
    t0 = round(events[0].t * US) if events else 0

    def expire_before(now: int) -> None:
        nonlocal live
        for sid in [k for k, e in expires.items() if e <= now]:
            close(sid, expires.pop(sid))
            live -= 1

    def close(sid: str, until: int) -> None:
        out.entry_seconds += (until - since[sid]) / US
        out.message_seconds += (until - since[sid]) / US * min(size, n_msgs.get(sid, 0))

    for ev in events:
        now = round(ev.t * US)
        expire_before(now)
        sid = ev.session
        n = n_msgs.get(sid, 0)
        present = sid in expires
        if ev.op == "append":
            if present:
                close(sid, now)
                since[sid] = now
                if sliding:
                    expires[sid] = now + ttl_us
            n_msgs[sid] = n + len(ev.sizes)
            continue
        upper = n if ev.before is None else min(n, ev.before - 1)
        lower = max(1, upper - ev.limit + 1)
        need = n - lower + 1 if upper >= lower else 0
        if present:
            if sliding:
                expires[sid] = now + ttl_us
            if need <= size:
                out.hits += 1
            else:
                out.bypasses += 1
            continue
        out.misses += 1
        if ev.before is None and n > 0:
            expires[sid] = now + ttl_us
            since[sid] = now
            live += 1
            out.peak_entries = max(out.peak_entries, live)
    expire_before(t_end)
    for sid in expires:
        close(sid, t_end)
        out.end_entries += 1
        out.end_messages += min(size, n_msgs[sid])
    dur = max((t_end - t0) / US, 1e-9)
    out.entry_seconds /= dur
    out.message_seconds /= dur
    return out


# ----------------------------------------------------------------------------- LRU stack distances


def stack_distances(items: npt.NDArray[np.integer[Any]], weights: F64) -> F64:
    """Byte-weighted LRU stack distance of every access (``inf`` for a first access).

    For access ``i`` of an item last accessed at ``p``: the total weight of the distinct
    items accessed in between, each at its weight as of its latest access before ``i``
    (an LRU cache of capacity C holds the item iff distance + its own weight <= C).
    Exact, O(n log² n), vectorised: ``sum(w_j : p < j, next_j > i) - sum(w_j : j >= i)``
    as a dominance sum over aligned power-of-two blocks of positions.
    """
    n = int(items.size)
    out = np.full(n, np.inf)
    if n == 0:
        return out
    order = np.argsort(items, kind="stable")
    same = items[order[1:]] == items[order[:-1]]
    nxt = np.full(n, n, np.int64)
    prv = np.full(n, -1, np.int64)
    nxt[order[:-1][same]] = order[1:][same]
    prv[order[1:][same]] = order[:-1][same]
    q = np.flatnonzero(prv >= 0)
    if q.size == 0:
        return out
    w = weights.astype(np.float64)
    suffix = np.concatenate([np.cumsum(w[::-1])[::-1], [0.0]])
    a = prv[q] + 1  # first position of the suffix [a, n) still to cover
    total = np.zeros(q.size)
    positions = np.arange(n, dtype=np.int64)
    level = 0
    while (1 << level) < 2 * n:
        has = ((a >> level) & 1).astype(bool) & (a < n)
        if has.any():
            keys = (positions >> level) * (n + 1) + nxt
            srt = np.argsort(keys, kind="stable")
            skeys = keys[srt]
            cw = np.concatenate([[0.0], np.cumsum(w[srt])])
            blk = a[has] >> level
            lo = np.searchsorted(skeys, blk * (n + 1) + q[has], "right")
            hi = np.searchsorted(skeys, blk * (n + 1) + n, "right")
            total[has] += cw[hi] - cw[lo]
            a = np.where(has, a + (1 << level), a)
        level += 1
    out[q] = total - suffix[q]
    return out


@dataclass
class LruCurve:
    """Hit ratio by Redis ``maxmemory`` under LRU (TTL ignored), for one cache size."""

    memory: F64
    hit_ratio: F64
    sample_rate: float
    reads: int
    footprint: float
    """Bytes needed to never evict (all entries ever populated at once)."""


def lru_curve(access: dict[str, Any], size: int, per_entry: float, per_message: float, points: int = 60) -> LruCurve:
    """The LRU miss-ratio curve (as a hit ratio) from :attr:`Analysis.access` for one cache size."""
    rate = float(access["rate"])
    reads = int(access["reads"])
    msgs = np.minimum(access["n_after"], size).astype(np.float64)
    w = per_entry + msgs * (per_message + access["mu"].astype(np.float64))
    dist = stack_distances(access["sid"], w) / rate
    need = access["need"]
    own = np.empty_like(w)  # the item's weight as of its previous access
    items = access["sid"]
    order = np.argsort(items, kind="stable")
    same = np.concatenate([[False], items[order[1:]] == items[order[:-1]]])
    own[order] = np.where(same, np.concatenate([[0.0], w[order[:-1]]]), np.inf)
    is_read = need >= 0
    ok = is_read & (need <= size)
    reach = np.sort((dist + own / rate)[ok & np.isfinite(dist)])
    uniq_last = np.zeros(items.size, bool)
    uniq_last[order[np.concatenate([items[order[1:]] != items[order[:-1]], [True]])]] = True
    footprint = float(w[uniq_last].sum() / rate)
    hi = max(footprint, 1.0)
    mem = np.unique(np.concatenate([np.geomspace(max(hi / 1e4, 1.0), hi, points), [hi]]))
    hits = np.searchsorted(reach, mem, "right")
    sampled_reads = max(1, int(is_read.sum()))
    return LruCurve(mem, hits / sampled_reads, rate, reads, footprint)


# ----------------------------------------------------------------------------- summary


@dataclass(frozen=True, slots=True)
class RedisModel:
    """Redis bytes of a cache entry: ``per_entry + messages x (per_message + mean content size)``."""

    per_entry: float
    per_message: float
    source: str
    """How the constants were obtained (measured now, cached from an earlier run, built in)."""


def knee(x: Sequence[float], y: Sequence[float], *, log_x: bool = True) -> int | None:
    """Index of the knee of an increasing, concave-ish curve (Kneedle: farthest above the chord)."""
    xs = np.log(np.asarray(x, float)) if log_x else np.asarray(x, float)
    ys = np.asarray(y, float)
    if xs.size < 3 or ys[-1] - ys[0] <= 0 or xs[-1] - xs[0] <= 0:
        return None
    d = (ys - ys[0]) / (ys[-1] - ys[0]) - (xs - xs[0]) / (xs[-1] - xs[0])
    i = int(np.argmax(d))
    return i if d[i] > 0 else None


def _ttl_json(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def min_sliding_ttl(a: Analysis, size: int, target: float) -> float | None:
    """Exact smallest sliding TTL (seconds) reaching ``target`` at ``size``; None if unreachable."""
    need = math.ceil(target * a.reads - 1e-9)
    if need <= 0:
        return 0.0
    keys = a.sliding_keys[(a.sliding_needs <= size) & (a.sliding_keys < NO_ANCHOR)]
    if keys.size < need:
        return None
    return float(keys[need - 1] + 1) / US


def _mode(
    a: Analysis, ttls: F64, hits: I64, mem: F64, peak: I64, end: F64, model: RedisModel, sizes: Sequence[int]
) -> dict[str, Any]:
    reads = max(a.reads, 1)
    out: dict[str, Any] = {
        "ttls": [_ttl_json(x) for x in ttls],
        "hit_ratio": [],
        "bypass_ratio": [],
        "memory_mean_bytes": [],
        "memory_peak_bytes": [],
        "memory_end_bytes": [],
        "pg_reads_per_s": [],
    }
    present = hits[:, NEED_CAP]
    for s in sizes:
        h = hits[:, min(s, NEED_CAP)]
        e, m, b = memory_components(mem, s)
        ee, em, eb = memory_components(end, s)
        mean_bytes = model.per_entry * e + model.per_message * m + b
        per_entry = np.where(e > 0, mean_bytes / np.maximum(e, 1e-12), 0.0)
        out["hit_ratio"].append((h / reads).tolist())
        out["bypass_ratio"].append(((present - h) / reads).tolist())
        out["memory_mean_bytes"].append(mean_bytes.tolist())
        out["memory_peak_bytes"].append((per_entry * peak).tolist())
        out["memory_end_bytes"].append((model.per_entry * ee + model.per_message * em + eb).tolist())
        out["pg_reads_per_s"].append(((a.reads - h) / a.duration).tolist())
    e0 = memory_components(mem, 1)[0]
    out["mean_sessions"] = e0.tolist()
    out["peak_sessions"] = peak.tolist()
    return out


def summarise(
    a: Analysis, model: RedisModel, *, target: float = 0.95, sizes: Sequence[int] = DEFAULT_SIZES
) -> dict[str, Any]:
    """The advisor's result (JSON-ready): curves, recommendation and knees."""
    reads = max(a.reads, 1)
    inf_row = a.sliding_hits[-1]
    ceiling = float(inf_row[NEED_CAP] / reads)
    # Cold misses (first reads of sessions) bound every setting: when the target is above
    # that ceiling, aim for the same fraction of the reads that any cache could answer.
    effective = target if target <= ceiling else target * ceiling
    need_hits = math.ceil(effective * a.reads - 1e-9)
    reach = np.flatnonzero(inf_row >= need_hits)
    min_size = max(1, int(reach[0])) if reach.size and a.reads else None
    max_need = int(np.flatnonzero(a.need_counts)[-1]) if a.need_counts.any() else 1
    shown = sorted({int(s) for s in sizes if s >= 1} | ({min_size} if min_size else set()))
    result: dict[str, Any] = {
        "trace": {
            "events": a.events,
            "reads": a.reads,
            "appends": a.appends,
            "sessions": a.sessions,
            "messages": a.messages,
            "content_bytes": a.content_bytes,
            "duration_s": a.duration,
            "mean_message_bytes": a.content_bytes / max(a.messages, 1),
            "cold_read_ratio": a.cold_reads / reads,
            "events_per_s": a.events / a.duration,
            "reads_per_s": a.reads / a.duration,
        },
        "redis_model": {
            "per_entry_bytes": model.per_entry,
            "per_message_bytes": model.per_message,
            "source": model.source,
        },
        "target": target,
        "ttls": [_ttl_json(x) for x in a.ttls],
        "sizes": shown,
        "sliding": _mode(a, a.ttls, a.sliding_hits, a.mem_sliding, a.peak_sliding, a.end_sliding, model, shown),
        "fixed": _mode(a, a.fixed_ttls, a.fixed_hits, a.mem_fixed, a.peak_fixed, a.end_fixed, model, shown),
    }
    by_size = list(range(1, min(max(max_need, max(shown)), NEED_CAP) + 1))
    result["by_size"] = {
        "sizes": by_size,
        "answerable_ratio": (inf_row[by_size] / reads).tolist(),
        "need_histogram": {str(i): int(c) for i, c in enumerate(a.need_counts) if c},
    }
    rec: dict[str, Any] = {
        "target_reachable": target <= ceiling,
        "ceiling": ceiling,
        "effective_target": effective,
        "smallest_size": min_size,
    }
    if min_size is not None:
        rec["smallest_sliding_ttl_s"] = min_sliding_ttl(a, min_size, effective)
        modes = (("sliding", a.ttls, a.sliding_hits, a.mem_sliding), ("fixed", a.fixed_ttls, a.fixed_hits, a.mem_fixed))
        for mode, grid, hits, mem in modes:
            best: tuple[float, float, int, int] | None = None
            for s in sorted({min_size, *[x for x in shown if x > min_size], 2 * min_size}):
                h = hits[:, min(s, NEED_CAP)]
                e, m, b = memory_components(mem, s)
                cost = model.per_entry * e + model.per_message * m + b
                for k in np.flatnonzero(h >= need_hits):
                    cand = (float(cost[k]), float(grid[k]), s, int(k))
                    if best is None or cand < best:
                        best = cand
            if best is not None:
                cost_b, ttl_b, size_b, k_b = best
                rec[mode] = {
                    "ttl_s": _ttl_json(ttl_b),
                    "size": size_b,
                    "hit_ratio": float(hits[k_b, min(size_b, NEED_CAP)] / reads),
                    "memory_mean_bytes": cost_b,
                    "peak_sessions": int((a.peak_sliding if mode == "sliding" else a.peak_fixed)[k_b]),
                    "pg_reads_per_s": float((a.reads - hits[k_b, min(size_b, NEED_CAP)]) / a.duration),
                }
                if mode == "sliding":
                    rec[mode]["exact_min_ttl_s"] = min_sliding_ttl(a, size_b, effective)
    result["recommendation"] = rec
    size_for_ttl = min_size or max(shown)
    knees: dict[str, Any] = {}
    for mode, grid, hits in (("sliding", a.ttls, a.sliding_hits), ("fixed", a.fixed_ttls, a.fixed_hits)):
        fin = [i for i, x in enumerate(grid) if math.isfinite(x)]
        ys = [float(hits[i, min(size_for_ttl, NEED_CAP)]) for i in fin]
        kk = knee([grid[i] for i in fin], ys)
        knees[f"{mode}_ttl_s"] = None if kk is None else float(grid[fin[kk]])
    ks = knee(by_size, [float(inf_row[s]) for s in by_size])
    knees["size"] = None if ks is None else by_size[ks]
    result["knees"] = knees
    result["size_for_ttl_curves"] = size_for_ttl
    return result
