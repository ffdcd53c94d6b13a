"""A run at scale (issue 25 item 4): a >= 10 GB corpus built on the machine, prepared, trained for
5 minutes on the GPU and evaluated, with host and GPU memory against the plan. Memory and speed
only: no bits-per-byte claim comes from this corpus.

    python bench/scale_run.py --phase corpus  [--target-gb 10] [--data .devdata]
    python bench/scale_run.py --phase prepare
    python bench/scale_run.py --phase train   [--minutes 5] [--device cuda]
    python bench/scale_run.py --phase eval    [--device cuda]
    python bench/scale_run.py --phase all     (the four in order; small sizes: a test of the script)

Each phase is one command of at most 10 minutes on a warm machine, resumable (a finished phase is
skipped; `--force` redoes it), and writes what it measured into WORK/scale.json at once
(`--copy-to DIR` copies the JSON there too, e.g. the device's $OUT). WORK is bench/work/scale.

How the corpus is made: the WikiExtractor texts in --data (wikitext/*.txt.xz, `<doc ...>`
records, about 150 MB together) are parsed into articles once; copy k of them has every ASCII
letter and digit of its titles and bodies put through a substitution of its own (copy 0 is the
real text; the others a random permutation of a-z, one of A-Z and one of 0-9, seeded by k), so
the copies do not match one another beyond a few bytes (a 12-byte string of one copy occurs in
another only where all of its letters happen to map alike), while the markup stays as prepare
reads it. Copies are written to WORK/corpus/part-NNNN.txt, about 1 GB each, until --target-gb;
titles that two copies map alike are kept once by prepare (counted in its manifest). Then
`cheaplm prepare WORK/corpus --out WORK/data --val-fraction 0.0005 --test-fraction 0.0005`
(about 5 MB of val and test per 10 GB), and the corpus files are deleted (--keep-corpus keeps them)
so the 64 GB disk holds the shards and the run; train writes its final checkpoint only
(--checkpoint-minutes 0: one model.npz, not three).

Times, extrapolated from this 2-core machine (2026-12-03): the corpus, about 2.5 s per copy of
172 MB (59 copies for 10 GB: about 2.5 minutes, disk permitting); prepare read this WikiExtractor
text at PREPARE_MB_S = 38.6 MB/s with 2 workers (no wikitext to clean), so 10 GB takes at most
4.5 minutes on 16 cores even if it does not scale at all (the XML dumps went from 14 to 47.9 MB/s,
bench/RESULTS.md); not measured there. Train: the budget (5 minutes) plus kernel compile, the
text's copy to the GPU (10 GB from the page cache) and the final checkpoint. Eval: 2 MB of test.

What is reported (scale.json): per phase the wall time and rc; the corpus' and the shards' bytes;
the plan of `train --dry-run` (host and GPU memory at their peak phases, per part and per phase, disk,
phase times); the training
process' peak RSS (getrusage of the child: ru_maxrss) and, sampled every 0.5 s from
/proc/PID/status, its peak RssAnon and RssFile (the mapped text is file pages, which the kernel
may drop; the anonymous ones are what must fit); the GPU's peak memory used (nvidia-smi polled
every 0.5 s, the whole card); counting MB/s and the reader's positions/s from metrics.jsonl; the
run directory's size; eval's bpb, wall time and the time `cheaplm sample` takes to load the run
and draw one byte (issue 25 item 5: the same for a big run as a small one).
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "work" / "scale"
PART_BYTES = 1 << 30
PREPARE_MB_S = 38.6  # this corpus' WikiExtractor text, 2 workers on the 2-core machine (516 MB in 13 s)
_DOC = re.compile(rb'<doc id="[^"\n]*" url="[^"\n]*" title="([^"\n]*)">\n(.*?)</doc>\n', re.S)
LETTERS = b"abcdefghijklmnopqrstuvwxyz"


def load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def save(args, report: dict) -> None:
    path = args.work / "scale.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, path)
    if args.copy_to:
        Path(args.copy_to).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(args.copy_to) / "scale.json")


def env() -> dict:
    e = dict(os.environ)
    shim = ROOT / ".devshim"
    e["PYTHONPATH"] = os.pathsep.join(([str(shim)] if shim.exists() else []) + [str(ROOT)])
    return e


# ---- the corpus --------------------------------------------------------------------------------------
def base_articles(data: Path, most: float | None = None) -> list[tuple[bytes, bytes]]:
    """(title, body) of every `<doc>` record of the WikiExtractor texts in data/wikitext (the
    first `most` bytes' worth when given)."""
    out, total = [], 0
    for path in sorted((data / "wikitext").glob("*.txt.xz")):
        raw = lzma.decompress(path.read_bytes())
        if not raw.startswith(b"<doc id="):
            continue
        for m in _DOC.finditer(raw):
            if most is not None and total >= most:
                return out
            out.append((m.group(1), m.group(2)))
            total += len(m.group(0))
    if not out:
        sys.exit(f"{data}/wikitext: no WikiExtractor text (<doc ...> records) to build the corpus from")
    return out


def substitution(k: int) -> bytes:
    """Copy k's byte table: identity for copy 0, else its own permutation of a-z, A-Z and 0-9."""
    if k == 0:
        return bytes(range(256))
    rng = np.random.default_rng(1000 + k)
    src = LETTERS + LETTERS.upper() + b"0123456789"
    dst = b"".join(rng.permutation(np.frombuffer(group, np.uint8)).tobytes()
                   for group in (LETTERS, LETTERS.upper(), b"0123456789"))
    return bytes.maketrans(src, dst)


def copy_bytes(arts, k: int, first_id: int) -> bytes:
    table = substitution(k)
    titles = b"\0".join(t for t, _ in arts).translate(table).split(b"\0")
    bodies = b"\0".join(b for _, b in arts).translate(table).split(b"\0")
    parts = []
    for i, (t, b) in enumerate(zip(titles, bodies)):
        doc = first_id + i
        parts.append(b'<doc id="%d" url="?curid=%d" title="%s">\n%s</doc>\n' % (doc, doc, t, b))
    return b"".join(parts)


def phase_corpus(args, report: dict) -> None:
    out = args.work / "corpus"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    arts = base_articles(args.data, None if args.base_mb is None else args.base_mb * 1e6)
    base = sum(len(t) + len(b) + 40 for t, b in arts)
    target = int(args.target_gb * 1e9)
    copies = max(1, -(-target // base))
    per_part = max(1, PART_BYTES // base)
    written, k, part = 0, 0, 0
    while k < copies:
        path = out / f"part-{part:04d}.txt"
        n = min(per_part, copies - k)
        if not path.exists():  # resumable: a part is written to a temporary name and renamed
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                for j in range(k, k + n):
                    f.write(copy_bytes(arts, j, 1 + j * len(arts)))
            os.replace(tmp, path)
        written += path.stat().st_size
        k, part = k + n, part + 1
    report["corpus"] = {"articles_per_copy": len(arts), "copies": copies, "parts": part, "bytes": written,
                        "base_bytes": base, "seconds": round(time.perf_counter() - t0, 1)}
    print(f"corpus: {copies} copies of {len(arts):,} articles, {written / 1e9:.2f} GB in {part} parts, "
          f"{report['corpus']['seconds']} s", file=sys.stderr)


def phase_prepare(args, report: dict) -> None:
    out = args.work / "data"
    cmd = [sys.executable, "-m", "cheaplm.cli", "prepare", str(args.work / "corpus"), "--out", str(out),
           "--val-fraction", "0.0005", "--test-fraction", "0.0005"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env(), cwd=ROOT, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        report["prepare"] = {"rc": proc.returncode, "stderr": proc.stderr[-2000:]}
        return
    manifest = json.loads((out / "manifest.json").read_text())
    corpus_bytes = sum(p.stat().st_size for p in (args.work / "corpus").glob("part-*.txt"))
    splits = {k: v.get("bytes") for k, v in manifest["splits"].items()}
    report["prepare"] = {"rc": 0, "seconds": round(dt, 1), "input_bytes": corpus_bytes,
                         "mb_per_s": round(corpus_bytes / 1e6 / dt, 1), "splits": splits,
                         "workers": os.cpu_count(), "stderr_tail": proc.stderr[-600:]}
    if not args.keep_corpus:
        shutil.rmtree(args.work / "corpus")
        report["prepare"]["corpus_deleted"] = True
    print(f"prepare: {corpus_bytes / 1e9:.2f} GB in {dt:.0f} s ({corpus_bytes / 1e6 / dt:.1f} MB/s); {splits}",
          file=sys.stderr)


# ---- training ----------------------------------------------------------------------------------------
class Sampler:
    """Polls a process' RssAnon / RssFile (/proc) and the GPU's memory used (nvidia-smi) every 0.5 s."""

    def __init__(self, pid: int, gpu: bool):
        self.pid, self.gpu = pid, gpu and shutil.which("nvidia-smi") is not None
        self.peak = {"rss_anon": 0, "rss_file": 0, "vm_rss": 0, "gpu_used": 0}
        self.gpu_base = self._gpu_used() if self.gpu else None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _gpu_used(self) -> int | None:
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                                 capture_output=True, text=True, timeout=10).stdout
            return int(out.split()[0]) << 20
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            return None

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    key, _, val = line.partition(":")
                    name = {"RssAnon": "rss_anon", "RssFile": "rss_file", "VmRSS": "vm_rss"}.get(key)
                    if name:
                        self.peak[name] = max(self.peak[name], int(val.split()[0]) * 1024)
            except OSError:
                pass
            if self.gpu:
                used = self._gpu_used()
                if used is not None:
                    self.peak["gpu_used"] = max(self.peak["gpu_used"], used)

    def close(self) -> dict:
        self.stop.set()
        self.thread.join()
        return {**self.peak, "gpu_used_before": self.gpu_base}


def run_measured(cmd: list[str], gpu: bool, log: Path) -> dict:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env(), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        sampler = Sampler(proc.pid, gpu)
        rc = proc.wait()
    peaks = sampler.close()
    # ru_maxrss of the children waited for so far: this script waits for one measured child per phase
    return {"rc": rc, "seconds": round(time.perf_counter() - t0, 1),
            "ru_maxrss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, **peaks,
            "log_tail": log.read_text()[-1500:]}


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def phase_plan(args, report: dict) -> None:
    sys.path.insert(0, str(ROOT))
    from cheaplm.train import TrainConfig, train

    tc = TrainConfig(device=args.device, minutes=args.minutes, checkpoint_minutes=0)  # as phase_train runs it
    lines: list[str] = []
    plan = train(args.work / "data", args.work / "run", None, tc, log=lines.append, dry_run=True)
    report["plan"] = {"lines": lines, "host": plan["host"], "gpu": plan["gpu"], "disk": plan["disk"],
                      "phases": plan["phases"], "pointers": plan["pointers"], "train_bytes": plan["train_bytes"],
                      "host_total": sum(plan["host"].values()), "gpu_total": sum(plan["gpu"].values()),
                      "host_phase": plan.get("host_phase"), "gpu_phase": plan.get("gpu_phase"),
                      "host_phases": plan.get("host_phases"), "gpu_phases": plan.get("gpu_phases")}
    print("\n".join(lines), file=sys.stderr)


def phase_train(args, report: dict) -> None:
    run = args.work / "run"
    resume = (run / "latest").exists()
    if resume and report.get("train", {}).get("rc") == 0 and not args.force:
        print("train: done already (--force to run again)", file=sys.stderr)
        return
    if args.force and run.exists():
        shutil.rmtree(run)
        resume = False
    if "plan" not in report or args.force:
        phase_plan(args, report)
        save(args, report)
    cmd = [sys.executable, "-m", "cheaplm.cli", "train", str(args.work / "data"), "--out", str(run),
           "--device", args.device, "--checkpoint-minutes", "0"] + ([] if resume else ["--minutes", str(args.minutes)]) \
        + (["--resume"] if resume else [])
    out = run_measured(cmd, args.device == "cuda", args.work / "train.log")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] \
        if (run / "metrics.jsonl").exists() else []
    final = next((m for m in reversed(metrics) if m.get("final")), {})
    out.update({"resumed": resume, "run_dir_bytes": dir_bytes(run) if run.exists() else None,
                "shards_bytes": dir_bytes(args.work / "data"),
                "final": {k: final.get(k) for k in ("counted_bytes", "train_bytes", "elapsed", "count_seconds",
                                                    "count_mb_per_s", "reader_steps", "reader_seconds",
                                                    "reader_positions_per_s", "val_bpb", "heldout")}})
    plan = report.get("plan", {})
    if plan:
        out["host_plan_over_peak_anon_file"] = round(plan["host_total"] / max(1, out["vm_rss"]), 3)
        if out.get("gpu_used") and out.get("gpu_used_before") is not None:
            out["gpu_plan_over_peak"] = round(plan["gpu_total"] / max(1, out["gpu_used"] - out["gpu_used_before"]), 3)
    report["train"] = out
    print(f"train: rc {out['rc']} in {out['seconds']} s; peak RSS {out['vm_rss'] / 2**30:.1f} GiB "
          f"(anon {out['rss_anon'] / 2**30:.1f}, file {out['rss_file'] / 2**30:.1f}); GPU {out['gpu_used'] / 2**30:.1f} GiB; "
          f"run dir {(out['run_dir_bytes'] or 0) / 2**30:.1f} GiB", file=sys.stderr)


def phase_eval(args, report: dict) -> None:
    run = args.work / "run"
    cmd = [sys.executable, "-m", "cheaplm.cli", "eval", str(run), str(args.work / "data"), "--split", "test",
           "--max-bytes", args.eval_bytes, "--device", args.device]
    out = run_measured(cmd, args.device == "cuda", args.work / "eval.log")
    nums = re.findall(r"^\s*(\d+\.\d+)\s*$", out["log_tail"], re.M)  # eval prints the bpb alone on stdout
    out["bpb"] = float(nums[-1]) if nums else None
    # loading the run and drawing one byte: the time a big run takes to start (issue 25 item 5)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cheaplm.cli", "sample", str(run), "--prompt", "The ",
                           "--max-bytes", "1", "--seed", "1", "--device", "cpu"],
                          env=env(), cwd=ROOT, capture_output=True, text=True)
    out["sample_load_and_one_byte_seconds"] = round(time.perf_counter() - t0, 2)
    out["sample_rc"] = proc.returncode
    report["eval"] = out
    print(f"eval: rc {out['rc']} in {out['seconds']} s ({out['bpb']} bpb, no claim); sample starts and draws "
          f"a byte in {out['sample_load_and_one_byte_seconds']} s", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phase", required=True, choices=("corpus", "prepare", "plan", "train", "eval", "all"))
    ap.add_argument("--target-gb", type=float, default=10.0)
    ap.add_argument("--data", type=Path, default=ROOT / ".devdata", help="where wikitext/*.txt.xz lie")
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--eval-bytes", default="2M")
    ap.add_argument("--keep-corpus", action="store_true")
    ap.add_argument("--base-mb", type=float, default=None, help="copy only this many MB of the real text (tests)")
    ap.add_argument("--force", action="store_true", help="redo the phase even if it is done")
    ap.add_argument("--copy-to", default=None, help="also copy scale.json here (e.g. $OUT)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    report = load_json(args.work / "scale.json")
    report.setdefault("machine", {"cores": os.cpu_count(), "host": os.uname().nodename})
    phases = ["corpus", "prepare", "train", "eval"] if args.phase == "all" else [args.phase]
    for phase in phases:
        done = phase in report and report[phase].get("rc", 0) == 0 and phase != "plan"
        if done and not args.force and phase in ("corpus", "prepare"):
            if phase == "prepare" or (args.work / "data" / "manifest.json").exists():
                print(f"{phase}: done already (--force to redo)", file=sys.stderr)
                continue
        {"corpus": phase_corpus, "prepare": phase_prepare, "plan": phase_plan, "train": phase_train,
         "eval": phase_eval}[phase](args, report)
        save(args, report)


if __name__ == "__main__":
    main()
