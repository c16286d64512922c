"""The TTL and cache-size curves: exact one-pass computations over whole sessions.

:func:`analyse` takes every event of a set of whole sessions (a small trace, or one session
partition of a big one) and derives, for every read, the quantities that decide its fate
in the hybrid store for *every* setting at once, and integrates them.
:func:`run_pass` streams a trace of any size through it in bounded memory: chunks from
:mod:`sessionbench.bench.advisor.parse` are optionally session-sampled (SHARDS: by a hash of the
session), split into session partitions (kept in memory, or spilled to a temporary
directory when they would not fit), analysed one partition at a time and merged
(:func:`merge`: counts and time integrals add up; peaks come from entries alive at 4,096
common instants when there is more than one partition).

The model is the store's real semantics (``sessionbench/store/backends/hybrid``):

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
content bytes) per (TTL, cache_size) and turned into bytes with a
:class:`sessionbench.bench.advisor.summary.RedisModel` measured on the real Redis.  Cached content bytes
of a window are ``min(cache_size, N)`` times the session's mean message size (exact when
the window holds the whole history).  ``maxmemory`` is :mod:`sessionbench.bench.advisor.lru`'s.
"""

from __future__ import annotations

import copy
import math
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sessionbench.bench.advisor.parse import Chunk, estimate_events, iter_chunks, sample_threshold

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
#: Events of one session partition analysed at once (about 260 bytes each at the peak).
PART_EVENTS = 2_000_000
#: Common instants at which partitions count their live entries (for the merged peak).
INSTANTS = 4096
#: Session-hash buckets a sampled pass keeps apart for its confidence band.
BUCKETS = 16


# ----------------------------------------------------------------------------- analysis


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
    live_sliding: I64 = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    """[ttl, instant] entries alive at each of the pass's common instants (:func:`instants`):
    what the peak of several session partitions is taken from."""
    live_fixed: I64 = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    parts: int = 1
    """Session partitions merged into this analysis (1: peaks are exact)."""


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
    cols: Chunk,
    *,
    ttls: Sequence[float] = DEFAULT_TTLS,
    fixed_ttls: Sequence[float] | None = DEFAULT_FIXED_TTLS,
    span: tuple[int, int] | None = None,
    at: I64 | None = None,
) -> Analysis:
    """Every curve of the advisor over the events of whole sessions, exact for them.

    ``cols`` holds every event of its sessions (a whole trace, or one session partition
    of it), in time order.  ``span`` is the trace's first and last time (µs; default:
    these events'), which durations and "the end" refer to.  ``at`` are the instants
    (µs) at which entries alive are counted for :func:`merge`.  ``fixed_ttls`` is the
    grid of fixed TTLs (None: the same as ``ttls``).
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

    sessions, inverse = np.unique(cols.session, return_inverse=True)
    sid_all: npt.NDArray[np.int32] = inverse.astype(np.int32)
    is_read_all = cols.is_read
    order = np.argsort(sid_all, kind="stable")
    s = sid_all[order]
    t = cols.t[order]
    is_read = is_read_all[order]
    nmsg = cols.nmsg[order].astype(np.int64)
    nbytes = cols.nbytes[order]
    first = _group_starts(s)
    last = np.ones(n, bool)
    last[:-1] = first[1:]
    t_first, t_end = span if span is not None else (int(cols.t[0]), int(cols.t[-1]))
    duration = max((t_end - t_first) / US, 1e-9)
    instants = np.empty(0, np.int64) if at is None else at

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
    del sid_all
    a_t, a_key = ot[o_anchor], key[inv][o_anchor]
    # Only an event followed by a gap larger than its key can ever be where an entry expires.
    o_kafter, o_follow = key_after[inv], follow[inv]
    can = np.flatnonzero(o_kafter < o_follow)
    c_t, c_kafter, c_follow = ot[can], o_kafter[can], o_follow[can]
    del o_kafter, o_follow, can
    peak_sliding = np.zeros(K, np.int64)
    live_sliding = np.zeros((K, instants.size), np.int64)
    for k in range(K):
        T = grid_us[k]
        created = a_t[a_key >= T]
        if created.size == 0:
            continue
        if k == K - 1:
            peak_sliding[k] = created.size
            live_sliding[k] = np.searchsorted(created, instants, "right")
            continue
        expired = c_t[(c_kafter < T) & (c_follow >= T)] + T
        live = np.arange(1, created.size + 1) - np.searchsorted(expired, created, "right")
        peak_sliding[k] = int(live.max())
        live_sliding[k] = np.searchsorted(created, instants, "right") - np.searchsorted(expired, instants, "right")
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
    live_fixed = np.zeros((KF, instants.size), np.int64)
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
    width = t_end - t0 + 2
    direct = int(gid[-1] + 1) * width < (1 << 62)
    uniq_t = np.empty(0, np.int64) if direct else cols.t[np.concatenate([[True], np.diff(cols.t) != 0])]
    scale = width if direct else n + 1
    ev_key = gid * scale + ((t - t0) if direct else np.searchsorted(uniq_t, t))
    gid = gid.astype(np.int32)
    a_key, a_gid = ev_key[a_idx], gid[a_idx]

    def first_key(keys: I64, groups: I64, at_least: I64) -> I64:
        """Index of the first key of ``groups`` at or after time ``at_least`` (the group's end if none)."""
        where = np.minimum(at_least - t0, width - 1) if direct else np.searchsorted(uniq_t, at_least, "left")
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
            gone = np.searchsorted(created, instants - T, "right") if k < KF - 1 else 0
            live_fixed[k] = np.searchsorted(created, instants, "right") - gone
    mem_fixed /= duration

    return Analysis(
        ttls=grid,
        events=n,
        reads=reads,
        appends=n - reads,
        messages=total_messages,
        content_bytes=total_bytes,
        sessions=int(sessions.size),
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
        live_sliding=live_sliding,
        live_fixed=live_fixed,
    )


def instants(t_first: int, t_end: int, count: int = INSTANTS) -> I64:
    """The common instants (µs) at which :func:`analyse` counts live entries."""
    out: I64 = np.unique(np.linspace(t_first, t_end, count).astype(np.int64))
    return out


_SUMMED = ("events", "reads", "appends", "messages", "content_bytes", "sessions", "cold_reads")
_ARRAYS = ("sliding_hits", "fixed_hits", "mem_sliding", "mem_fixed", "end_sliding", "end_fixed", "need_counts",
           "live_sliding", "live_fixed")  # fmt: skip


def _add(acc: Analysis | None, a: Analysis) -> Analysis:
    """``acc`` plus ``a`` (disjoint sessions, same span and grids), in place; keys are left to :func:`merge`."""
    if acc is None:
        return a
    for name in _SUMMED:
        setattr(acc, name, int(getattr(acc, name)) + int(getattr(a, name)))
    for name in _ARRAYS:
        np.add(getattr(acc, name), getattr(a, name), out=getattr(acc, name))
    acc.parts += a.parts
    return acc


def _finish(acc: Analysis, keys: list[I64], needs: list[npt.NDArray[np.int32]]) -> Analysis:
    if len(keys) == 1:
        acc.sliding_keys, acc.sliding_needs = keys[0], needs[0]
    elif keys:
        k, n = np.concatenate(keys), np.concatenate(needs)
        srt = np.argsort(k, kind="stable")
        acc.sliding_keys, acc.sliding_needs = k[srt], n[srt]
    if acc.parts > 1:
        acc.peak_sliding = acc.live_sliding.max(axis=1) if acc.live_sliding.size else acc.peak_sliding * 0
        acc.peak_fixed = acc.live_fixed.max(axis=1) if acc.live_fixed.size else acc.peak_fixed * 0
    return acc


def merge(parts: Sequence[Analysis]) -> Analysis:
    """One analysis from analyses of disjoint session sets over the same span and grids.

    Counts, time integrals and entries alive add up; the sliding keys are merged; the
    peak is exact for one part, else the largest total of entries alive at the common instants.
    ``parts`` are consumed (the first is added to in place).
    """
    keys = [p.sliding_keys for p in parts]
    needs = [p.sliding_needs for p in parts]
    acc: Analysis | None = None
    for p in parts:
        acc = _add(acc, p)
    assert acc is not None
    return _finish(acc, keys, needs)


def min_sliding_ttl(a: Analysis, size: int, target: float) -> float | None:
    """Exact smallest sliding TTL (seconds) reaching ``target`` at ``size``; None if unreachable."""
    need = math.ceil(target * a.reads - 1e-9)
    if need <= 0:
        return 0.0
    keys = a.sliding_keys[(a.sliding_needs <= size) & (a.sliding_keys < NO_ANCHOR)]
    if keys.size < need:
        return None
    return float(keys[need - 1] + 1) / US


# ----------------------------------------------------------------------------- the streaming pass


@dataclass
class Pass:
    """What :func:`run_pass` read and computed."""

    analysis: Analysis
    """The merged analysis of the sampled sessions (raw counts: scale by 1 / ``rate``)."""
    buckets: list[Analysis]
    """Per session-hash bucket (sampled passes only): what the confidence band is taken from."""
    rate: float
    """Fraction of sessions analysed (SHARDS threshold on the session hash); 1: exact."""
    events: int
    """Events in the whole trace (every one was read)."""
    reads: int
    sessions_sampled: int
    span: tuple[int, int]
    lru_sample: Chunk
    """Every event of the sessions sampled for the maxmemory simulations (time order)."""
    lru_rate: float
    seconds: dict[str, float] = field(default_factory=dict)
    spilled: bool = False


class _Partitions:
    """Session partitions of a pass: in memory while they fit, else spilled to files."""

    def __init__(self, count: int, cap: int) -> None:
        self.count = count
        self.cap = cap
        self.held: list[list[Chunk]] = [[] for _ in range(count)]
        self.sizes = [0] * count
        self.dir: Path | None = None
        self.files: list[list[Path]] = [[] for _ in range(count)]

    def add(self, chunk: Chunk) -> None:
        if not chunk.events:
            return
        part = (chunk.session & np.uint64(self.count - 1)).astype(np.int64)
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(self.count + 1))
        for p in range(self.count):
            idx = order[bounds[p] : bounds[p + 1]]
            if idx.size:
                piece = chunk.select(np.sort(idx))
                self.sizes[p] += piece.events
                if self.dir is None:
                    self.held[p].append(piece)
                else:
                    self._spill(p, piece)
        if self.dir is None and sum(self.sizes) > self.cap:
            self.dir = Path(tempfile.mkdtemp(prefix="sessionbench-advise-"))
            for p in range(self.count):
                for piece in self.held[p]:
                    self._spill(p, piece)
                self.held[p] = []

    def _spill(self, p: int, piece: Chunk) -> None:
        assert self.dir is not None
        path = self.dir / f"part{p:04d}-{len(self.files[p]):05d}.npy"
        np.save(path, piece.to_records(), allow_pickle=False)
        self.files[p].append(path)

    def take(self, p: int) -> Chunk:
        if self.dir is None:
            pieces, self.held[p] = self.held[p], []
            return Chunk.concat(pieces)
        return Chunk.concat([Chunk.from_records(np.load(f, allow_pickle=False)) for f in self.files[p]])

    def close(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


def _pow2(x: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, x))))


def run_pass(
    path: str | Path | Iterable[Chunk],
    *,
    ttls: Sequence[float] = DEFAULT_TTLS,
    fixed_ttls: Sequence[float] | None = DEFAULT_FIXED_TTLS,
    sample_rate: float = 1.0,
    lru_events: int = 200_000,
    part_events: int = PART_EVENTS,
    expected_events: int | None = None,
) -> Pass:
    """Stream a trace through :func:`analyse` in bounded memory (see the module docstring).

    ``sample_rate`` < 1 analyses the sessions whose hash is below that fraction (every
    curve; :attr:`Pass.buckets` then hold 16 disjoint sub-samples for the band).  The
    maxmemory simulations get a nested sample of about ``lru_events`` events.
    """
    if not 0 < sample_rate <= 1:
        raise ValueError("sample_rate must be in (0, 1]")
    clock = time.perf_counter()
    seconds = {"read": 0.0, "analyse": 0.0}
    if isinstance(path, (str, Path)):
        estimate = expected_events or estimate_events(path)
        chunks: Iterable[Chunk] = iter_chunks(path)
    else:
        estimate = expected_events or part_events
        chunks = path
    sampled = sample_rate < 1
    count = max(_pow2(math.ceil(estimate * sample_rate / part_events)), BUCKETS if sampled else 1)
    parts = _Partitions(count, part_events)
    cut = sample_threshold(sample_rate)
    lru_rate = min(sample_rate, max(lru_events, 1) / max(estimate, 1))
    lru_cut = sample_threshold(lru_rate)
    lru: list[Chunk] = []
    lru_size = 0
    events = reads = 0
    t_first: int | None = None
    t_end = 0
    try:
        for chunk in chunks:
            if not chunk.events:
                continue
            events += chunk.events
            reads += int(np.count_nonzero(chunk.nmsg == 0))
            t_first = int(chunk.t[0]) if t_first is None else t_first
            t_end = int(chunk.t[-1])
            parts.add(chunk if not sampled else chunk.select(chunk.session < cut))
            piece = chunk.select(chunk.session < lru_cut)
            lru.append(piece)
            lru_size += piece.events
            if lru_size > 2 * lru_events:  # the estimate was low: halve the nested sample
                lru_rate /= 2
                lru_cut = sample_threshold(lru_rate)
                lru = [c.select(c.session < lru_cut) for c in lru]
                lru_size = sum(c.events for c in lru)
        if t_first is None:
            raise ValueError("the trace has no events")
        seconds["read"] = time.perf_counter() - clock
        clock = time.perf_counter()
        span = (t_first, t_end)
        at = instants(t_first, t_end)
        total: Analysis | None = None
        keys: list[I64] = []
        needs: list[npt.NDArray[np.int32]] = []
        per_bucket: list[Analysis | None] = [None] * BUCKETS
        for p in range(count):
            cols = parts.take(p)
            if not cols.events:
                continue
            a = analyse(cols, ttls=ttls, fixed_ttls=fixed_ttls, span=span, at=at)
            del cols
            warm = a.sliding_keys < NO_ANCHOR  # cold reads never hit: their keys are not kept
            keys.append(a.sliding_keys[warm])
            needs.append(a.sliding_needs[warm])
            a.sliding_keys, a.sliding_needs = a.sliding_keys[:0], a.sliding_needs[:0]
            if sampled:
                b = copy.deepcopy(a)
                per_bucket[p % BUCKETS] = _add(per_bucket[p % BUCKETS], b)
            total = _add(total, a)
        seconds["analyse"] = time.perf_counter() - clock
    finally:
        parts.close()
    if total is None:
        raise ValueError("no session of the trace is in the sample; raise --sample-rate")
    buckets = [_finish(b, [], []) for b in per_bucket if b is not None]
    merged = _finish(total, keys, needs)
    return Pass(merged, buckets, sample_rate, events, reads, merged.sessions, span, Chunk.concat(lru), lru_rate,
                seconds, parts.dir is not None)  # fmt: skip
