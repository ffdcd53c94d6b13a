"""The match model: where did the current context last occur, and what byte followed it?

For each minimum length m (longest first), a hash of the last m bytes indexes the most recent
position with the same hash. `match_index` walks a byte stream in order and records, for every
position t, that previous position (`prev[k, t]`, -1 if none) before storing t itself, so the
pointer is causal: it never points at t or later. The same walk, continued byte by byte, serves
generation.

`match_lookup` (njit, also called from CUDA kernels) verifies the candidate by comparing bytes
backwards (a hash collision gives a short verified length and is rejected) and returns the
predicted byte and a length bucket.

The index build is a sequential scan (each step depends on the last), so it has no GPU kernel: it
runs on the host with njit in both modes (~10 ns a byte), and its output is copied to the device.
"""

import numba
import numpy as np

from .hashing import M2, M3, mix64, poly_hash

MATCH_CAP = 32  # verify at most this many bytes back
N_MATCH_BUCKETS = 8


@numba.njit(cache=True)
def match_index(data, start, end, minlens, bits, last_pos, prev, prev_start):
    """For t in [start, end): prev[k, t - prev_start] = last position with the same m_k-byte context.

    The hash of the m-byte window rolls (one multiply-add in, one out per byte), giving exactly
    `match_hash` (a Horner polynomial, so the two agree modulo 2^64) at a fraction of the cost.
    """
    mask = (np.int64(1) << bits) - 1
    for k in range(minlens.shape[0]):
        m = minlens[k]
        top = np.int64(1)  # M3 ** m
        for _ in range(m):
            top = top * M3
        base = np.int64(m) * M2 * top  # the seed's share of the polynomial
        h = np.int64(0)
        have = False
        for t in range(start, end):
            if t < m:
                prev[k, t - prev_start] = -1
                continue
            if not have:
                h = poly_hash(data, t, m)
                have = True
            else:
                # drop data[t-1-m], add data[t-1]
                h = (h - base - (np.int64(data[t - 1 - m]) + 1) * top) * M3 + (np.int64(data[t - 1]) + 1) * M3 + base
            slot = (mix64(h) >> 20) & mask
            prev[k, t - prev_start] = last_pos[k, slot]
            last_pos[k, slot] = t


@numba.njit(cache=True, inline="always")
def length_bucket(n):
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
    if n < MATCH_CAP:
        return 6
    return 7


@numba.njit(cache=True)
def match_lookup(data, t, prev, prev_t, minlens):
    """(predicted byte, length bucket 1..7) of the longest verified match for data[t], or (-1, 0)."""
    for k in range(minlens.shape[0]):
        p = np.int64(prev[k, prev_t])
        if p < 0:
            continue
        n = 0
        while n < MATCH_CAP and p - 1 - n >= 0 and data[t - 1 - n] == data[p - 1 - n]:
            n += 1
        if n >= minlens[k]:
            return np.int64(data[p]), length_bucket(n)
    return np.int64(-1), np.int64(0)
