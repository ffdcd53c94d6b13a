"""The `cheaplm` command line: thin wrappers over library functions that tests call directly."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from . import __version__
from .device import NAMES as DEVICE_NAMES
from .progress import stderr_console

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}


class UserError(click.ClickException):
    """Printed as one line `Error: ...`, exit status 1."""


def _fail(exc: Exception) -> None:
    raise UserError(str(exc)) from None


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="cheaplm")
def main() -> None:
    """cheaplm: a cheap byte-level language model for Wikipedia (count tables + match model + learned mixer)."""


@main.command(context_settings=CONTEXT)
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Directory for shards and manifest.json.")
@click.option("--val-fraction", default=0.005, type=click.FloatRange(0, 0.5), help="Share of articles (by title hash) for validation.")
@click.option("--test-fraction", default=0.005, type=click.FloatRange(0, 0.5), help="Share of articles (by title hash) for test.")
@click.option("--shard-mb", default=64, type=click.IntRange(1, 4096), help="Largest shard size in MB.")
@click.option("--keep-markup", is_flag=True, help="Write page text unchanged (raw wikitext) instead of cleaning it.")
@click.option("--workers", default=0, type=click.IntRange(0, 512), help="Cleaning processes (0 = all cores).")
@click.option("--force", is_flag=True, help="Replace --out even if it holds something else.")
@click.option("--max-page-mb", default=16, type=click.IntRange(1, 4096),
              help="Skip (and count as oversized) a page with more than this many Mi characters of text.")
@click.option("--page-seconds", default=60.0, type=click.FloatRange(0, min_open=True),
              help="Skip (and count as timeout) a page whose cleaning takes longer than this.")
def prepare(sources, out, val_fraction, test_fraction, shard_mb, keep_markup, workers, force, max_page_mb,
            page_seconds):
    """Turn Wikipedia dumps into byte shards for training.

    SOURCES are MediaWiki XML dumps (.xml, .xml.bz2, multistream .bz2, .xz, .gz), WikiExtractor
    output, tar archives of wikitext pages, or UTF-8 text files; directories are searched.

    Example: cheaplm prepare simplewiki-latest-pages-articles-multistream.xml.bz2 --out data/simple
    """
    from .prepare import PrepareOptions
    from .prepare import prepare as run_prepare
    from .sources import SourceError

    console = stderr_console()
    opts = PrepareOptions(val_fraction=val_fraction, test_fraction=test_fraction,
                          shard_bytes=shard_mb << 20, keep_markup=keep_markup, workers=workers,
                          max_page_chars=max_page_mb << 20, page_seconds=page_seconds)
    try:
        manifest = run_prepare(list(sources), out, opts, console=console, force=force)
    except SourceError as exc:
        _fail(exc)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (prepare's Terminated)
        import signal

        console.print(f"Interrupted: nothing was written; {out} is as it was. Run the same command again to start over.")
        sys.exit(128 + getattr(exc, "signum", signal.SIGINT))
    if manifest.get("up_to_date"):
        console.print(f"{out} already holds this preparation (same sources and options); nothing to do.")
    print_prepare_summary(console, manifest, out)


def print_prepare_summary(console, manifest: dict, out: Path) -> None:
    table = Table(title=f"prepared {out}", title_justify="left")
    for col in ("source", "format", "pages", "kept", "skipped", "MB in"):
        table.add_column(col, justify="right" if col not in ("source", "format") else "left")
    for s in manifest["sources"]:
        skipped = ", ".join(f"{k} {v:,}" for k, v in s["skipped"].items()) or "-"
        fmt = s["format"] + (f" {s['schema']}" if s.get("schema") else "") + (" (truncated)" if s["truncated"] else "")
        table.add_row(Path(s["path"]).name, fmt, f"{s['pages_read']:,}", f"{s['kept']:,}", skipped,
                      f"{s['bytes_uncompressed'] / 1e6:.1f}")
    console.print(table)
    parts = [f"{split} {info['bytes'] / 1e6:.2f} MB ({info['articles']:,} articles, {len(info['shards'])} shards)"
             for split, info in manifest["splits"].items()]
    console.print("splits: " + "; ".join(parts))
    if "mb_per_s_uncompressed" in manifest:
        console.print(f"{manifest['seconds']:.1f} s, {manifest['mb_per_s_uncompressed']:.1f} MB/s of uncompressed input")
    for s in manifest["sources"]:
        if s["truncated"]:
            console.print(f"warning: {s['path']} ends mid-page (truncated dump); kept the complete pages before the cut")


def parse_size(text: str | None) -> int | None:
    """'20M' -> 20_000_000; plain integers are bytes."""
    if text is None:
        return None
    t = text.strip().upper().rstrip("B")
    mult = {"K": 10**3, "M": 10**6, "G": 10**9}.get(t[-1:], 1)
    try:
        n = int(float(t[:-1] if mult > 1 else t) * mult)
    except (ValueError, OverflowError):  # nan, inf, words
        raise click.BadParameter(f"{text!r} is not a size like 20M, 1G or 500000") from None
    if n < 1:  # eval --max-bytes -1 scored the whole split
        raise click.BadParameter(f"{text!r}: a size must be at least 1 byte")
    return n


def parse_ints(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x, 0) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers") from None


@main.command(context_settings=CONTEXT)
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--out", "run_dir", required=True, type=click.Path(path_type=Path), help="Run directory (checkpoints, metrics).")
# every option below defaults to None, meaning "not given": the library's merge (train.run_configs)
# then takes the --config file's value, else the library's default (shown here in brackets)
@click.option("--device", type=click.Choice(DEVICE_NAMES), default=None, show_default="auto")
@click.option("--minutes", type=float, default=None, help="Budget: wall-clock training minutes.")
@click.option("--bytes", "nbytes", default=None, help="Budget: training bytes to use (e.g. 20M).")
@click.option("--table-bits", type=int, default=None, help="log2 rows per context table [default: a row per 4 training bytes, 16 to 20 on CPU, to 24 on GPU].")
@click.option("--orders", default=None, help="Byte context orders [default: 0,1,2,3,4,5,6,8,12,16,24].")
@click.option("--words", type=int, default=None, help="Word contexts (0-4) [default: 3].")
@click.option("--batch", type=int, default=None, show_default="0",
              help="Mixer positions per step (0: 4096 CPU, 65536 GPU).")
@click.option("--lr", type=float, default=None, show_default="0.004", help="Adam learning rate of the mixer.")
@click.option("--mix-steps", type=click.IntRange(min=0), default=None, show_default="0",
              help="Mixer updates per counted chunk (0: auto, up to 16; 1 trains fastest).")
@click.option("--seed", type=int, default=None, show_default="0")
@click.option("--reader", "reader_opt", default=None, show_default="on",
              help='The learned reader: on, off, or a JSON object of its options, e.g. \'{"hidden": [1024, 512]}\'.')
@click.option("--checkpoint-minutes", type=float, default=None, show_default="5.0",
              help="Minutes between checkpoints (0: only at the end).")
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
              help="JSON file with 'model' and/or 'train' objects (any ModelConfig / TrainConfig field, e.g. "
                   "a run's own config.json); command-line options win over it, it wins over the defaults.")
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly where it stopped.")
@click.option("--dry-run", is_flag=True, help="Print the plan (host and GPU memory at the phase that holds the most, per "
              "part, the run directory's disk, each phase's time) and exit, writing nothing; with --resume, the plan for continuing.")
@click.option("--gpus", default=None, show_default="1",
              help="GPUs to train one model on: a number or 'all' (one process each, NCCL; needs CuPy: "
                   "pip install 'cheaplm[multigpu]'). Under torchrun or srun the launcher's world is used.")
def train(data_dir, run_dir, device, minutes, nbytes, table_bits, orders, words, batch, lr, mix_steps, seed,
          reader_opt, checkpoint_minutes, config_file, resume, dry_run, gpus):
    """Train a model on prepared shards.

    Example: cheaplm train data/simple --out runs/simple --minutes 10 --dry-run
    (on several GPUs: cheaplm train data/wiki --out runs/wiki --minutes 5 --gpus all)
    """
    from .checkpoint import CheckpointError
    from .comm import CommError, connect
    from .device import Device, DeviceError
    from .launch import launch, world_for
    from .options import read_config
    from .train import TrainError, run_configs
    from .train import train as run_train

    console = stderr_console()
    comm = None
    if not dry_run:  # a dry run plans in one process
        try:
            world, start = world_for(gpus, device)
            if start:
                sys.exit(launch(start, sys.argv[1:]))
            comm = connect(world)  # before anything asks numba for a GPU: it picks GPU LOCAL_RANK
        except CommError as exc:
            _fail(exc)
    model_flags = {key: val for key, val in (("table_bits", table_bits), ("orders", parse_ints(orders)),
                                             ("words", words),
                                             ("reader", None if reader_opt is None else parse_reader(reader_opt)))
                   if val is not None}
    train_flags = {key: val for key, val in (("device", device), ("minutes", minutes), ("bytes", parse_size(nbytes)),
                                             ("batch", batch), ("lr", lr), ("mix_steps", mix_steps), ("seed", seed),
                                             ("checkpoint_minutes", checkpoint_minutes))
                   if val is not None}
    try:
        file = read_config(config_file) if config_file is not None else None
        model_cfg, tc = run_configs(file, model_flags, train_flags, resume=resume)
        if comm is not None and comm.size > 1 and not Device(tc.device).gpu:
            raise CommError(f"{comm.size} processes train on GPUs (NCCL); this one found none")
        summary = run_train(data_dir, run_dir, model_cfg, tc, resume=resume, log=console.print, dry_run=dry_run,
                            comm=comm)
        if dry_run or (comm is not None and comm.rank > 0):  # rank 0 reports for the run
            return
    except (TrainError, CheckpointError, DeviceError, CommError, ValueError, TypeError) as exc:
        _fail(exc)
    except KeyboardInterrupt:  # outside the training loop (which checkpoints and stops instead)
        try:
            latest = (Path(run_dir) / "latest").read_text().strip()
        except OSError:
            latest = None
        console.print(f"Interrupted: {run_dir}/{latest} is the latest complete checkpoint; continue with --resume"
                      if latest else f"Interrupted before the first checkpoint: nothing in {run_dir} to resume",
                      soft_wrap=True)
        sys.exit(130)
    if summary.get("finished"):  # --resume of a finished run: said so in one line, wrote nothing
        return
    how = f"stopped by {summary['stopped']}; resume with --resume" if summary["stopped"] else "done"
    val = "-" if summary["val_bpb"] is None else f"{summary['val_bpb']:.4f}"
    console.print(f"{how}: {summary['steps']:,} steps, {summary['counted_bytes'] / 1e6:.1f} MB counted in "
                  f"{summary['elapsed']:.0f} s; val {val} bpb; checkpoint in {run_dir}")
    if summary["stopped"]:
        sys.exit(130)


def parse_reader(text: str) -> dict:
    """--reader: 'on' (the device's defaults), 'off', or a JSON object of reader options."""
    import json

    if text in ("on", "off"):
        return {"on": text == "on"}
    try:
        opts = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not on, off or a JSON object ({exc.msg})", param_hint="--reader") from None
    if not isinstance(opts, dict):
        raise click.BadParameter("not on, off or a JSON object", param_hint="--reader")
    return {"on": True, **opts}


@main.command("eval", context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--split", default="test", type=click.Choice(["train", "val", "test"]))
@click.option("--max-bytes", default=None, help="Score only the first N bytes of the split (e.g. 1M).")
@click.option("--adaptive", is_flag=True, help="Also add scored bytes to the count tables (online, like a compressor).")
@click.option("--device", type=click.Choice(DEVICE_NAMES), default="auto")
def eval_cmd(run_dir, data_dir, split, max_bytes, adaptive, device):
    """Print bits per byte of a trained model on a split. RUN_DIR's latest checkpoint is scored, or
    the checkpoint RUN_DIR names when it is one (RUN/ckpt-N).

    Example: cheaplm eval runs/simple data/simple --split test
    """
    from .checkpoint import CheckpointError, find_checkpoint, load_model
    from .device import DeviceError, pick
    from .shards import ShardError, load_split, require_split

    console = stderr_console()
    try:
        limit = parse_size(max_bytes)
        dev = pick(device)
        require_split(data_dir, split)  # from the manifest alone, before gigabytes of model are read
        model, history, ckpt = load_model(run_dir, device=dev, ckpt=find_checkpoint(run_dir))
        stream = load_split(data_dir, split, limit=limit)
        result = model.score(history, stream, adaptive=adaptive)
    except (CheckpointError, ShardError, DeviceError) as exc:
        _fail(exc)
    parts = (f"reader {result['reader_seconds']:.1f} s, memory {result['memory_seconds']:.1f} s, "
             if model.reader is not None else "")
    console.print(f"{ckpt.name} on {data_dir} {split}: {result['bytes']:,} bytes in {result['seconds']:.1f} s "
                  f"({parts}{result['bytes_per_s'] / 1e3:.0f} kB/s){' adaptive' if adaptive else ''}")
    click.echo(f"{result['bpb']:.4f}")


def sampling_options(f):
    """Options shared by `sample` and `chat`; their defaults are the library's (sample.Sampling)."""
    from .sample import Sampling

    d = Sampling()
    opts = [
        click.option("--max-bytes", default=400, type=click.IntRange(1, 10_000_000),
                     help="Most bytes per reply, a soft limit: a reply it cuts ends at its last sentence end "
                     "(at its last word end if it has none), never inside a word."),
        click.option("--temperature", default=d.temperature, type=float, help="0 = greedy; higher = more random."),
        click.option("--top-k", default=d.top_k, type=click.IntRange(0, 256), help="Keep the k most likely bytes (0 = all)."),
        click.option("--top-p", default=d.top_p, type=float, help="Nucleus: keep the smallest set of bytes with this much probability."),
        click.option("--min-p", default=d.min_p, type=float,
                     help="Drop bytes less likely than this fraction of the most likely byte (0 = off)."),
        click.option("--no-repeat", default=d.no_repeat, type=int,
                     help="Never draw a byte that repeats a string of this many bytes already in the reply (0 = off)."),
        click.option("--max-copy", default=d.max_copy, type=int,
                     help="Never draw a byte that continues a verbatim copy of this many bytes of the training text (0 = off)."),
        click.option("--subject", default=None, type=float,
                     help="Weight of the document's own words (its title, a recalled article) in the mix, times this "
                     "(1 = as trained; more holds the reply to its subject) [default: 1.5 for chat, 1 for sample]."),
        click.option("--subject-drift", default=None, type=int,
                     help="chat: after this many bytes of reply that do not name the subject, the weight becomes "
                     "--subject-return until a word does (0 = off) [default: 100 for chat; sample has no subject]."),
        click.option("--subject-return", default=d.subject_return, type=float,
                     help="chat: the document words' weight while the reply is off its subject (see --subject-drift)."),
        click.option("--subject-hold/--no-subject-hold", default=None,
                     help="chat: a reply that has not named its subject does not end with its paragraph or its "
                     "article (it goes on until it names it, or to --max-bytes) [default: on; sample has no subject]."),
        click.option("--search", default=None, type=int,
                     help="After the reply's first sentence (or 100 bytes), draw each sentence (or 100 bytes of a "
                     "run-on one) this many times and keep one: not cut by --max-bytes, no word twice in a row nor a "
                     "phrase a third time, naming the subject where the reply needs it, then the likeliest per byte; "
                     "a word that repeats the one before is drawn again (1 = off) [default: 4 for chat, 1 for sample]."),
        click.option("--seed", default=None, type=int, help="Random seed [default: random, printed to stderr]."),
        click.option("--device", type=click.Choice(DEVICE_NAMES), default="auto",
                     help="Generation runs on the CPU twin (one byte at a time); cuda is accepted and falls back."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _sampling(temperature: float, top_k: int, top_p: float, min_p: float, no_repeat: int, max_copy: int,
              subject: float, subject_drift: int = 0, subject_return: float = 4.0, subject_hold: bool = False,
              search: int = 1):
    from .sample import Sampling

    try:
        return Sampling(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, no_repeat=no_repeat,
                        max_copy=max_copy, subject=subject, subject_drift=subject_drift,
                        subject_return=subject_return, subject_hold=subject_hold, search=search).check()
    except ValueError as exc:
        _fail(exc)


def _load_generator(run_dir: Path, device: str, own_index: bool = True):
    """The model of RUN_DIR's latest checkpoint, or of the checkpoint RUN_DIR is (RUN/ckpt-N), and a
    generator over it (which writes the model's match index unless own_index is False: see Generator)."""
    from .checkpoint import CheckpointError, find_checkpoint, load_model
    from .device import DeviceError, pick
    from .sample import Generator

    try:
        pick(device)  # an explicit --device cuda without a GPU is an error
        model, history, ckpt = load_model(run_dir, device="cpu", ckpt=find_checkpoint(run_dir))
    except (CheckpointError, DeviceError) as exc:
        _fail(exc)
    return Generator(model, history, own_index=own_index), ckpt


def _seed(seed, console) -> int:
    import secrets

    if seed is None:
        seed = secrets.randbits(31)
    console.print(f"seed {seed}")
    return seed


@main.command(context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--prompt", default=None, help="Text to continue.")
@click.option("--prompt-file", type=click.Path(path_type=Path), default=None, help="Read the prompt from a file.")
@click.option("--num-samples", default=1, type=click.IntRange(1, 1000), help="Independent continuations of the prompt.")
@sampling_options
def sample(run_dir, prompt, prompt_file, num_samples, max_bytes, temperature, top_k, top_p, min_p, no_repeat, max_copy,
           subject, subject_drift, subject_return, subject_hold, search, seed, device):
    """Continue a prompt (from --prompt, --prompt-file or stdin); text streams to stdout. RUN_DIR may
    also be one of its checkpoints (RUN/ckpt-N) instead of the latest.

    Example: cheaplm sample runs/simple --prompt "The river" --max-bytes 300 --seed 1
    """
    import numpy as np

    from .sample import generate

    console = stderr_console()
    sampling = _sampling(temperature, top_k, top_p, min_p, no_repeat, max_copy, 1.0 if subject is None else subject,
                         subject_drift or 0, subject_return, False, 1 if search is None else search)
    if prompt is not None and prompt_file is not None:
        raise UserError("give --prompt or --prompt-file, not both")
    if prompt is not None:
        data = prompt.encode("utf-8", errors="surrogateescape")
    elif prompt_file is not None:
        try:
            data = Path(prompt_file).read_bytes()
        except OSError as exc:
            raise UserError(f"{prompt_file}: cannot read ({exc.strerror})") from None
    elif not sys.stdin.isatty():
        data = sys.stdin.buffer.read()
    else:
        data = b""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"the prompt is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None
    seed = _seed(seed, console)
    gen0, ckpt = _load_generator(run_dir, device, own_index=num_samples == 1)  # _fork reads the pristine index
    rng = np.random.default_rng(seed)
    out = sys.stdout
    for k in range(num_samples):
        gen = gen0 if num_samples == 1 else _fork(gen0)
        gen.feed(data)
        if num_samples > 1:
            out.write(f"--- sample {k + 1} ---\n")
        out.write(data.decode("utf-8"))
        out.flush()
        try:
            for piece in generate(gen, rng, max_bytes, sampling):
                out.write(piece)
                out.flush()
        except KeyboardInterrupt:
            out.write("\n")
            sys.exit(130)
        out.write("\n")
        out.flush()


def _fork(gen):
    """A fresh stream over the same model and history (the model's arrays are shared, read-only)."""
    from .sample import Generator

    return Generator(gen.model, gen.buf[: gen.h])


@main.command(context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--raw", is_flag=True, help="Continue your text exactly, with no encyclopedic framing.")
@click.option("--recall/--no-recall", default=True,
              help="When a question names an article of the training text, read that article before answering.")
@sampling_options
def chat(run_dir, raw, recall, max_bytes, temperature, top_k, top_p, min_p, no_repeat, max_copy, subject,
         subject_drift, subject_return, subject_hold, search, seed, device):
    """Talk to a model: each line you type is framed as the start of an encyclopedia article and
    the model continues it. With recall (the default) a question whose subject is the title of an
    article in the training text gets that article's lead read first (a dim `from: TITLE` line on
    stderr says so). Commands: exit, quit, Ctrl-D to leave; Ctrl-C stops a reply;
    !multi ... !end for several lines; !raw to toggle framing.

    Example: cheaplm chat runs/simple --temperature 0.7
    """
    from .chat import SEARCH, SUBJECT, SUBJECT_DRIFT, SUBJECT_HOLD, run_chat
    from .recall import load_index

    console = stderr_console()
    sampling = _sampling(temperature, top_k, top_p, min_p, no_repeat, max_copy, SUBJECT if subject is None else subject,
                         SUBJECT_DRIFT if subject_drift is None else subject_drift, subject_return,
                         SUBJECT_HOLD if subject_hold is None else subject_hold, SEARCH if search is None else search)
    seed = _seed(seed, console)
    with console.status("loading the model…"):
        gen, ckpt = _load_generator(run_dir, device)
        index = load_index(ckpt.parent, gen.buf[: gen.h]) if recall else None
    sys.exit(run_chat(gen, ckpt, console, raw=raw, seed=seed, max_bytes=max_bytes, sampling=sampling, index=index))


if __name__ == "__main__":
    main()
