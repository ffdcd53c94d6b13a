"""Byte shards: the training data format shared by `prepare`, `train` and `eval`.

A prepared directory holds `manifest.json` and, per split, files `{split}-{k:05d}.bin`. A shard is
raw bytes: articles one after another, each one

    TITLE \\n \\n BODY \\n \\0

i.e. UTF-8 text ended by a single NUL byte (0x00), which never occurs in Wikipedia text, so the
model learns where an article ends and `sample` can stop there. Shards end at article boundaries.
The split of an article is a function of its title (blake2b), so the same input always gives the
same shards, byte for byte, whatever the number of worker processes. One exception keeps small
preparations usable: with at least 3 articles, a split that came out empty takes one article (the
lowest title hash) from the largest split (`prepare` does this; the manifest's `split_fill` says so).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SEPARATOR = b"\x00"
SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"
FORMAT = "cheaplm-shards"
FORMAT_VERSION = 1


class ShardError(Exception):
    """Data directory problems, one line naming the path."""


def title_hash(title: str) -> int:
    """The 64-bit hash of a title that decides its split."""
    return int.from_bytes(hashlib.blake2b(title.encode("utf-8"), digest_size=8).digest(), "big")


def split_of(title: str, val_fraction: float, test_fraction: float) -> str:
    u = title_hash(title) / 2.0**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def encode_article(title: str, body: str) -> bytes:
    # a NUL inside would end the article early: the separator must be the only one
    text = title.strip() + "\n\n" + body.strip() + "\n"
    return text.replace("\0", "").encode("utf-8") + SEPARATOR


@dataclass
class _OpenShard:
    name: str
    file: object
    sha: "hashlib._Hash"
    size: int = 0


@dataclass
class SplitWriter:
    """Appends articles of one split to numbered shards of at most `shard_bytes` each."""
    directory: Path
    split: str
    shard_bytes: int
    shards: list[dict] = field(default_factory=list)
    articles: int = 0
    _cur: _OpenShard | None = None

    def write(self, article: bytes) -> tuple[int, int]:
        """Append one article; return where it lies: (shard index, byte offset in that shard)."""
        if self._cur is not None and self._cur.size and self._cur.size + len(article) > self.shard_bytes:
            self._close_current()
        if self._cur is None:
            name = f"{self.split}-{len(self.shards):05d}.bin"
            self._cur = _OpenShard(name, open(self.directory / name, "wb"), hashlib.sha256())
        at = (len(self.shards), self._cur.size)
        self._cur.file.write(article)
        self._cur.sha.update(article)
        self._cur.size += len(article)
        self.articles += 1
        return at

    def read(self, shard: int, offset: int, length: int) -> bytes:
        """The bytes of one article written before (its shard may still be open)."""
        if self._cur is not None and shard == len(self.shards):
            self._cur.file.flush()
            name = self._cur.name
        else:
            name = self.shards[shard]["name"]
        with open(self.directory / name, "rb") as f:
            f.seek(offset)
            return f.read(length)

    def _close_current(self) -> None:
        cur = self._cur
        cur.file.close()
        self.shards.append({"name": cur.name, "bytes": cur.size, "sha256": cur.sha.hexdigest()})
        self._cur = None

    def close(self) -> dict:
        if self._cur is not None:
            self._close_current()
        return self.summary()

    def summary(self) -> dict:
        return {"articles": self.articles, "bytes": sum(s["bytes"] for s in self.shards),
                "shards": self.shards}

    def remove(self, cuts: dict[int, list[tuple[int, int]]]) -> dict:
        """Cut articles out of the closed shards: `cuts` maps a shard index to (offset, length) pairs.

        Only the shards named are rewritten (streamed, hashed again); one left empty is deleted
        and the later ones renumbered, so names stay `{split}-00000.bin` onwards without gaps.
        """
        kept: list[dict] = []
        for i, shard in enumerate(self.shards):
            if cuts.get(i):
                shard = self._rewrite_without(shard, sorted(cuts[i]))
                self.articles -= len(cuts[i])
            if shard is None:
                continue
            name = f"{self.split}-{len(kept):05d}.bin"
            if shard["name"] != name:  # the name is free: its shard was deleted or renamed lower
                os.rename(self.directory / shard["name"], self.directory / name)
                shard = {**shard, "name": name}
            kept.append(shard)
        self.shards = kept
        return self.summary()

    def _rewrite_without(self, shard: dict, cuts: list[tuple[int, int]]) -> dict | None:
        path = self.directory / shard["name"]
        tmp = path.with_name(path.name + ".tmp")
        sha = hashlib.sha256()
        size = 0
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            def copy(n: int) -> None:
                nonlocal size
                while n > 0:
                    block = src.read(min(n, 1 << 20))
                    if not block:
                        raise ShardError(f"{path}: shorter than the articles written to it")
                    dst.write(block)
                    sha.update(block)
                    size += len(block)
                    n -= len(block)

            pos = 0
            for offset, length in cuts:
                copy(offset - pos)
                src.seek(offset + length)
                pos = offset + length
            copy(shard["bytes"] - pos)
        if size == 0:
            tmp.unlink()
            path.unlink()
            return None
        os.replace(tmp, path)
        return {"name": shard["name"], "bytes": size, "sha256": sha.hexdigest()}


def read_manifest(data_dir: Path) -> dict:
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise ShardError(f"{data_dir}: no such directory")
    if not data_dir.is_dir():
        raise ShardError(f"{data_dir}: not a directory")
    path = data_dir / MANIFEST
    if not path.exists():
        raise ShardError(f"{data_dir}: no {MANIFEST}; make one with `cheaplm prepare SOURCE --out {data_dir}`")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ShardError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise ShardError(f"{path}: cannot read ({exc.strerror})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ShardError(f"{path}: not a cheaplm shard manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise ShardError(f"{path}: shard format version {manifest.get('version')}, "
                         f"this cheaplm reads version {FORMAT_VERSION}; run `cheaplm prepare` again")
    _check_layout(path, manifest)
    return manifest


def split_info(data_dir: Path, manifest: dict, split: str) -> dict:
    info = manifest["splits"].get(split)
    if info is None:
        have = ", ".join(manifest["splits"]) or "none"
        raise ShardError(f"{data_dir}: no split '{split}' (it has: {have})")
    if not info["shards"] or not any(shard["bytes"] for shard in info["shards"]):
        more = (f"more articles or a larger --{split}-fraction" if split in ("val", "test")
                else "more articles")
        raise ShardError(f"{data_dir}: split '{split}' is empty; run `cheaplm prepare` again with {more}")
    return info


def require_split(data_dir: Path, split: str) -> dict:
    """Check, from the manifest alone, that `split` exists and holds bytes; return its manifest entry.

    Cheap (reads manifest.json, no shard, no model): `eval` calls it before loading a checkpoint.
    Raises ShardError with one line naming the directory.
    """
    data_dir = Path(data_dir)
    return split_info(data_dir, read_manifest(data_dir), split)


def _check_layout(path: Path, manifest: dict) -> None:
    """Every field that readers index exists with its type; shard names are plain file names."""
    splits = manifest.get("splits")
    if not isinstance(splits, dict):
        raise ShardError(f"{path}: damaged manifest ('splits' is not an object)")
    for split, info in splits.items():
        if not isinstance(info, dict) or not isinstance(info.get("shards"), list):
            raise ShardError(f"{path}: damaged manifest (split '{split}' has no list of shards)")
        for shard in info["shards"]:
            if not (isinstance(shard, dict) and isinstance(shard.get("name"), str)
                    and isinstance(shard.get("bytes"), int) and shard["bytes"] >= 0
                    and isinstance(shard.get("sha256"), str)):
                raise ShardError(f"{path}: damaged manifest (a shard of '{split}' lacks its name, bytes or sha256)")
            name = shard["name"]
            # a name like '../../etc/hostname' or '/etc/hostname' would read outside the directory
            if name in ("", ".", "..") or name.startswith(".") or "/" in name or "\\" in name or "\0" in name:
                raise ShardError(f"{path}: shard name {name!r} is not a plain file name in the directory")


VERIFY_ENV = "CHEAPLM_VERIFY_SHARDS"  # 0: check shard sizes only, not sha256 (for huge data)
STAMP = ".verified.json"  # shards already hashed, by (size, mtime, inode): hashed once, not at every load


def _verify_default() -> bool:
    return os.environ.get(VERIFY_ENV, "1").strip().lower() not in ("0", "no", "false", "off")


def _stat_key(path: Path, shard: dict) -> list:
    st = path.stat()
    return [shard["sha256"], st.st_size, st.st_mtime_ns, st.st_ino]


def _read_stamp(data_dir: Path) -> dict:
    try:
        stamp = json.loads((data_dir / STAMP).read_text())
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def _write_stamp(data_dir: Path, stamp: dict) -> None:
    tmp = data_dir / f"{STAMP}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(stamp))
        tmp.rename(data_dir / STAMP)
    except OSError:  # a read-only data directory: hash again next time
        with contextlib.suppress(OSError):
            tmp.unlink()


def _sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(16 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def shard_checker(data_dir: Path, verify: bool | None = None):
    """Yields check(shard) -> its path, which checks one shard of the manifest: its size always; its
    sha256 too unless `verify` is False (default: True, or the environment's CHEAPLM_VERIFY_SHARDS=0
    for huge data). A shard is hashed whole, once: the stamp file remembers it by size, mtime and
    inode (written when the block ends). Problems: ShardError, one line."""
    data_dir = Path(data_dir)
    if verify is None:
        verify = _verify_default()
    stamp = _read_stamp(data_dir) if verify else {}
    changed = False

    def check(shard: dict) -> Path:
        nonlocal changed
        path = data_dir / shard["name"]
        if not path.is_file():
            raise ShardError(f"{path}: shard listed in the manifest is missing")
        if path.stat().st_size != shard["bytes"]:
            raise ShardError(f"{path}: {path.stat().st_size:,} bytes, manifest says {shard['bytes']:,}")
        if verify and stamp.get(shard["name"]) != _stat_key(path, shard):
            if _sha256_of(path) != shard["sha256"]:
                raise ShardError(f"{path}: sha256 does not match the manifest (the shard was changed or "
                                 f"damaged); prepare the data again, or set {VERIFY_ENV}=0 to skip the check")
            stamp[shard["name"]] = _stat_key(path, shard)
            changed = True
        return path

    try:
        yield check
    except OSError as exc:
        raise ShardError(f"{exc.filename or data_dir}: cannot read ({exc.strerror})") from None
    finally:
        if changed:
            _write_stamp(data_dir, stamp)


def load_split(data_dir: Path, split: str, limit: int | None = None, verify: bool | None = None) -> np.ndarray:
    """All bytes of one split as a uint8 array (at most `limit` bytes, cut at a shard's end).

    Each shard read is checked against the manifest (shard_checker): its size always; its sha256
    too unless `verify` is False. The training text is mapped instead (corpus.py).
    """
    data_dir = Path(data_dir)
    info = split_info(data_dir, read_manifest(data_dir), split)
    parts = []
    total = 0
    with shard_checker(data_dir, verify) as check:
        for shard in info["shards"]:
            path = check(shard)
            want = shard["bytes"] if limit is None else min(shard["bytes"], limit - total)
            parts.append(np.fromfile(path, dtype=np.uint8, count=want))
            total += want
            if limit is not None and total >= limit:
                break
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def write_raw_split_dir(out: Path, splits: dict[str, bytes | np.ndarray], description: str) -> None:
    """A shard directory made straight from byte strings (benchmarks, tests): one shard per split."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"format": FORMAT, "version": FORMAT_VERSION, "separator": "\\u0000",
                "description": description, "splits": {}}
    for split, data in splits.items():
        data = bytes(data) if not isinstance(data, bytes) else data
        name = f"{split}-00000.bin"
        tmp = out / (name + ".tmp")
        tmp.write_bytes(data)
        tmp.rename(out / name)
        manifest["splits"][split] = {"articles": None, "bytes": len(data), "shards": [
            {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}]}
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.rename(out / MANIFEST)
