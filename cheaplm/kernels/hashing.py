"""Context hashes: which memory row a byte position reads, for every context of the model.

A context is (kind, param):
- ORDER k: the last k bytes (k = 0 is the empty context);
- WORD n: the current partial word (letters lowercased; UTF-8 bytes >= 128 count as letters)
  and the n-1 words before it, as PAQ's word model does;
- SPARSE mask: the bytes at the offsets set in `mask` (bit i = byte t-1-i), skipping the others;
- SKIP n: the current partial word and the word n words before it, the words between left out
  (PAQ's skip-word contexts: "the ... of" predicts alike whatever stands between).

All functions are `numba.njit` and are called both from CPU loops and from CUDA kernels (numba
compiles an njit function for the GPU when a kernel calls it), so the hash a GPU kernel computes is
bit-for-bit the one the CPU twin computes. Arithmetic is int64 with wrap-around multiplication.
"""

import numba
import numpy as np

ORDER = 0
WORD = 1
SPARSE = 2
SKIP = 3

# odd 63-bit multipliers; values only need to mix well
M1 = 0x2545F4914F6CDD1D
M2 = 0x5851F42D4C957F2D
M3 = 0x14057B7EF767814F


@numba.njit(cache=True, inline="always")
def mix64(h):
    h = h ^ ((h >> 31) & 0x1FFFFFFFF)
    h = h * M1
    h = h ^ ((h >> 29) & 0x7FFFFFFFF)
    return h


@numba.njit(cache=True, inline="always")
def is_letter(b):
    return (b >= 97 and b <= 122) or (b >= 65 and b <= 90) or b >= 128


@numba.njit(cache=True, inline="always")
def lower(b):
    if b >= 65 and b <= 90:
        return b + 32
    return b


@numba.njit(cache=True, inline="always")
def word_back(data, s, h, take):
    """Steps back over the word ending at data[s] (at most 24 letters), folding its lowercased
    letters into h when `take`; returns (h, the position before the word)."""
    n = 0
    while s >= 0 and n < 24 and is_letter(data[s]):
        if take:
            h = (h + np.int64(lower(data[s])) + 1) * M3
        s -= 1
        n += 1
    return h, s


@numba.njit(cache=True, inline="always")
def gap_back(data, s):
    """Steps back over at most 8 non-letters (the gap between two words)."""
    skipped = 0
    while s >= 0 and skipped < 8 and not is_letter(data[s]):
        s -= 1
        skipped += 1
    return s


@numba.njit(cache=True)
def context_hash(data, t, kind, param, ident):
    """Hash of context (kind, param) for predicting data[t] from data[:t]; `ident` separates contexts."""
    h = (ident + 1) * M2
    if kind == ORDER:
        lo = t - param
        if lo < 0:
            lo = 0
        for s in range(t - 1, lo - 1, -1):
            h = (h + np.int64(data[s]) + 1) * M3
        # positions near the start see fewer bytes than k: mark them apart
        h = h + (t - lo) * M1
    elif kind == WORD:
        s = t - 1
        words = 0
        # the partial word (possibly empty); a non-letter last byte is part of the context
        if s >= 0 and not is_letter(data[s]):
            h = (h + np.int64(data[s]) + 300) * M3
        while words < param and s >= 0:
            h, s = word_back(data, s, h, True)
            h = (h + 777) * M1
            words += 1
            s = gap_back(data, s)
    elif kind == SKIP:
        s = t - 1
        if s >= 0 and not is_letter(data[s]):
            h = (h + np.int64(data[s]) + 300) * M3
        h, s = word_back(data, s, h, True)
        h = (h + 777) * M1
        for w in range(param):
            s = gap_back(data, s)
            h, s = word_back(data, s, h, w == param - 1)
        h = (h + 555) * M1
    else:  # SPARSE
        for i in range(16):
            if (param >> i) & 1:
                s = t - 1 - i
                b = np.int64(data[s]) if s >= 0 else 256
                h = (h + b + 1) * M3
            else:
                h = h + 11
    return mix64(h)


@numba.njit(cache=True, inline="always")
def slot_of(h, hi_nibble_plus1, offset, mask):
    """Row of the table for the high nibble (hi_nibble_plus1 = 0) or for a low nibble after it."""
    g = mix64(h + hi_nibble_plus1 * M2)
    return offset + ((g >> 16) & mask)


@numba.njit(cache=True)
def poly_hash(data, t, minlen):
    """Horner polynomial of data[t-minlen:t] seeded with minlen (match_index rolls the same value)."""
    h = np.int64(minlen) * M2
    for s in range(t - minlen, t):
        h = (h + np.int64(data[s]) + 1) * M3
    return h


@numba.njit(cache=True)
def match_hash(data, t, minlen, bits):
    """Slot of data[t-minlen:t] in the match model's position index (`bits` bits)."""
    return (mix64(poly_hash(data, t, minlen)) >> 20) & ((np.int64(1) << bits) - 1)
