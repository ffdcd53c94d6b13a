"""How the reader is trained: its learning rates, passes, order of positions and share of the budget.

These are the training run's (TrainConfig's "reader" object, `--config`'s {"train": {"reader":
{...}}}), not the reader's: reader.ReaderConfig says what the reader is, this says how a run
trains it. Defaults differ by device (and, on a GPU, by the minutes budget: a wider reader takes a
lower rate) and are filled in by `for_device`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .options import check_keys

# the keys a reader's options held before they moved here (runs saved before, and --reader flags,
# still give them beside the reader's own): split_reader_options routes them
KEYS = ("lr", "table_lr", "warmup", "max_epochs", "table_epochs", "order", "memory_share", "memory_seconds",
        "mix_share", "doc_words")


@dataclass
class ReaderSchedule:
    lr: float = 0.002
    table_lr: float = 5.0  # the embedding table's learning rate, as a factor of lr
    warmup: int = 100
    # passes over the counted bytes, at most; the hashed rows (the table) learn in the first
    # table_epochs of them only: rows memorise what they read twice (H200, 5 minutes = 2.5 passes of
    # everything: held-out 1.5788 bpb for the reader alone, 1.4774 after 0.8 passes at 2), while the
    # dense layers and the scan generalise from several passes, as a transformer's weights do
    max_epochs: float = 1.0
    table_epochs: float = 1.0
    # dropout of hashed rows while training: each hashed context's row left out of a position's
    # input with this probability (the kept ones scaled by 1 / (1 - p); evaluation reads them all),
    # so that the dense layers cannot lean on the rows as a position's identity (bench/NOTES.md §19)
    ctx_dropout: float = 0.0
    ctx_dropout_from: float = 0.0  # passes done before the dropout starts (1: the first pass reads every row)
    # decoupled weight decay (AdamW) of the dense weights and the scan's products, per unit of rate
    weight_decay: float = 0.0
    # which positions a step trains on: "stream" (the batch is that many cursors spread over the
    # text, each moving one byte a step, so a row has seen only the past of the article it is read
    # in, as the memory's counts have) or "random" (uniform over the counted bytes). CPU, 3 MB of
    # train, val: stream 1.7481, random 1.7788, memory alone 1.8715 (bench/NOTES.md §11)
    order: str = "stream"
    # of a minutes budget, the most the memory's phases may take: they leave the tensor cores idle,
    # and the reader gains with every minute (H200, 2 minutes, val: memory 32 s -> 12 s cost the
    # memory alone +0.016 on held-out bytes, and the mix gained, 1.2721 -> 1.2700 with a 1.25x reader)
    memory_share: float = 0.1
    # ... and at most this many seconds (0: no cap): on an H200 the memory has counted the whole
    # train split in 35 s and gains little after a minute
    memory_seconds: float = 60.0
    mix_share: float = 0.05  # of a minutes budget, fitting the memory-reader mix
    # Adam steps of the mix, at most (a minutes budget may stop it sooner): at 128 steps of lr 0.002
    # (two passes over 4 MB) the mix stayed near its start (the memory alone) and scored 0.046 worse
    # than the reader alone (H200, 5 minutes, bench/NOTES.md §12). Tests on a few KB take fewer.
    mix_fit_steps: int = 1500
    # the mix also reads the document's own words (docwords.py; issue 23 item 2): its weights are
    # fitted with the rest of the mix; off, they stay zero and D is never read
    doc_words: bool = True

    def validate(self, scan: bool) -> None:
        if self.lr <= 0 or self.table_lr <= 0:
            raise ValueError("reader schedule: lr and table_lr must be positive")
        if self.order not in ("random", "stream"):
            raise ValueError("reader schedule: order must be random or stream")
        if not (0 < self.max_epochs <= 100) or self.table_epochs < 0:  # table_epochs 0: rows never learn
            raise ValueError("reader schedule: max_epochs must be in (0, 100], table_epochs >= 0")
        if not (0 <= self.ctx_dropout < 1):
            raise ValueError("reader schedule: ctx_dropout must be in [0, 1)")
        if self.ctx_dropout_from < 0:
            raise ValueError("reader schedule: ctx_dropout_from must be >= 0")
        if self.weight_decay < 0:
            raise ValueError("reader schedule: weight_decay must be >= 0")
        if self.memory_seconds < 0:
            raise ValueError("reader schedule: memory_seconds must be >= 0 (0: no cap)")
        if not (0 < self.memory_share < 1) or not (0 <= self.mix_share < 1):
            raise ValueError("reader schedule: memory_share in (0, 1), mix_share in [0, 1)")
        if self.mix_fit_steps < 1:
            raise ValueError("reader schedule: mix_fit_steps must be >= 1")
        if scan and self.order != "stream":
            raise ValueError("reader schedule: a reader with a scan reads its text in order (order stream)")

    @classmethod
    def for_device(cls, device: str, minutes: float | None = None, over: dict | None = None,
                   widen: float = 1) -> "ReaderSchedule":
        """Defaults by device, `over` over them: the GPU's rate falls as the reader widens with the
        budget (widen: reader.widen(minutes)); the CPU's memory phase has no seconds cap."""
        if device == "cuda":
            base = cls(lr=0.002 * min(1.0, 2.0 / widen))
        else:
            base = cls(lr=0.003, memory_seconds=0.0, memory_share=0.3)  # the CPU's counting is slow (1.2 MB/s)
        return dataclasses.replace(base, **check_keys(cls, over or {}, "train reader"))

    def lr_at(self, step: int, frac: float) -> float:
        """The rate of reader update `step` (from 0) with `frac` of the phase done: a warm-up, then
        flat to 60% and linear down to a tenth."""
        warm = min(1.0, (step + 1) / max(1, self.warmup))
        decay = 1.0 if frac < 0.6 else 1.0 - 0.9 * min(1.0, (frac - 0.6) / 0.4)
        return self.lr * warm * decay


def split_reader_options(reader: dict) -> tuple[dict, dict]:
    """A reader options object as a user (--reader, --config's model.reader) or an older run gives
    it -> (the reader's own options, the schedule's)."""
    return ({k: v for k, v in reader.items() if k not in KEYS}, {k: v for k, v in reader.items() if k in KEYS})
