"""Plot test bpb vs training minutes for cheaplm and the transformer from bench/results/*.json.

    python bench/plot_wikibench.py            # writes bench/wikibench.png (needs matplotlib)

cheaplm finishes training in ~35 s of its budget (counting + mixer updates + tail), so its points are drawn
at the seconds it actually trained, with a flat line to the budget it was given.
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent


def load(name):
    data = json.loads((HERE / "results" / name).read_text())
    return data if isinstance(data, list) else [data]


def main() -> None:
    tf = sorted((r["minutes"], r["test_bpb"]) for n in ("1min", "2min", "5min")
                for r in load(f"h200-transformer-{n}.json"))
    full = {r["label"]: r for r in load("h200-tail-e5ca69c.json")}["cheaplm:hold32"]  # the default since e5ca69c
    best = {r["label"]: r for r in load("h200-big27-hold32-e5ca69c.json")}["cheaplm:big27-hold32"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([m for m, _ in tf], [b for _, b in tf], "o-", label="byte-level transformer (25M params)")
    for label, r, style in [("cheaplm GPU default (table_bits 24, 20 contexts)", full, "s--"),
                            ("cheaplm table_bits 25, 27 contexts", best, "D--")]:
        t = r["train_seconds"] / 60
        ax.plot([t, 5], [r["test_bpb"], r["test_bpb"]], style, label=f"{label}: trains in {r['train_seconds']:.0f} s")
    ax.set_xlabel("training minutes (H200)")
    ax.set_ylabel("test bits per byte (wikibench, 5,000,074 bytes)")
    ax.set_title("wikibench: bpb vs training time, same card")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "wikibench.png", dpi=120)
    print(f"wrote {HERE / 'wikibench.png'}")


if __name__ == "__main__":
    main()
