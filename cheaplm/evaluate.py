"""Bits per byte of a model on a byte stream that it has not counted.

The stream is scored after the model's history (the counted training bytes): count tables as
trained, no leave-one-out, and the match model indexing history plus the part of the stream
already scored (as any language model conditions on the text before the byte it predicts).
With `adaptive=True` the stream's bytes are also added to the count tables once scored, chunk by
chunk, as a compressor would (reported separately: it changes the model's memory at test time);
afterwards they are counted back out, which restores the tables exactly without a copy of them.
"""

from __future__ import annotations

import time

import numpy as np

from . import corpus
from .docwords import doc_inputs
from .reader import mix_loss


ADAPTIVE_MIN_BATCH = 1024  # bytes per adaptive batch at least (each batch is a kernel launch)


def stream_bpb(model, history: np.ndarray, stream: np.ndarray, batch: int = 1 << 16,
               adaptive: bool = False, progress=None) -> dict:
    """Model.score: {"bpb", "bytes", "seconds", "bytes_per_s", "adaptive", "reader_seconds",
    "memory_seconds"} of `stream` after `history`; seconds is the whole evaluation (match index,
    the reader's pass, the memory's)."""
    t_start = time.perf_counter()
    h = len(history)
    n = len(stream)
    if n == 0:
        raise ValueError("empty stream")
    # history then stream, one array; a mapped history (corpus.py) is mapped again with room for the
    # stream, so scoring reads only the history's pages the model looks at
    if h:
        data = corpus.with_room(history, n)
        data[h:] = stream
    else:
        data = np.ascontiguousarray(stream)
    model.match.widen(h + n)  # int64 positions past 1.75 GiB
    prev = model.match.pointers(n)
    model.match.index(data, h, h + n, prev, h, last_pos=model.match.last_pos.copy())
    counted = 0  # stream bytes added to the tables so far (adaptive)
    d_data, d_prev = model.dev.put(data), model.dev.put(prev)
    batch = min(batch, n)
    if adaptive:
        # counts are added after each batch: a split of one batch would never use them (issue 11:
        # --adaptive did nothing under 64 KiB), so a short split is scored in sixteen or more pieces
        batch = min(batch, max(ADAPTIVE_MIN_BATCH, -(-n // 16)))
    caches = model.caches(batch)
    # the reader reads the stream once, in runs of consecutive bytes (its scan state needs the past)
    t_reader = time.perf_counter()
    reader_p = None if model.reader is None else model.reader.range_probs(d_data, [(h, h + n)],
                                                                          model.match.args(d_prev, h))
    # the document words (docwords.py), read on the host once, when the mix reads them
    doc = None
    if model.reader is not None and model.reader.reads_doc:
        doc = doc_inputs(data, [(h, h + n)])
    total = 0.0
    t0 = time.perf_counter()
    try:
        for start in range(0, n, batch):
            end = min(start + batch, n)
            pos = np.arange(h + start, h + end, dtype=np.int64)
            if len(pos) < batch:
                caches = model.caches(len(pos))
            pm = model.memory_probs(d_data, model.dev.put(pos), d_prev, h, caches)
            if model.reader is not None:
                # the memory's bit probabilities mixed with the reader's (reader.py)
                pr = reader_p[start:end]
                mixd = None if doc is None else model.reader.doc_mix(doc[0][start:end], doc[1][start:end])
                loss = mix_loss(pm, pr, data[pos], model.reader.mix, np.zeros((0, 3), np.float32), mixd)
            else:
                loss = model.host(caches.loss)
            total += float(np.sum(loss, dtype=np.float64))
            if adaptive:
                model.count(d_data, h + start, h + end)
                counted = end
            if progress:
                progress(end, n)
    finally:
        model.count(d_data, h, h + counted, delta=-1)
    t_end = time.perf_counter()
    dt = t_end - t_start
    return {"bpb": total / n, "bytes": n, "seconds": dt, "bytes_per_s": n / max(dt, 1e-9), "adaptive": adaptive,
            "reader_seconds": t0 - t_reader, "memory_seconds": t_end - t0}

