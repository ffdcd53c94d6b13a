"""bench/results/curve.json: test bpb against training minutes, one row per run, from the result
JSONs in bench/results/ (written by bench/wikibench.py and bench/transformer_baseline.py).

    python bench/curve.py            # rewrites bench/results/curve.json and prints the table

Rows: model ("cheaplm" | "transformer"), config ("default" = the library's defaults at that
commit), device, card, minutes, test_bpb, commit, command; other_bpb where the run also scored
text of another source (--other: `cheaplm prepare ../shared/data/enwik8.head4154399.xz`). A run is listed in RUNS below with the
config it measured; add new runs there (the newest rows for the current default last). A row whose
config is "default" was measured at the current defaults; "default at C" rows at commit C's.
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# (file, label inside it or None for the only/first row, model, config)
RUNS = [
    ("h200-transformer-1min.json", None, "transformer", "8x512, 25.4M params"),
    ("h200-transformer-2min.json", None, "transformer", "8x512, 25.4M params"),
    ("h200-transformer-5min-dfa64e9.json", None, "transformer", "8x512, 25.4M params"),
    ("h200-each-b949e31.json", "cheaplm:ml5", "cheaplm", "memory only (the default before the reader, dfa64e9)"),
    ("h200-reader-5min-76ed67e.json", None, "cheaplm", "default at 76ed67e (reader, no pass limit)"),
    ("h200-reader-1min-3e24908.json", None, "cheaplm", "default at 3e24908 (reader in random order, no pass limit)"),
    ("h200-reader-2min-3e24908.json", None, "cheaplm", "default at 3e24908 (reader in random order, no pass limit)"),
    ("h200-reader-5min-3e24908.json", None, "cheaplm",
     "default at 3e24908 (reader over-fits on 2.5 passes; one pass, text order since 2f1a6c4)"),
    ("cpu-cheaplm-10min-tb22.json", None, "cheaplm", "memory only, table_bits 22 (4b9b879)"),
    ("cpu-reader-10min-cde5920.json", None, "cheaplm", "default at cde5920 (random order, mix started 0.4/0.6)"),
    ("cpu-reader-10min-8ae34fb.json", None, "cheaplm", "default at 8ae34fb (no scan)"),
    ("cpu-reader-10min-8a9c076.json", None, "cheaplm", "default at 8a9c076 (the CPU mix starved: one step)"),
    ("cpu-reader-10min-4b154fd.json", None, "cheaplm", "default at 4b154fd (CPU; the defaults have changed since, not re-run)"),
    ("cpu-reader-60min-e486405.json", None, "cheaplm", "default at e486405 (CPU; the defaults have changed since, not re-run)"),
    ("h200-reader-1min-7015b02.json", None, "cheaplm",
     "default at 7015b02 (trained 71 s: no time kept for the final count; max_epochs 4 does not bind here)"),
    ("h200-reader-2min-7015b02.json", None, "cheaplm",
     "default at 7015b02 (trained 123 s: no time kept for the final count)"),
    ("h200-reader-1min-e819715.json", None, "cheaplm",
     "default at e819715 (warp tile; its mix made 32 steps, since 4b154fd at least 100)"),
    ("h200-reader-2min-e819715.json", None, "cheaplm", "default at e819715 (warp tile)"),
    ("h200-reader-5min-3cdbedb.json", None, "cheaplm", "default at 3cdbedb (trained 303 s, before e819715 kept time for the final count)"),
    ("h200-reader-10min-3cdbedb.json", None, "cheaplm", "default at 3cdbedb (warp tile; its one pass ended at 452 s)"),
    ("h200-transformer-speedrun-5min-bbcbd2a.json", None, "transformer",
     "transformer-speedrun 8x640 (Muon + Adam, rotary, QK-norm, ReLU^2, lr to 0 over the budget; 39.6M params)"),
    ("h200-reader-5min-6a68333.json", None, "cheaplm", "default at 6a68333 (warp tile, memory up to 60 s, x2 reader)"),
    ("h200-default-1min-4d9578c.json", None, "cheaplm", "default at 4d9578c (before the document words joined the mix at 5ef6ac0)"),
    ("h200-default-2min-4d9578c.json", None, "cheaplm", "default at 4d9578c (before the document words joined the mix at 5ef6ac0)"),
    ("h200-default-8min-37fbf50.json", None, "cheaplm",
     "default at 37fbf50 (x5 reader: its one pass ended at 300 s of the 449 s it had; x6.5 since f3bc47f)"),
    ("h200-default-5min-f3bc47f.json", None, "cheaplm", "default at f3bc47f (before the document words joined the mix at 5ef6ac0)"),
    ("h200-transformer-speedrun-1min-f3bc47f.json", None, "transformer",
     "transformer-speedrun 6x512 (the 5-minute row's recipe, shape by budget; 19.1M params)"),
    ("h200-transformer-speedrun-8min-f3bc47f.json", None, "transformer",
     "transformer-speedrun 10x640 (the 5-minute row's recipe, shape by budget; 49.5M params)"),
    ("h200-default-1min-01af16d.json", None, "cheaplm", "default at 01af16d (before the document words' tag fix, c8338ce)"),
    ("h200-default-5min-01af16d.json", None, "cheaplm", "default at 01af16d (before the document words' tag fix, c8338ce)"),
    ("h200-transformer-speedrun-2min-e88d66a.json", None, "transformer",
     "transformer-speedrun 8x512 (the 5-minute row's recipe, shape by budget; 25.4M params)"),
    ("h200-default-2min-e88d66a.json", None, "cheaplm", "default at e88d66a (before the document words' tag fix, c8338ce)"),
    ("h200-default-1min-9be964a.json", "default1:full", "cheaplm", "default"),
    ("h200-default-2min-9be964a.json", "default2:full", "cheaplm", "default"),
    ("h200-default-5min-9be964a.json", "default5:full", "cheaplm", "default"),
]


# runs whose JSON lacks the commit (no CHEAPLM_COMMIT given on the device, whose copy's git HEAD is
# the session's base): the commit of the working tree that was sent, from bench/RESULTS.md
COMMIT = {"h200-transformer-1min.json": "4b9b879", "h200-transformer-2min.json": "4b9b879",
          "h200-reader-5min-76ed67e.json": "76ed67e", "h200-default-1min-4d9578c.json": "4d9578c",
          "h200-default-2min-4d9578c.json": "4d9578c"}


def rows() -> list[dict]:
    out = []
    for name, label, model, config in RUNS:
        path = RESULTS / name
        if not path.exists():
            print(f"missing: {name}")
            continue
        data = json.loads(path.read_text())
        data = data if isinstance(data, list) else [data]
        run = next((r for r in data if label is None or r.get("label") == label), None)
        if run is None:
            print(f"no row {label} in {name}")
            continue
        card = run.get("card", "")
        out.append({"model": model, "config": config, "device": run.get("device", "cuda" if "H200" in card else "cpu"),
                    "card": card, "minutes": run["minutes"], "test_bpb": round(run["test_bpb"], 4),
                    "commit": COMMIT.get(name) or run.get("commit") or "", "command": "python " + run["command"].split(" --json")[0],
                    **({"other_bpb": round(run["other_bpb"], 4), "other": "enwik8.head4154399 (cheaplm prepare, all splits)"}
                       if run.get("other_bpb") is not None else {})})
    return out


def main() -> None:
    table = rows()
    (RESULTS / "curve.json").write_text(json.dumps(table, indent=1) + "\n")
    print("| model | config | card | minutes | test bpb | commit |")
    print("|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['model']} | {r['config']} | {r['card']} | {r['minutes']:g} | {r['test_bpb']:.4f} | {r['commit']} |")


if __name__ == "__main__":
    main()
