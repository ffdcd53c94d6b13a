"""What `cheaplm chat` answers, read and scored (issue 13). Two commands on the GPU machine, each
under 10 minutes on one H200:

    python bench/language_quality.py answers --split-dir bench/work/wikibench --work bench/work/lq
    python bench/language_quality.py judge --split-dir bench/work/wikibench --work bench/work/lq

Without a GPU (no judge): `answers --run RUN_DIR`, then `judge --no-judge`, which scores the loop,
copy and on-topic rates and leaves judge bpb and the transformer's answers out.

`answers` trains the cheaplm GPU default for --minutes in WORK/run (`cheaplm train`) unless it is
there, and on a machine with two GPUs the judge beside it. Then it answers PROMPTS (written here: 80
questions; the first 40, the set of every run before 2026-12-04, are 20 subjects whose article is in
the wikibench train split and 20 whose is not; of the 40 added, 6 are in it; `--questions 40` answers
the first 40 alone) with fixed seeds (seed = prompt number), through chat's own framing, recall and
sampling, in several rows of settings (ROWS). Answers go to WORK/answers.json.

`judge` trains the reference byte-level transformer for the same minutes (bench/transformer_baseline.py
--save) unless WORK/judge.pt is there, lets it answer the same prompts with the same framing at its
usual sampling, and scores every row and the real leads of as many test-split articles as questions:
- judge bpb: bits per byte of the answer (its framed opening words and the reply) under the
  transformer, given the answer's header (`<doc ...>` line, title, blank line); byte-weighted;
- loop rate: answers in which some 20-byte string occurs 3 or more times;
- dash runs: answers whose reply degrades into dashes and quote marks (`mark_run`: 4 or more within
  48 characters);
- copy rate: share of answer bytes inside a verbatim match of 64 or more bytes to the train split;
- on-topic rate: answers whose first sentence of model-written text (after the framed opening
  words, which always name the subject) names the subject (a word of 4+ letters of its title), or,
  when the subject's article is in the train split, has at least half of its 4+ letter words in
  that article (`on_topic`). Reported separately for subjects in and not in the train split.
- names subject (issue 23): answers whose reply, after the opening chat writes, names the subject in
  its first SUBJECT_WINDOW characters (`names_subject`: a reply word starting with a word of 4+
  letters of the subject, case-insensitive; a subject with no such word, "Tea", needs the word
  itself). Reported for free answers (no article recalled) and recalled answers apart; the table's
  transformer row is the same measure on the judge's own answers (free: it has no recall), same
  questions, same framing, same MAX_BYTES and cut; the real leads' row, on real text after the
  opening chat would write for it (its words through the first is/are/was/were): how often an
  article names its subject again on its own. `on_subject` in the JSON sets them side by side.
- grounded sentences (issue 23, drift): for recalled answers, the share of the reply's sentences
  (`sentences`: split at chat's sentence ends and at newlines) that are grounded in the recalled
  article (`grounded`: at least half of the sentence's content words, 4+ letters and not in _STOP,
  occur in the article's whole text in the train split; a sentence with no content word is not
  counted), pooled over the row's recalled answers; and the share of recalled answers with at least
  90% of their sentences grounded.
It writes bench/results/language_quality.json and bench/ANSWERS.md and prints the table. Each row
of the JSON keeps its answers' own scores (`per_answer`: prompt, judge bpb, names subject).

`paired --json J --rows A,B` compares two rows of a judge's JSON answer by answer: the mean of
A - B in judge bpb and in names-subject over the prompts both answered, with a 90% interval from
10,000 bootstrap resamples of the prompts (a row's answers share their prompts with the other's:
the pairing removes the questions' own spread).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# (question, whether its subject's article is in the wikibench train split: checked, and reported)
PROMPTS = [
    ("What is hydrogen?", True), ("Tell me about taiko", True), ("What is an elephant?", True),
    ("What is a giraffe?", True), ("Who was Archimedes?", True), ("Who was Cleopatra?", True),
    ("Tell me about Bulgaria", True), ("What is Madagascar?", True), ("What is uranium?", True),
    ("Tell me about the octopus", True), ("What is a platypus?", True), ("Koala", True),
    ("What is aikido?", True), ("What is a logarithm?", True), ("Tell me about the dodo", True),
    ("What is an enzyme?", True), ("Emperor penguin", True), ("What is a Komodo dragon?", True),
    ("What is metabolism?", True), ("Who was Hippocrates?", True),
    ("Who was Isaac Newton?", False), ("What is the Moon?", False), ("What is a lighthouse?", False),
    ("What is a glacier?", False), ("Tell me about the honey bee", False), ("Who was Albert Einstein?", False),
    ("What is chess?", False), ("Tell me about tea", False), ("What is a bicycle?", False),
    ("What is a piano?", False), ("What is photosynthesis?", False), ("Who was Leonardo da Vinci?", False),
    ("Tell me about Rome", False), ("What is coffee?", False), ("Volcano", False),
    ("What is a river?", False), ("What is Mount Everest?", False), ("Tell me about the Amazon rainforest", False),
    ("What is a windmill?", False), ("Who was Marie Curie?", False),
    # 40 more (2026-12-04), so that a rate over all 80 free answers moves by 1.25 points an answer, not
    # 2.5: general subjects, chosen before any answer to them was seen; the few whose article is in the
    # train split are marked (it holds few general subjects)
    ("What is oxygen?", True), ("What is a frog?", True), ("What is a star?", True), ("What is a castle?", True),
    ("Who was Charles Darwin?", True), ("Who was William Shakespeare?", True),
    ("What is iron?", False), ("What is a tiger?", False), ("What is a wolf?", False), ("Who was Julius Caesar?", False),
    ("Who was Aristotle?", False), ("Tell me about Japan", False), ("Tell me about Egypt", False), ("What is Peru?", False),
    ("What is a shark?", False), ("What is a dolphin?", False), ("What is an owl?", False), ("Crocodile", False),
    ("What is algebra?", False), ("What is astronomy?", False), ("What is the Sun?", False), ("What is Jupiter?", False),
    ("What is a comet?", False), ("What is a telescope?", False), ("What is a computer?", False),
    ("What is a violin?", False), ("What is jazz?", False), ("What is opera?", False), ("Tell me about tennis", False),
    ("What is a cathedral?", False), ("Who was Mozart?", False), ("Who was Galileo Galilei?", False),
    ("Who was Abraham Lincoln?", False), ("Tell me about London", False), ("What is the Nile?", False),
    ("What is cheese?", False), ("What is wine?", False), ("What is a desert?", False), ("Earthquake", False),
    ("What is a hurricane?", False),
]

# rows of cheaplm answers: (label, recall, sampling overrides, generator: history far / new document).
# The first two are chat's defaults (cheaplm.sample.Sampling); the others name every setting they change.
ROWS = [
    ("cheaplm defaults, recall", True, {}, True),
    ("cheaplm defaults, no recall", False, {}, True),
    ("recall, T 0.8 no-repeat 24", True, {"temperature": 0.8, "no_repeat": 24}, True),
    ("recall, T 0.6", True, {"temperature": 0.6}, True),
    ("recall, T 0.8 min-p 0.1 no-repeat 24", True, {"temperature": 0.8, "min_p": 0.1, "no_repeat": 24}, True),
    ("no recall, T 0.8 min-p 0.2 no-repeat 24", False, {"temperature": 0.8, "no_repeat": 24}, True),
    ("no recall, T 0.8 min-p 0 no-repeat 0 max-copy 0", False,
     {"temperature": 0.8, "min_p": 0.0, "no_repeat": 0, "max_copy": 0}, True),
    ("no recall, T 0.8 min-p 0.2 no-repeat 0 max-copy 0", False,
     {"temperature": 0.8, "no_repeat": 0, "max_copy": 0}, True),
    ("no recall, T 0.8 min-p 0.1 no-repeat 24", False, {"temperature": 0.8, "min_p": 0.1, "no_repeat": 24}, True),
    ("no recall, T 0.6 min-p 0.1 no-repeat 24", False, {"temperature": 0.6, "min_p": 0.1, "no_repeat": 24}, True),
    ("no recall, T 0.6", False, {"temperature": 0.6}, True),
    ("no recall, T 0.5 no-repeat 24", False, {"no_repeat": 24}, True),
    ("no recall, T 0.5 no-repeat 12", False, {"no_repeat": 12}, True),
    ("no recall, T 0.4", False, {"temperature": 0.4}, True),
    ("before issue 13 (history recent, self-copy, T 0.8, top-p 0.95, no guards)", False,
     {"temperature": 0.8, "top_p": 0.95, "min_p": 0.0, "no_repeat": 0, "max_copy": 0, "self_copy": True}, False),
    # issue 23: the document words' weight at generation (Sampling.subject; the defaults' is 2 since
    # the run at 01af16d, whose defaults had 1: its JSON's "cheaplm defaults" rows are subject 1 and
    # its "subject 2" rows today's defaults), and a recalled article read by D as the reply's own
    # document or not (chat.ask's join)
    ("no recall, subject 1", False, {"subject": 1.0}, True),
    ("no recall, subject 1.5", False, {"subject": 1.5}, True),
    ("no recall, subject 3", False, {"subject": 3.0}, True),
    ("recall, subject 1", True, {"subject": 1.0}, True),
    ("recall, article not joined to the document words", True, {"join": False, "subject": 1.0}, True),
    # the gain where a word starts a sentence only (Sampling.subject_inside: the gain inside sentences)
    ("no recall, subject 3 at sentence starts, 1 inside", False, {"subject": 3.0, "subject_inside": 1.0}, True),
    ("no recall, subject 5 at sentence starts, 1 inside", False, {"subject": 5.0, "subject_inside": 1.0}, True),
    ("no recall, subject 4 at sentence starts, 1.5 inside", False, {"subject": 4.0, "subject_inside": 1.5}, True),
    # the subject's return (Sampling.subject_drift): the gain rises to subject_return only after that
    # many bytes of reply without a word of the subject, until one comes
    ("no recall, subject 1, 4 after 100 bytes off subject", False,
     {"subject": 1.0, "subject_drift": 100, "subject_return": 4.0}, True),
    ("no recall, subject 1.5, 4 after 100 bytes off subject", False,
     {"subject": 1.5, "subject_drift": 100, "subject_return": 4.0}, True),
    ("no recall, subject 1.5, 3 after 60 bytes off subject", False,
     {"subject": 1.5, "subject_drift": 60, "subject_return": 3.0}, True),
    ("recall, subject 1.5, 4 after 100 bytes off subject", True,
     {"subject": 1.5, "subject_drift": 100, "subject_return": 4.0}, True),
    ("no recall, subject 1, 5 after 60 bytes off subject", False,
     {"subject": 1.0, "subject_drift": 60, "subject_return": 5.0}, True),
    ("no recall, subject 1.5, 4 after 40 bytes off subject", False,
     {"subject": 1.5, "subject_drift": 40, "subject_return": 4.0}, True),
    ("no recall, subject 1.5, 5 after 100 bytes off subject", False,
     {"subject": 1.5, "subject_drift": 100, "subject_return": 5.0}, True),
    ("no recall, subject 2, 4 after 100 bytes off subject", False,
     {"subject": 2.0, "subject_drift": 100, "subject_return": 4.0}, True),
    ("no recall, subject 1.5, 4 after 80 bytes off subject", False,
     {"subject": 1.5, "subject_drift": 80, "subject_return": 4.0}, True),
    ("no recall, subject 1.5, 6 after 120 bytes off subject", False,
     {"subject": 1.5, "subject_drift": 120, "subject_return": 6.0}, True),
    ("no recall, subject 2 (chat's default until 2026-12-04)", False, {"subject": 2.0}, True),
    ("recall, subject 2 (chat's default until 2026-12-04)", True, {"subject": 2.0}, True),
    # the subject's hold (Sampling.subject_hold): a reply that has not named its subject does not end
    # with its paragraph; 24 and 33 are the same settings without it
    ("no recall, subject 1.5, 4 after 100 bytes off subject, held", False,
     {"subject": 1.5, "subject_drift": 100, "subject_return": 4.0, "subject_hold": True}, True),
    ("no recall, subject 2, held", False, {"subject": 2.0, "subject_hold": True}, True),
    # milder: the model as trained until the reply drifts (after the document words' tag fix, 10e528b,
    # the model as trained names its subject in 0.56 of 80 free answers on the 2-minute H200 model)
    ("no recall, subject 1, 4 after 100 bytes off subject, held", False,
     {"subject": 1.0, "subject_drift": 100, "subject_return": 4.0, "subject_hold": True}, True),
    ("no recall, subject 1, 3 after 100 bytes off subject, held", False,
     {"subject": 1.0, "subject_drift": 100, "subject_return": 3.0, "subject_hold": True}, True),
    ("no recall, subject 1.25, 4 after 100 bytes off subject, held", False,
     {"subject": 1.25, "subject_drift": 100, "subject_return": 4.0, "subject_hold": True}, True),
    # the sentence search (Sampling.search): after the first sentence (or 100 bytes), each unit drawn
    # k times and one kept (sample._search); the other settings are row 35's (1.5, 4 after 100, held)
    # or row 37's (subject 1)
    ("no recall, 1.5, 4 after 100, held, search 4", False,
     {"subject": 1.5, "subject_drift": 100, "subject_return": 4.0, "subject_hold": True, "search": 4}, True),
    ("no recall, subject 1, 4 after 100, held, search 4", False,
     {"subject": 1.0, "subject_drift": 100, "subject_return": 4.0, "subject_hold": True, "search": 4}, True),
    ("recall, 1.5, 4 after 100, held, search 4", True,
     {"subject": 1.5, "subject_drift": 100, "subject_return": 4.0, "subject_hold": True, "search": 4}, True),
    ("no recall, 1.5, 4 after 100, held, search 1 (rows 35 and 40's settings without the search)", False,
     {"subject": 1.5, "subject_drift": 100, "subject_return": 4.0, "subject_hold": True, "search": 1}, True),
    ("no recall, 1.5, 4 after 100, held, search 8", False,
     {"subject": 1.5, "subject_drift": 100, "subject_return": 4.0, "subject_hold": True, "search": 8}, True),
    ("no recall, 1.5, 4 after 100, held, search 2", False,
     {"subject": 1.5, "subject_drift": 100, "subject_return": 4.0, "subject_hold": True, "search": 2}, True),
]
TRANSFORMER_ROW = "transformer (the judge itself)"
TRANSFORMER_UNHELD_ROW = "transformer, replies end with their paragraph (no hold)"
LEADS_ROW = "real leads (test split)"
MAX_BYTES = 400  # a soft limit, as chat's --max-bytes: a reply it cuts ends at its last sentence end
SUBJECT_WINDOW = 300  # characters of the reply (after the opening) in which the subject must be named
LOOP_LEN, LOOP_TIMES = 20, 3
COPY_LEN = 64


def git_commit() -> str:
    return os.environ.get("CHEAPLM_COMMIT") or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()


# ---- answers ------------------------------------------------------------------------------------

def gpu_count() -> int:
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
    except OSError:
        return 0
    return len([x for x in listing.splitlines() if x.startswith("GPU")])


def train_missing(args, work: Path, cheaplm: bool = True, judge: bool = True) -> None:
    """Train the cheaplm model and the judge that are asked for and not in WORK yet: side by side on
    two GPUs, one after the other on one (sharing a card would give each fewer minutes of it)."""
    n_gpu = gpu_count()
    jobs = []
    if cheaplm and not (work / "run" / "latest").exists():
        jobs.append(([sys.executable, "-m", "cheaplm.cli", "train", args.split_dir, "--out", str(work / "run"),
                      "--minutes", str(args.minutes), "--checkpoint-minutes", "0"], work / "train.log"))
    if judge and not (work / "judge.pt").exists():
        jobs.append(([sys.executable, str(ROOT / "bench" / "transformer_baseline.py"), "--minutes", str(args.minutes),
                      "--split-dir", args.split_dir, "--test-bytes", "200000", "--save", str(work / "judge.pt"),
                      "--json", str(work / "judge.json")], work / "judge.log"))
    running = []
    for k, (cmd, log) in enumerate(jobs):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(k if n_gpu > 1 else 0))
        t0 = time.perf_counter()
        running.append((subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT), log, t0))
        if n_gpu < 2:
            _wait(running.pop())
    for r in running:
        _wait(r)


def _wait(item) -> None:
    proc, log, t0 = item
    if proc.wait() != 0:
        sys.exit(f"training failed: see {log}")
    print(f"{log.name}: done in {time.perf_counter() - t0:.0f} s", flush=True)


_G = {}


def _answer_task(task):
    """One answer in a forked worker (the model's arrays are the parent's, shared copy-on-write)."""
    import numpy as np

    from cheaplm import chat
    from cheaplm.sample import Generator, Sampling, generate

    row, i = task
    label, recall, over, far = ROWS[row]
    question = PROMPTS[i][0]
    model, history, index = _G["model"], _G["history"], _G["index"]
    t0 = time.perf_counter()
    gen = Generator(model, history, history_far=far)
    over = dict(over)
    join = over.pop("join", True)  # not a sampling setting: chat.ask's
    if "subject" in over:  # a row that names a constant gain measures that gain alone, unless it names a return
        over.setdefault("subject_drift", 0)
        over.setdefault("subject_hold", False)  # rows that name a gain were measured before the hold
        over.setdefault("search", 1)  # and before the search
    # chat's own, not the library's (Sampling's is 1 with no return)
    for key, value in (("subject", chat.SUBJECT), ("subject_drift", chat.SUBJECT_DRIFT),
                       ("subject_return", chat.SUBJECT_RETURN), ("subject_hold", chat.SUBJECT_HOLD),
                       ("search", chat.SEARCH)):
        over.setdefault(key, value)
    lead, source = chat.ask(gen, question, True, 1, index if recall else None, history, join=join)
    t_first = None
    out = []
    sampling = Sampling(**over)
    for piece in generate(gen, np.random.default_rng(i), MAX_BYTES, sampling, stop=chat.reply_done, allow_end=True,
                          opening=lead.encode()):
        if t_first is None:
            t_first = time.perf_counter() - t0
        out.append(piece)
    reply = "".join(out).replace("</doc>", "")
    return {"row": label, "prompt": i, "question": question, "lead": lead, "reply": reply, "source": source,
            "seconds": time.perf_counter() - t0, "first_byte_s": t_first}


def cheaplm_answers(run_dir: Path, workers: int, rows: list[int], mix: str | None = None,
                    questions: int = len(PROMPTS)) -> tuple[list[dict], dict]:
    import multiprocessing as mp

    from cheaplm.checkpoint import load_model
    from cheaplm.recall import load_index

    t0 = time.perf_counter()
    model, history, ckpt = load_model(run_dir, device="cpu")
    if mix:  # another fit of the memory-reader mix (bench/doc_words.py --save-mix): with or without D
        import numpy as np

        with np.load(mix, allow_pickle=False) as z:
            model.reader.mix = z["reader_mix"].astype(np.float32)
            model.reader.mix_doc = z["reader_mix_doc"].astype(np.float32)
    index = load_index(ckpt.parent, history)
    _G.update(model=model, history=history, index=index)
    info = {"checkpoint": str(ckpt), "mix": mix, "history_bytes": int(len(history)), "articles": len(index),
            "load_seconds": time.perf_counter() - t0,
            "in_history": [index.find(chat_title(q)) is not None for q, _ in PROMPTS[:questions]],
            "questions": questions}
    print(f"model loaded in {info['load_seconds']:.0f} s; {len(rows) * questions} answers on {workers} workers",
          flush=True)
    tasks = [(r, i) for r in rows for i in range(questions)]
    answers = []
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(workers) as pool:
        for a in pool.imap(_answer_task, tasks, chunksize=1):
            answers.append(a)
            if len(answers) % 20 == 0 or len(answers) == len(tasks):
                print(f"{len(answers)} answers, {time.perf_counter() - t0:.0f} s", flush=True)
    return answers, info


def chat_title(question: str) -> str:
    from cheaplm.chat import frame

    return frame(question)[0]


def transformer_answers(model, questions: int = len(PROMPTS), hold: bool = True) -> list[dict]:
    """The judge's own answers to the first `questions` PROMPTS, framed as chat frames them, at its
    usual sampling. A reply ends as chat's do: with its paragraph, held open while it has not named
    its subject when chat holds (`hold`: chat.SUBJECT_HOLD; the hold is a rule of when to stop, which
    any model can be given)."""
    import numpy as np
    import torch

    from cheaplm import chat
    from cheaplm.sample import (Sampling, SubjectWatch, draw, filter_probs, finish_thought, subject_words, utf8_after,
                                utf8_allowed)

    s = Sampling(temperature=0.8, top_p=0.95, min_p=0.0, subject_hold=hold)
    out = []
    for i, (question, _) in enumerate(PROMPTS[:questions]):
        title, lead = chat.frame(question)
        ctx = bytearray((chat.header(title, True, 1) + lead).encode())
        watch = SubjectWatch(subject_words(title), s)
        rng = np.random.default_rng(i)
        reply = bytearray()
        pending = b""
        t0 = time.perf_counter()
        done = False
        while len(reply) < MAX_BYTES or pending:
            x = torch.tensor(list(ctx[-1024:]), dtype=torch.long, device=torch_device())[None]
            with torch.no_grad(), torch.autocast(torch_device(), dtype=torch.bfloat16):
                p = torch.softmax(model(x)[0, -1].float(), -1).double().cpu().numpy()
            p = p * utf8_allowed(pending)
            for b in watch.barred(reply):  # a held reply's "</doc>", barred as cheaplm's generate bars it
                p[b] = 0
            y = draw(filter_probs(p, s.temperature, s.top_k, s.top_p, s.min_p), rng)
            ctx.append(y)
            reply.append(y)
            pending = utf8_after(pending, y)
            watch.add(y)
            if not pending and chat.reply_done(reply) and not watch.defers(reply):
                done = True
                break
        text = reply.decode("utf-8", "replace")
        if not done:  # cut by the limit: as cheaplm's generate() cuts, at the last sentence (or word) end
            text = finish_thought(text, before=lead)
        text = text.replace("</doc>", "")
        out.append({"row": TRANSFORMER_ROW if hold else TRANSFORMER_UNHELD_ROW, "prompt": i, "question": question,
                    "lead": lead, "reply": text, "source": None, "seconds": time.perf_counter() - t0, "first_byte_s": None})
    return out


def torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"  # the CPU for a check of this script, not a run


def load_judge(path: Path):
    """The judge saved by transformer_baseline.py --save: its recipe and shape are in the file (an
    older file, a bare state_dict, is the gpt2 recipe's 8 x 512)."""
    from transformer_baseline import load_model

    return load_model(path, torch_device())


def cmd_answers(args) -> None:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.run is None:
        # the judge trains in `judge`, so that each command fits 10 minutes on one GPU; with two it
        # trains here beside cheaplm and `judge` finds it
        train_missing(args, work, cheaplm=True, judge=gpu_count() > 1)
    # one thread per worker process: the answers run in parallel processes. A machine's preset thread
    # counts gave each of 14 workers 16 threads, and an H200 host's 16 cores spent 15 minutes on what
    # takes one. They must be set before numpy and numba are first imported, and a site hook (the GPU
    # machine's) can import numpy before this script runs: so the answering runs in a fresh process
    # started with them set (measured on the H200: 480 answers in 57 s, against none in 4 minutes)
    threads = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    if any(os.environ.get(v) != "1" for v in threads):
        env = dict(os.environ, **{v: "1" for v in threads})
        cmd = [sys.executable, str(Path(__file__).resolve()), "answers", "--run", str(args.run or work / "run"),
               "--work", str(work), "--split-dir", args.split_dir, "--workers", str(args.workers), "--rows", args.rows,
               "--questions", str(args.questions)]
        if args.mix:
            cmd += ["--mix", args.mix]
        sys.exit(subprocess.run(cmd, env=env).returncode)
    rows = [int(r) for r in args.rows.split(",")] if args.rows else list(range(len(ROWS)))
    t0 = time.perf_counter()
    answers, info = cheaplm_answers(Path(args.run) if args.run else work / "run", args.workers, rows, args.mix,
                                    args.questions)
    info["cheaplm_answer_seconds"] = time.perf_counter() - t0
    info.update(commit=git_commit(), date=time.strftime("%Y-%m-%d"), command=" ".join(sys.argv))
    (work / "answers.json").write_text(json.dumps({"info": info, "answers": answers}, indent=1, ensure_ascii=False))
    print(json.dumps(info, indent=1))


# ---- judge --------------------------------------------------------------------------------------

def judge_bits(model, header: str, text: str) -> tuple[float, int]:
    """Bits of `text`'s bytes under the judge, given `header` before it."""
    import torch
    import torch.nn.functional as F

    h, b = header.encode(), text.encode()
    seq = (h + b)[-1024:]
    n_ctx = len(seq) - len(b)
    x = torch.tensor(list(seq), dtype=torch.long, device=torch_device())[None]
    with torch.no_grad(), torch.autocast(torch_device(), dtype=torch.bfloat16):
        lp = F.log_softmax(model(x[:, :-1]).float(), -1)
    tgt = x[0, 1:]
    picked = lp[0].gather(-1, tgt[:, None]).squeeze(-1)
    bits = -picked[max(n_ctx - 1, 0):].double().sum().item() / math.log(2)
    return bits, len(b) - max(0, 1 - n_ctx)


MARKS = frozenset('–—“”‘’"')  # dashes and quote marks (not hyphens or apostrophes: words hold those)
MARK_WINDOW, MARK_RUN = 48, 4


def mark_run(text: str) -> bool:
    """The text degrades into dashes and quote marks: MARK_RUN or more of them within MARK_WINDOW
    characters ("1–1 – – 1 March ... “In the 1–0 mm – – “The"). None of the 80 real leads of the
    wikibench test split does; a date range or a quoted title has two or three."""
    flags = [c in MARKS for c in text]
    have = sum(flags[:MARK_WINDOW])
    if have >= MARK_RUN:
        return True
    for i in range(MARK_WINDOW, len(flags)):
        have += flags[i] - flags[i - MARK_WINDOW]
        if have >= MARK_RUN:
            return True
    return False


def loops(text: str) -> bool:
    from cheaplm.sample import repeats

    return repeats(text.encode(), LOOP_LEN, LOOP_TIMES)


def copy_cover(texts: list[bytes], train, length: int | None = None) -> list:
    """For each text, which of its bytes lie inside a `length`-byte window (COPY_LEN unless given)
    that occurs in `train` (a bool array per text)."""
    n_copy = COPY_LEN if length is None else length
    import numba
    import numpy as np

    windows = {}
    for t in texts:
        for i in range(len(t) - n_copy + 1):
            windows.setdefault(t[i: i + n_copy], len(windows))
    if not windows:
        return [0] * len(texts)
    keys = list(windows)
    arr = np.frombuffer(b"".join(keys), np.uint8).reshape(len(keys), n_copy)
    base = np.uint64(1099511628211)

    @numba.njit(cache=False)
    def hashes(rows, base):
        out = np.zeros(rows.shape[0], np.uint64)
        for r in range(rows.shape[0]):
            h = np.uint64(0)
            for j in range(rows.shape[1]):
                h = h * base + np.uint64(rows[r, j] + 1)
            out[r] = h
        return out

    @numba.njit(cache=False)
    def scan(data, rows, table_h, table_i, mask, base, n, found):
        top = np.uint64(1)
        for _ in range(n - 1):
            top = top * base
        h = np.uint64(0)
        for t in range(data.shape[0]):
            if t >= n:
                h = h - top * np.uint64(data[t - n] + 1)
            h = h * base + np.uint64(data[t] + 1)
            if t + 1 < n:
                continue
            s = np.int64(h & mask)
            while table_i[s] >= 0:
                if table_h[s] == h and not found[table_i[s]]:
                    r = table_i[s]
                    ok = True
                    for j in range(n):
                        if rows[r, j] != data[t + 1 - n + j]:
                            ok = False
                            break
                    if ok:
                        found[r] = True
                s = (s + 1) & mask
        return found

    hs = hashes(arr, base)
    size = 1 << max(4, int(len(keys) * 4).bit_length())
    table_h = np.zeros(size, np.uint64)
    table_i = np.full(size, -1, np.int64)
    mask = np.uint64(size - 1)
    for r, h in enumerate(hs):
        s = int(h & mask)
        while table_i[s] >= 0:
            s = (s + 1) & (size - 1)
        table_h[s], table_i[s] = h, r
    found = scan(np.asarray(train, np.uint8), arr, table_h, table_i, mask, base, n_copy,
                 np.zeros(len(keys), np.bool_))
    out = []
    for t in texts:
        covered = np.zeros(len(t), bool)
        for i in range(len(t) - n_copy + 1):
            if found[windows[t[i: i + n_copy]]]:
                covered[i: i + n_copy] = True
        out.append(covered)
    return out


_STOP = {"with", "from", "that", "this", "they", "were", "have", "been", "their", "which", "about", "what", "there",
         "these", "other", "after", "first", "where", "also", "when", "than", "into", "while", "would", "could"}


def content_words(text: str) -> list[str]:
    import regex

    return [w for w in regex.findall(r"\p{L}{4,}", text.casefold()) if w not in _STOP]


def first_sentence(reply: str) -> str:
    """What the model wrote up to its first sentence end (at least 30 bytes in: 'Dr.' is no end)."""
    import regex

    m = regex.search(r"[.!?](?=\s)|\n", reply[30:])
    return reply if m is None else reply[: 30 + m.end()]


def on_topic(title: str, reply: str, article_words: set | None) -> bool:
    """The first sentence the model wrote names the subject (a 4+ letter word of its title), or, for a
    subject whose article is in the train split, at least half of its 4+ letter words (two at
    least) occur in that article. The framed opening words are not counted: they always name it."""
    words = content_words(first_sentence(reply))
    title_words = set(content_words(title))
    if title_words & set(words) or any(w.startswith(t) for w in words for t in title_words):
        return True
    if article_words is None or len(words) < 2:
        return False
    return sum(w in article_words for w in words) >= len(words) / 2


def _subject_words(title: str) -> tuple[set, set]:
    """(words of 4+ letters of the subject, matched as prefixes; its shorter words, matched whole,
    only when it has no long one)."""
    import regex

    words = regex.findall(r"\p{L}+", title.casefold())
    long = {w for w in words if len(w) >= 4 and w not in _STOP}
    return long, (set() if long else set(words))


def names_subject(title: str, reply: str) -> bool:
    """The reply (what the model wrote after the framed opening) names its subject in its first
    SUBJECT_WINDOW characters: a word there starts with a word of 4+ letters of the subject
    ("elephants", "Bulgarian" name Elephant, Bulgaria), case-insensitive; for a subject with no such
    word ("Tea"), a word there is one of its words, or that word with "s"."""
    import regex

    long, short = _subject_words(title)
    for w in regex.findall(r"\p{L}+", reply[:SUBJECT_WINDOW].casefold()):
        if any(w.startswith(t) for t in long) or w in short or (w.endswith("s") and w[:-1] in short):
            return True
    return False


def sentences(text: str) -> list[str]:
    """`text` split after each sentence end of chat's cut rule (cheaplm.sample.ends_sentence) and
    at each newline; empty pieces dropped."""
    from cheaplm.sample import ends_sentence

    out, start = [], 0
    for j, c in enumerate(text):
        if c == "\n" or (c.isspace() and ends_sentence(text[max(start, j - 48): j])):
            out.append(text[start:j])
            start = j + 1
    out.append(text[start:])
    return [x.strip() for x in out if x.strip()]


def grounded(reply: str, article_words: set) -> tuple[int, int]:
    """(grounded sentences, counted sentences) of the reply: a sentence counts when it has a content
    word (content_words: 4+ letters, not in _STOP) and is grounded when at least half of its content
    words occur in the article (`article_words`: content_words of its text)."""
    n = good = 0
    for s in sentences(reply):
        words = content_words(s)
        if words:
            n += 1
            good += 2 * sum(w in article_words for w in words) >= len(words)
    return good, n


def real_leads(split_dir: Path, n: int) -> list[dict]:
    """The first paragraph (cut at a sentence end under 400 bytes) of n test-split articles, spread over the split."""
    from cheaplm.chat import article_opening
    from cheaplm.recall import build_index
    from cheaplm.shards import load_split

    test = load_split(split_dir, "test")
    index = build_index(test)
    arts = [a for a in index.articles if a.end - a.text > 400]
    pick = [arts[k * len(arts) // n] for k in range(n)]
    out = []
    for a in pick:
        body = bytes(test[a.text: a.text + 2000]).decode("utf-8", "ignore")
        para = body.split("\n", 1)[0]
        if len(para.encode()) > MAX_BYTES:
            cut = para[:MAX_BYTES].rfind(". ")
            para = para[: cut + 1] if cut > 40 else para[:MAX_BYTES]
        # the opening chat would write for it (its words through the first is/are/was/were) is the
        # lead, the rest the reply: names_subject then reads real text as it reads an answer
        opening = article_opening(para.encode(), "")
        out.append({"row": LEADS_ROW, "prompt": None, "question": a.title, "title": a.title,
                    "lead": opening, "reply": para[len(opening):],
                    "header": bytes(test[a.header: a.text]).decode("utf-8", "ignore")})
    return out


def cmd_judge(args) -> None:
    import numpy as np

    from cheaplm import chat
    from cheaplm.recall import build_index
    from cheaplm.shards import load_split

    work = Path(args.work)
    doc = json.loads((work / "answers.json").read_text())
    info = doc["info"]
    questions = info.get("questions", 40)  # an answers.json from before the 80 questions answered 40
    answers = [a for a in doc["answers"] if a["row"] not in (TRANSFORMER_ROW, TRANSFORMER_UNHELD_ROW)]
    model = None
    if not args.no_judge:
        train_missing(args, work, cheaplm=False, judge=True)
        model = load_judge(work / "judge.pt")
        t0 = time.perf_counter()
        answers += transformer_answers(model, questions, hold=chat.SUBJECT_HOLD)
        if chat.SUBJECT_HOLD and args.unheld:  # and as replies ended before the hold, to compare both rules
            answers += transformer_answers(model, questions, hold=False)
        info["transformer_answer_seconds"] = time.perf_counter() - t0
    leads = real_leads(Path(args.split_dir), questions)
    for a in answers:
        title = chat.frame(a["question"])[0]
        a["title"] = title
        a["header"] = chat.header(title, True, 1)
    everything = answers + leads
    for a in everything:
        text = a["lead"] + a["reply"]
        a["judge_bits"], a["judge_bytes"] = judge_bits(model, a["header"], text) if model is not None else (None, None)
        a["loops"] = loops(text)
        a["mark_run"] = mark_run(a["reply"])
    train = load_split(Path(args.split_dir), "train")
    train_index = build_index(train)
    t0 = time.perf_counter()
    covers = copy_cover([(a["lead"] + a["reply"]).encode() for a in everything], train)
    copy_s = time.perf_counter() - t0
    article_words = {}
    for a, c in zip(everything, covers):
        a["copied_bytes"] = int(c.sum())
        a["copied_mask"] = c
        if a["prompt"] is None:  # a real lead: the reference for the subject measure
            a["on_topic"] = None
            a["names_subject"] = names_subject(a["title"], a["reply"])
            continue
        if a["title"] not in article_words:
            art = train_index.find(a["title"])
            article_words[a["title"]] = None if art is None else set(content_words(
                bytes(train[art.text: art.end]).decode("utf-8", "ignore")))
        a["on_topic"] = on_topic(a["title"], a["reply"], article_words[a["title"]])
        a["names_subject"] = names_subject(a["title"], a["reply"])
        if a.get("source"):
            if ("source", a["source"]) not in article_words:
                art = train_index.find(a["source"])
                article_words[("source", a["source"])] = None if art is None else set(content_words(
                    bytes(train[art.text: art.end]).decode("utf-8", "ignore")))
            words = article_words[("source", a["source"])]
            a["grounded"] = None if words is None else grounded(a["reply"], words)
    rows = []
    in_hist = info.get("in_history", [k for _, k in PROMPTS[:questions]])
    for label in dict.fromkeys(a["row"] for a in everything):
        group = [a for a in everything if a["row"] == label]
        text_bytes = sum(len((a["lead"] + a["reply"]).encode()) for a in group)
        judged = model is not None
        row = {"row": label, "answers": len(group),
               "judge_bpb": (sum(a["judge_bits"] for a in group) / max(1, sum(a["judge_bytes"] for a in group))
                             if judged else None),
               "loop_rate": sum(a["loops"] for a in group) / len(group),
               "mark_run_rate": sum(a["mark_run"] for a in group) / len(group),
               "copy_rate": sum(a["copied_bytes"] for a in group) / max(1, text_bytes),
               "mean_bytes": text_bytes / len(group)}
        if group[0]["prompt"] is not None:
            inside = [a for a in group if in_hist[a["prompt"]]]
            outside = [a for a in group if not in_hist[a["prompt"]]]
            row["on_topic_in_train"] = sum(a["on_topic"] for a in inside) / max(1, len(inside))
            row["on_topic_not_in_train"] = sum(a["on_topic"] for a in outside) / max(1, len(outside))
            row["recalled"] = sum(a.get("source") is not None for a in group)
            row.update(subject_rates(group))
            firsts = [a["first_byte_s"] for a in group if a.get("first_byte_s") is not None]
            if firsts:
                row["median_first_byte_s"] = float(np.median(firsts))
        else:
            row["names_subject_free"] = sum(a["names_subject"] for a in group) / len(group)
        if group[0]["prompt"] is not None:  # the real leads have no prompts to pair
            row["per_answer"] = [{"prompt": a["prompt"], "names_subject": bool(a["names_subject"]), "judge_bpb":
                                  None if a["judge_bits"] is None else a["judge_bits"] / max(1, a["judge_bytes"])}
                                 for a in group]
        rows.append(row)
    judge_info = json.loads((work / "judge.json").read_text()) if model is not None and (work / "judge.json").exists() else {}
    result = {"date": time.strftime("%Y-%m-%d"), "commit": git_commit(), "command": " ".join(sys.argv),
              "answers_info": info, "on_subject": on_subject_summary(rows), "judge": {k: judge_info.get(k) for k in ("card", "minutes", "steps", "test_bpb",
                                                                              "commit")},
              "copy_scan_seconds": copy_s, "rows": rows, "prompts": [q for q, _ in PROMPTS[:questions]],
              "in_train_split_as_written": [k for _, k in PROMPTS[:questions]]}
    out_json = Path(args.json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=1))
    write_answers_md(Path(args.md), everything, result)
    print(table(rows))
    s = result["on_subject"]
    print("names its subject: " + ", ".join(f"{k} {_rate(v)}" for k, v in s.items()))


def paired(rows: list[dict], a: str, b: str, resamples: int = 10_000, seed: int = 0) -> dict:
    """Row a minus row b, answer by answer (the prompts both answered): the means of judge bpb and
    of names-subject, each with a 90% bootstrap interval over the prompts."""
    import numpy as np

    by = {r["row"]: {x["prompt"]: x for x in r["per_answer"]} for r in rows if "per_answer" in r}
    prompts = sorted(set(by[a]) & set(by[b]))
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(prompts), size=(resamples, len(prompts)))
    out = {"a": a, "b": b, "answers": len(prompts)}
    for key in ("judge_bpb", "names_subject"):
        if any(by[a][i][key] is None or by[b][i][key] is None for i in prompts):
            continue
        d = np.array([float(by[a][i][key]) - float(by[b][i][key]) for i in prompts])
        means = d[pick].mean(axis=1)
        out[key] = {"mean": float(d.mean()), "lo": float(np.quantile(means, 0.05)),
                    "hi": float(np.quantile(means, 0.95))}
    return out


def cmd_paired(args) -> None:
    rows = json.loads(Path(args.json).read_text())["rows"]
    labels = [r["row"] for r in rows]
    pairs = [p.split(",") for p in args.rows]
    for a, b in pairs:
        a, b = (labels[int(x)] if x.isdigit() else x for x in (a, b))
        r = paired(rows, a, b)
        print(f"{a}  -  {b}  ({r['answers']} answers)")
        for key in ("judge_bpb", "names_subject"):
            if key in r:
                v = r[key]
                print(f"  {key}: {v['mean']:+.3f}  (90%: {v['lo']:+.3f} .. {v['hi']:+.3f})")


def _rate(x) -> str:
    return "—" if x is None else f"{x:.2f}"


def subject_rates(group: list[dict]) -> dict:
    """A row's subject measures: names_subject over its free and its recalled answers, and the
    grounded share of its recalled answers' sentences (pooled), and of those answers with >= 90%."""
    free = [a for a in group if not a.get("source")]
    recalled = [a for a in group if a.get("source")]
    g = [a["grounded"] for a in recalled if a.get("grounded") and a["grounded"][1]]
    return {"names_subject_free": sum(a["names_subject"] for a in free) / len(free) if free else None,
            "names_subject_recalled": sum(a["names_subject"] for a in recalled) / len(recalled) if recalled else None,
            "grounded_sentences": sum(x for x, _ in g) / sum(n for _, n in g) if g else None,
            "grounded_90_answers": sum(x >= 0.9 * n for x, n in g) / len(g) if g else None}


def on_subject_summary(rows: list[dict]) -> dict:
    """cheaplm free / recall / transformer, side by side: chat's defaults without and with recall
    (its recalled answers), and the judge's own answers."""
    by = {r["row"]: r for r in rows}
    return {"cheaplm free": by.get(ROWS[1][0], {}).get("names_subject_free"),
            "cheaplm recall": by.get(ROWS[0][0], {}).get("names_subject_recalled"),
            "transformer": by.get(TRANSFORMER_ROW, {}).get("names_subject_free"),
            "transformer, no hold": by.get(TRANSFORMER_UNHELD_ROW, {}).get("names_subject_free"),
            "real leads": by.get(LEADS_ROW, {}).get("names_subject_free"),
            "cheaplm recall grounded sentences": by.get(ROWS[0][0], {}).get("grounded_sentences")}


def table(rows: list[dict]) -> str:
    lines = ["| row | judge bpb | loop rate | dash runs | copy rate | on-topic (in train) | on-topic (not) "
             "| names subject (free) | names subject (recalled) | grounded sentences (recalled) | mean bytes |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        jb = "—" if r["judge_bpb"] is None else f"{r['judge_bpb']:.3f}"
        lines.append(f"| {r['row']} | {jb} | {r['loop_rate']:.2f} | {r.get('mark_run_rate', 0):.2f} | {r['copy_rate']:.3f} | "
                     f"{_rate(r.get('on_topic_in_train'))} | {_rate(r.get('on_topic_not_in_train'))} | "
                     f"{_rate(r.get('names_subject_free'))} | {_rate(r.get('names_subject_recalled'))} | "
                     f"{_rate(r.get('grounded_sentences'))} | {r['mean_bytes']:.0f} |")
    return "\n".join(lines)


def elide_copies(text: bytes, covered) -> str:
    """The text with each run of bytes copied from the training text (`covered`, copy_cover's) shown
    as "[... N bytes of the training text ...]": the data's text is never written into the repository."""
    out = []
    i = 0
    while i < len(text):
        j = i
        while j < len(text) and bool(covered[j]) == bool(covered[i]):
            j += 1
        if covered[i]:
            out.append(f"[... {j - i} bytes of the training text ...]")
        else:
            out.append(text[i:j].decode("utf-8", "replace"))
        i = j
    return "".join(out).replace("\n", " ").rstrip()


def write_answers_md(path: Path, everything: list[dict], result: dict) -> None:
    lines = ["# Answers (bench/language_quality.py)", "",
             f"Every answer the language-quality benchmark scored, {result['date']}, commit {result['commit']}; "
             f"model {result['answers_info'].get('checkpoint', '?')}. Seeds: the prompt's number. "
             "The framed opening words (given, not written by the model) are in bold; a `from:` note names "
             "the article recall read first. Scores per answer: judge bits per byte, and flags for loops (L) "
             "and 64-byte copies of the train split (C, with the copied share); M: the reply runs into dashes and "
             "quote marks; S: the reply names its subject "
             "in its first 300 characters; G k/n: k of the reply's n sentences grounded in the recalled article. "
             "Stretches copied from the training text (64+ bytes, mostly recall's quotes) are elided, and real "
             "leads are scored, not shown: the data's text stays out of the repository.", ""]
    for label in dict.fromkeys(a["row"] for a in everything):
        lines += [f"## {label}", ""]
        for a in [a for a in everything if a["row"] == label]:
            flags = []
            if a["loops"]:
                flags.append("L")
            if a.get("mark_run"):
                flags.append("M")
            text_len = max(1, len((a["lead"] + a["reply"]).encode()))
            if a["copied_bytes"]:
                flags.append(f"C {a['copied_bytes'] / text_len:.0%}")
            if a.get("names_subject"):
                flags.append("S")
            if a.get("grounded"):
                flags.append(f"G {a['grounded'][0]}/{a['grounded'][1]}")
            score = ("" if a["judge_bits"] is None else f"{a['judge_bits'] / max(1, a['judge_bytes']):.2f} bpb")
            score = ", ".join(x for x in [score, " ".join(flags)] if x) or "-"
            src = f" (from: {a['source']})" if a.get("source") else ""
            q = a["question"]
            if a["prompt"] is None:  # a real lead is the test split's own text: not written into the repo
                lines.append(f"- *{q}* [{score}]: (a real lead, {text_len} bytes; its text stays in the data)")
                continue
            if a["copied_bytes"]:  # quoted from the training text (recall): elided, the rest kept
                text = elide_copies((a["lead"] + a["reply"]).encode(), a["copied_mask"])
                lines.append(f"- *{q}*{src} [{score}]: {text}")
                continue
            reply = a["reply"].replace("\n", " ").rstrip()  # its leading space follows the bold opening
            lines.append(f"- *{q}*{src} [{score}]: **{a['lead']}**{reply}" if a["lead"] else
                         f"- *{q}* [{score}]: {reply}")
        lines.append("")
    path.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("answers")
    a.add_argument("--split-dir", default=str(ROOT / "bench" / "work" / "wikibench"))
    a.add_argument("--work", default=str(ROOT / "bench" / "work" / "lq"))
    a.add_argument("--minutes", type=float, default=5.0)
    a.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    a.add_argument("--run", default=None, help="answer with this trained run instead of training WORK/run")
    a.add_argument("--rows", default="", help="comma-separated row numbers of ROWS (default: all)")
    a.add_argument("--questions", type=int, default=len(PROMPTS), choices=(40, len(PROMPTS)),
                   help="answer the first 40 PROMPTS (the set of the runs before 2026-12-04) or all")
    a.add_argument("--mix", default=None, help="an .npz of reader_mix and reader_mix_doc to answer with "
                   "(bench/doc_words.py --save-mix) instead of the run's own mix")
    j = sub.add_parser("judge")
    j.add_argument("--split-dir", default=str(ROOT / "bench" / "work" / "wikibench"))
    j.add_argument("--work", default=str(ROOT / "bench" / "work" / "lq"))
    j.add_argument("--json", default=str(ROOT / "bench" / "results" / "language_quality.json"))
    j.add_argument("--md", default=str(ROOT / "bench" / "ANSWERS.md"))
    j.add_argument("--minutes", type=float, default=5.0, help="the judge's training minutes, if it is trained here")
    j.add_argument("--unheld", action="store_true",
                   help="also the transformer's answers ended as before the subject's hold (with its paragraph)")
    j.add_argument("--no-judge", action="store_true",
                   help="rates only (no torch, no GPU): no judge, no judge bpb, no transformer answers")
    p = sub.add_parser("paired", help="two rows of a judge's JSON compared answer by answer")
    p.add_argument("--json", required=True, help="a JSON that `judge` wrote")
    p.add_argument("rows", nargs="+", help="pairs A,B: row numbers in the JSON's order, or row labels")
    args = ap.parse_args()
    if args.cmd == "answers":
        cmd_answers(args)
    elif args.cmd == "paired":
        cmd_paired(args)
    else:
        cmd_judge(args)


if __name__ == "__main__":
    main()
