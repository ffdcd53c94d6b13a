"""Apply each hand mutation of tests/MUTATIONS.md, run the tests that should kill it, restore.

    python tools/mutations.py            # every row; prints one line each and a summary
    python tools/mutations.py 4a 8b      # some rows

Each mutation: the file's code must occur exactly once (else the row is stale and reported so), is
replaced by its mutant, the killing tests run in a subprocess with a fresh NUMBA_CACHE_DIR (numba's
cache can keep code inlined from another module stale after an edit) and one thread each, and the
file is written back as it was. A row passes when the tests fail; first the killing tests run on
the code as it is and must pass there. Exits 1 if any mutation survives
or any row is stale.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
M = "tests/test_mutations.py::"

# (row, file, code, mutant, killing tests)
MUTATIONS = [
    ("1", "cheaplm/kernels/counts.py", "            for t in range(b0, b1):\n                add_byte(",
     "            for t in range(b0, b1 - (b1 - b0 == BLOCK)):\n                add_byte(",
     [M + "test_count_add_over_several_blocks_equals_an_independent_count"]),
    ("2", "cheaplm/train.py", "self.model.count(self.d_data, *span)", "self.model.count(self.d_data, span[0], span[1] - 1)",
     [M + "test_training_counts_every_byte_of_the_budget_exactly_once"]),
    ("3", "cheaplm/train.py", "self.sched.lr_at(reader.step, frac)", "0.0 * self.sched.lr_at(reader.step, frac)",
     [M + "test_the_reader_learns"]),
    ("4a", "cheaplm/kernels/scan.py", "a, s = scan_step(s, proj[r, d], proj[r, n_d + d], bias[0, d])",
     "a, s = scan_step(s, proj[r - 1 if t > 0 else r, d], proj[r, n_d + d], bias[0, d])",
     [M + "test_scan_kernel_over_consecutive_batches_matches_float64_and_its_backward_finite_differences"]),
    ("4b", "cheaplm/train.py", "reader.training_state(), frozen", "reader.new_state(rc.lanes), frozen",
     [M + "test_training_carries_the_scan_state_from_step_to_step"]),
    ("5a", "cheaplm/reader.py", 'ops.grad_w(ws["dproj"][layer], x, self.scan_block(self.grad, "in", layer))',
     'ops.grad_w(ws["dproj"][layer], x, 0 * self.scan_block(self.grad, "in", layer))',
     [M + "test_reader_with_a_scan_gradient_of_every_block_against_finite_differences"]),
    ("5b", "cheaplm/kernels/reader_ops.py", "    for b in range(rows.shape[0]):\n        for s in range(rows.shape[1]):\n            r = rows[b, s]",
     "    for b in range(rows.shape[0]):\n        for s in range(1, rows.shape[1]):\n            r = rows[b, s]",
     [M + "test_reader_gradient_of_every_block_and_every_slot_against_finite_differences"]),
    ("6a", "cheaplm/kernels/match.py", "cand[k, 0] = data[p]", "cand[k, 0] = data[p + 1]",
     [M + "test_match_inputs_predict_the_byte_after_the_latest_earlier_occurrence"]),
    ("6b", "cheaplm/kernels/match.py", "return np.int64(data[p]), np.int64(n), t - p",
     "return np.int64(data[p + 1]), np.int64(n), t - p",
     [M + "test_match_inputs_predict_the_byte_after_the_latest_earlier_occurrence"]),
    ("7a", "cheaplm/kernels/reader_ops.py", "w[row, 1] * zr", "w[row, 1] * 0.0",
     [M + "test_the_mix_reads_the_reader"]),
    ("7b", "cheaplm/reader.py", "zr = stretch(pr[b, j])", "zr = 0.0 * stretch(pr[b, j])",
     [M + "test_the_mix_reads_the_reader", M + "test_the_trained_model_beats_the_memory_alone_with_the_same_mix_fit"]),
    ("8a", "cheaplm/reader.py", 'self.adam_m, self.adam_v = self.dev.own(z["reader_m"]), self.dev.own(z["reader_v"])',
     'self.adam_m, self.adam_v = 0 * z["reader_m"], 0 * z["reader_v"]',
     [M + "test_resume_restores_the_reader_s_optimizer_and_scan_state"]),
    ("8b", "cheaplm/reader.py", 'if self.cfg.scan and "reader_scan_state" in z:', "if False:",
     [M + "test_resume_restores_the_reader_s_optimizer_and_scan_state"]),
    ("9a", "cheaplm/sample.py", "sample_byte(p, sampling.temperature,", "sample_byte(p, 1.0,",
     [M + "test_the_sampler_draws_from_the_tempered_distribution"]),
    ("9b", "cheaplm/sample.py", "    if temperature != 1.0:\n        with np.errstate", "    if False:\n        with np.errstate",
     [M + "test_temperature_reshapes_the_filtered_distribution"]),
    ("9c", "cheaplm/sample.py", "        if temperature != 1.0:\n            top = -np.inf", "        if False:\n            top = -np.inf",
     [M + "test_the_sampler_draws_from_the_tempered_distribution"]),
    ("10", "cheaplm/recall.py", "return self.articles[i]", "return self.articles[min(i + 1, len(self.articles) - 1)]",
     ["tests/test_chat.py::test_title_keys_and_lookup"]),
    ("11", "cheaplm/utf8.py", "    if not pending:\n        return _START_MASK",
     "    if True:\n        return np.ones(256, dtype=bool)",
     ["tests/test_sample.py::test_output_is_always_valid_utf8"]),
]


def pytest(tests: list) -> subprocess.CompletedProcess:
    """The tests in a subprocess: one thread, a fresh numba cache."""
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO))
    with tempfile.TemporaryDirectory() as cache:
        env["NUMBA_CACHE_DIR"] = cache
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                              cwd=REPO, env=env, capture_output=True, text=True)


def run(row: tuple) -> str:
    name, rel, code, mutant, tests = row
    path = REPO / rel
    original = path.read_text()
    if original.count(code) != 1:
        return f"{name}: STALE ({rel} holds the code {original.count(code)} times)"
    t0 = time.perf_counter()
    try:
        path.write_text(original.replace(code, mutant))
        proc = pytest(tests)
    finally:
        path.write_text(original)
    verdict = "killed" if proc.returncode != 0 else "SURVIVED"
    return f"{name}: {verdict} ({time.perf_counter() - t0:.0f} s) by {', '.join(t.split('::')[-1] for t in tests)}"


def main() -> None:
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
        return
    want = set(sys.argv[1:])
    unknown = want - {r[0] for r in MUTATIONS}
    if unknown:
        sys.exit(f"no such row: {', '.join(sorted(unknown))} (rows: {', '.join(r[0] for r in MUTATIONS)})")
    rows = [r for r in MUTATIONS if not want or r[0] in want]
    # first the killing tests on the code as it is: a mutation only counts as killed if they pass there
    base = pytest(sorted({t for r in rows for t in r[4]}))
    if base.returncode != 0:
        print(base.stdout[-3000:])
        sys.exit("the killing tests fail on the unmutated code: fix them first")
    print("the killing tests pass on the unmutated code", flush=True)
    lines = []
    for row in rows:
        lines.append(run(row))
        print(lines[-1], flush=True)
    bad = [ln for ln in lines if "SURVIVED" in ln or "STALE" in ln]
    print(f"{len(lines) - len(bad)} of {len(lines)} mutations killed")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
