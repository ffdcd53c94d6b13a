"""Rewrites a run's latest checkpoint in the current checkpoint format (format 1 -> 3: the count
tables packed, cheaplm/tablepack.py; 2 -> 3: rows with few counts stored sparse), in place and
atomically, as training would have written it.

    python tools/repack_run.py RUN_DIR

Format 1 and 2 checkpoints still load; this only makes an old run smaller on disk (the 10-minute
CPU model: model.npz 2.3 GiB -> 0.6 GiB from format 1 to 2; 2.75 MB of text at table_bits 20:
545 MB -> 319 MB from 2 to 3). The model, its optimizer state and its history are unchanged:
the rewritten checkpoint loads to equal arrays, which this script checks before it returns.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cheaplm import checkpoint  # noqa: E402


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[4].strip())
    run = Path(sys.argv[1])
    try:
        model, history, ckpt = checkpoint.load_model(run)
        state = checkpoint.load_state(ckpt, model)
        tables = model.memory.tables
        keep = len([p for p in run.glob("ckpt-*") if p.is_dir() and not p.name.endswith(".tmp")])
        written = checkpoint.save(run, model, state, np.asarray(history), keep=max(keep, 1))
        again, _, _ = checkpoint.load_model(run, ckpt=written)
    except checkpoint.CheckpointError as exc:
        sys.exit(f"Error: {exc}")
    if not (np.array_equal(again.memory.tables, tables) and np.array_equal(again.memory.params, model.memory.params)
            and np.array_equal(again.match.last_pos, model.match.last_pos)):
        sys.exit(f"Error: {written} does not load to the same arrays")
    size = (written / "model.npz").stat().st_size
    print(f"{written}: format {checkpoint.FORMAT_VERSION}, model.npz {size / 2**20:,.0f} MiB")


if __name__ == "__main__":
    main()
