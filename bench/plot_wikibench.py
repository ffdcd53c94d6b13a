"""Plot test bpb vs training minutes for cheaplm and the transformer from bench/results/*.json.

    python bench/plot_wikibench.py            # writes bench/wikibench.png (needs matplotlib)

cheaplm finishes training in about a minute of its budget (counting + mixer updates + tail), so its points are drawn
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
    tf_again = load("h200-transformer-5min-dfa64e9.json")[0]  # re-run beside cheaplm's best, same machine
    before = {r["label"]: r for r in load("h200-tail-e5ca69c.json")}["cheaplm:hold32"]  # default at e5ca69c
    full = {r["label"]: r for r in load("h200-each-b949e31.json")}["cheaplm:ml5"]  # the default since dfa64e9
    best = {r["label"]: r for r in load("h200-big27-dfa64e9.json")}["cheaplm:big27"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([m for m, _ in tf], [b for _, b in tf], "o-", label="byte-level transformer (25M params)")
    ax.plot([5], [tf_again["test_bpb"]], "o", color="C0", mfc="none", label="transformer, re-run beside cheaplm's best")
    for label, r, style in [("cheaplm GPU default at e5ca69c (match state: length only)", before, "x:"),
                            ("cheaplm GPU default (table_bits 24, 20 contexts)", full, "s--"),
                            ("cheaplm table_bits 25, 27 contexts", best, "D--")]:
        t = r["train_seconds"] / 60
        ax.plot([t, 5], [r["test_bpb"], r["test_bpb"]], style, label=f"{label}: trains in {r['train_seconds']:.0f} s")
    ax.set_xlabel("training minutes (H200)")
    ax.set_ylabel("test bits per byte (wikibench, 5,000,074 bytes)")
    ax.set_title("wikibench: bpb vs training time, same card")
    ax.grid(alpha=0.3)
    ax.set_ylim(1.15, 1.8)  # room above the lines for the legend
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(HERE / "wikibench.png", dpi=120)
    print(f"wrote {HERE / 'wikibench.png'}")


if __name__ == "__main__":
    main()
