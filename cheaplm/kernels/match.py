"""The match model: where did the current context last occur, and what byte followed it?

For each minimum length m (longest first), a hash of the last m bytes indexes the most recent
position with the same hash. `match_index` walks a byte stream in order and records, for every
position t, that previous position (`prev[k, t]`, -1 if none) before storing t itself, so the
pointer is causal: it never points at t or later. The same walk, continued byte by byte, serves
generation.

`match_lookup` (njit, also called from CUDA kernels) verifies the candidate by comparing bytes
backwards (a hash collision gives a short verified length and is rejected) and returns the
predicted byte, the verified length and how far back the match is; the mixer turns the last two
into its match state (kernels/mixer.py `match_state`).

The index build is a scan (each step depends on the last), so it has no GPU kernel: it runs on
the host with njit in both modes (~70 ns a byte on one thread) and its output is copied to the
device. `match_index_parallel` splits a long range over the threads and stitches the segments
together afterwards, with the same result as the one-thread scan.
"""

import numba
import numpy as np

from .hashing import M2, M3, match_hash, mix64, poly_hash

# The match model's settings as the kernels read them (one small int64 vector, built by
# cheaplm/match.py's MatchSpec.array): slots named here, numbered by their order
SPEC_SLOTS = ("cap", "inputs", "states", "n_rec", "rec0", "rec1", "rec2")
M_CAP, M_INPUTS, M_STATES, M_NREC, M_REC = (SPEC_SLOTS.index(n) for n in ("cap", "inputs", "states", "n_rec", "rec0"))
MAX_REC = len(SPEC_SLOTS) - M_REC
SPEC_LEN = len(SPEC_SLOTS)

# prev_base meaning "prev[:, b] holds the pointers of the batch's row b" (pointers gathered for
# scattered positions, cheaplm/pointers.py), instead of "prev[:, t - prev_base] holds position t's"
BY_ROW = -1


@numba.njit(cache=True, inline="always")
def pointer_column(b, t, prev_base):
    """The column of prev that holds the pointers of row b, position t."""
    if prev_base == BY_ROW:
        return np.int64(b)
    return t - prev_base


@numba.njit(cache=True, nogil=True)
def _walk(data, lo, hi, m, bits, table, prev_k, prev_start, valid_from, mark_first):
    """One minimum length, positions [lo, hi) in order: prev_k[t] = table[slot] before table[slot] = t.

    The hash of the m-byte window rolls (one multiply-add in, one out per byte), giving exactly
    `match_hash` (a Horner polynomial, so the two agree modulo 2^64) at a fraction of the cost.
    Table entries below valid_from count as empty. With mark_first, an empty slot is recorded as
    -(slot + 2) for a later pass; without, as -1.
    """
    mask = (np.int64(1) << bits) - 1
    top = np.int64(1)  # M3 ** m
    for _ in range(m):
        top = top * M3
    base = np.int64(m) * M2 * top  # the seed's share of the polynomial
    h = np.int64(0)
    have = False
    for t in range(lo, hi):
        if t < m:
            prev_k[t - prev_start] = -1
            continue
        if not have:
            h = poly_hash(data, t, m)
            have = True
        else:
            # drop data[t-1-m], add data[t-1]
            h = (h - base - (np.int64(data[t - 1 - m]) + 1) * top) * M3 + (np.int64(data[t - 1]) + 1) * M3 + base
        slot = (mix64(h) >> 20) & mask
        p = table[slot]
        if p < valid_from:
            p = -(slot + 2) if mark_first else -1
        prev_k[t - prev_start] = p
        table[slot] = t


@numba.njit(cache=True, nogil=True)
def match_index(data, start, end, minlens, bits, last_pos, prev, prev_start):
    """For t in [start, end): prev[k, t - prev_start] = last position with the same m_k-byte context."""
    for k in range(minlens.shape[0]):
        _walk(data, start, end, minlens[k], bits, last_pos[k], prev[k], prev_start, 0, False)


@numba.njit(cache=True)
def unindex(data, t, minlens, bits, last_pos, held):
    """Undo `match_index`'s walk of position t alone: each minimum length's slot for t (hashed from
    data[t - m:t], which must still hold what the walk read) gets back `held[k]`, what the walk found
    there (its prev[k, t]). Generation's sentence search (Stream.rollback), newest position first;
    host-only, as the index is."""
    for k in range(minlens.shape[0]):
        m = minlens[k]
        if t >= m:
            last_pos[k, match_hash(data, t, m, bits)] = held[k]


MIN_SEGMENT = 1 << 18  # below this many bytes per thread the plain walk is as fast


def index_workspace(minlens, bits: int, dtype=np.int32) -> np.ndarray:
    """Per-thread tables for `match_index_parallel`, reusable by later calls on later bytes of the
    same data; dtype that of the index (last_pos)."""
    return np.full((minlens.shape[0], max(2, numba.get_num_threads()), 1 << bits), -1, dtype=dtype)


def match_index_parallel(data, start, end, minlens, bits, last_pos, prev, prev_start, workspace=None) -> None:
    """`match_index` with the same result, on all threads (host arrays). A workspace from
    `index_workspace` saves clearing the per-thread tables when it is reused (calls on later bytes)."""
    n_seg = min(numba.get_num_threads(), (end - start) // MIN_SEGMENT)
    if workspace is not None:
        n_seg = min(n_seg, workspace.shape[1])
    if n_seg <= 1:
        match_index(data, start, end, minlens, bits, last_pos, prev, prev_start)
        return
    if workspace is None:
        workspace = np.full((minlens.shape[0], n_seg, 1 << bits), -1, dtype=last_pos.dtype)
    _index_segments(data, start, end, minlens, bits, last_pos, prev, prev_start, n_seg, workspace)


@numba.njit(cache=True, parallel=True, nogil=True)
def _index_segments(data, start, end, minlens, bits, last_pos, prev, prev_start, n_seg, local):
    """Each of n_seg segments walks with its own table (local[k, s]; entries older than the segment
    count as empty). Then, segment by segment in order, the positions whose slot their segment had
    not seen look it up in last_pos, and the segment's table is merged into last_pos. Every pass but
    the walks is parallel over positions or slots, and the merges stream through memory (scanning
    all segments' tables slot by slot instead cost a TLB miss per read)."""
    bounds = np.empty(n_seg + 1, dtype=np.int64)
    for s in range(n_seg + 1):
        bounds[s] = start + (end - start) * s // n_seg
    for k in range(minlens.shape[0]):
        m = minlens[k]
        for s in numba.prange(n_seg):
            _walk(data, bounds[s], bounds[s + 1], m, bits, local[k, s], prev[k], prev_start, bounds[s], True)
        for s in range(n_seg):
            # two functions, not two prange loops here: numba would fuse equal-sized prange loops and
            # run the merge before the lookups it must follow
            _resolve(prev[k], prev_start, bounds[s], bounds[s + 1], last_pos[k], n_seg)
            _merge(last_pos[k], local[k, s], bounds[s], n_seg)


@numba.njit(cache=True, parallel=True, nogil=True)
def _resolve(prev_k, prev_start, lo, hi, last_k, n_chunks):
    n = hi - lo
    for g in numba.prange(n_chunks):
        for t in range(lo + n * g // n_chunks, lo + n * (g + 1) // n_chunks):
            v = prev_k[t - prev_start]
            if v <= -2:
                prev_k[t - prev_start] = last_k[-v - 2]


@numba.njit(cache=True, parallel=True, nogil=True)
def _merge(last_k, local_ks, valid_from, n_chunks):
    size = last_k.shape[0]
    for g in numba.prange(n_chunks):
        for slot in range(size * g // n_chunks, size * (g + 1) // n_chunks):
            p = local_ks[slot]
            if p >= valid_from:
                last_k[slot] = p


@numba.njit(cache=True, inline="always")
def verified_length(data, t, p, cap):
    """How many bytes before p equal the bytes before t (at most cap; a hash collision verifies few)."""
    n = 0
    while n < cap and p - 1 - n >= 0 and data[t - 1 - n] == data[p - 1 - n]:
        n += 1
    return n


@numba.njit(cache=True)
def match_lookup(data, t, prev, prev_t, minlens, cap):
    """(predicted byte, verified length (at most cap), distance t - p back to the match) of the
    longest verified match for data[t], or (-1, 0, 0)."""
    for k in range(minlens.shape[0]):
        p = np.int64(prev[k, prev_t])
        if p < 0:
            continue
        n = verified_length(data, t, p, cap)
        if n >= minlens[k]:
            return np.int64(data[p]), np.int64(n), t - p
    return np.int64(-1), np.int64(0), np.int64(0)


@numba.njit(cache=True, inline="always")
def length_bucket(n):
    """Bucket of a verified match length n >= 1: 1 below 8, 2 below 12, 3 below 16, 4 below 20,
    5 below 24, 6 below 32, then 7 + (n - 32) // 16."""
    if n < 8:
        return 1
    if n < 12:
        return 2
    if n < 16:
        return 3
    if n < 20:
        return 4
    if n < 24:
        return 5
    if n < 32:
        return 6
    return 7 + (n - 32) // 16


def match_states(cap: int, n_rec: int) -> int:
    """Match states (0 = none) for a verification cap and a number of recency thresholds."""
    return 1 + length_bucket(cap) * (n_rec + 1)


@numba.njit(cache=True, inline="always")
def match_state(n, dist, spec):
    """The state of a match of verified length n found dist bytes back (n = 0: no match):
    L(n) + L(cap) * r, r = how many recency thresholds dist reaches (0 = nearer than all)."""
    if n == 0:
        return np.int64(0)
    r = 0
    for i in range(spec[M_NREC]):
        if dist >= spec[M_REC + i]:
            r += 1
    return length_bucket(n) + length_bucket(spec[M_CAP]) * r


@numba.njit(cache=True)
def match_inputs(data, t, prev, prev_t, minlens, spec, cand):
    """cand[k] = (predicted byte, state) of match input k for position t ((-1, 0): none): one per
    minimum length, each verified on its own, or (spec inputs = 1) the longest that verifies."""
    cap = spec[M_CAP]
    if spec[M_INPUTS] == 1:
        e, n, dist = match_lookup(data, t, prev, prev_t, minlens, cap)
        cand[0, 0] = e
        cand[0, 1] = match_state(n, dist, spec)
        return
    for k in range(spec[M_INPUTS]):
        cand[k, 0] = -1
        cand[k, 1] = 0
        p = np.int64(prev[k, prev_t])
        if p < 0:
            continue
        n = verified_length(data, t, p, cap)
        if n >= minlens[k]:
            cand[k, 0] = data[p]
            cand[k, 1] = match_state(n, t - p, spec)
