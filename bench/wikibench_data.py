"""Build the wikibench split (../shared/data/SOURCES.md, "The benchmark split") as a shard directory.

    test  = the last 5,000,074 bytes of Vibhas-hs-edu_WikiTasks (from offset 54,870,061)
    train = the first 54,870,061 bytes of that file + all of ag-gipp_wikiextractor (154,850,983 bytes)

Sizes and sha256s of the decompressed sources are checked. The directory holds `train` and `test`
splits (no `val`: bench scripts report test bpb once, at the end).

Usage: python bench/wikibench_data.py OUT_DIR [--data ../shared/data] [--small]
(--small: train = the first 54,870,061 bytes of Vibhas only, "train-small")
--val: for design decisions without touching test: the 2,000,000 bytes of Vibhas just before the
test become the scored split (written as `test` of a separate directory) and leave train.
"""

from __future__ import annotations

import argparse
import hashlib
import lzma
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cheaplm.shards import MANIFEST, write_raw_split_dir  # noqa: E402

VIBHAS = ("wikitext/Vibhas-hs-edu_WikiTasks.txt.xz", 59_870_135,
          "3085f97deea01316961109bf825e375baad313aefb4f5d9da1225128861a7a88")
AGGIPP = ("wikitext/ag-gipp_wikiextractor.txt.xz", 99_980_922,
          "aa579feafd487b9869ac546f08b24edcaf3321a7f7c2cc8806c49915be09af86")
TEST_START = 54_870_061
TRAIN_BYTES = 154_850_983
TEST_BYTES = 5_000_074
VAL_BYTES = 2_000_000


def read_checked(data: Path, spec) -> bytes:
    name, size, sha = spec
    raw = lzma.decompress((data / name).read_bytes())
    if len(raw) != size or hashlib.sha256(raw).hexdigest() != sha:
        raise SystemExit(f"Error: {data / name}: decompressed size/sha256 differ from SOURCES.md")
    return raw


def build(out: Path, data: Path, small: bool = False, val: bool = False) -> Path:
    out = Path(out)
    if (out / MANIFEST).exists():
        return out
    vib = read_checked(data, VIBHAS)
    test = vib[TEST_START:]
    assert len(test) == TEST_BYTES and test.startswith(b"<doc id="), "test split does not start at a <doc>"
    cut = TEST_START - VAL_BYTES if val else TEST_START
    if val:
        test = vib[cut:TEST_START]
    train = vib[:cut] if small else vib[:cut] + read_checked(data, AGGIPP)
    if not small and not val:
        assert len(train) == TRAIN_BYTES
    write_raw_split_dir(out, {"train": train, "test": test},
                        "wikibench" + ("-small" if small else "") + " split from ../shared/data/SOURCES.md")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    ap.add_argument("--small", action="store_true")
    args = ap.parse_args()
    build(Path(args.out), Path(args.data), args.small)
    print(f"wikibench split in {args.out}")


if __name__ == "__main__":
    main()
