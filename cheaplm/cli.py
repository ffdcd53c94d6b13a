"""The `cheaplm` command line: thin wrappers over library functions that tests call directly."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from . import __version__
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
def prepare(sources, out, val_fraction, test_fraction, shard_mb, keep_markup, workers, force):
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
                          shard_bytes=shard_mb << 20, keep_markup=keep_markup, workers=workers)
    try:
        manifest = run_prepare(list(sources), out, opts, console=console, force=force)
    except SourceError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        console.print(f"Interrupted: nothing was written; {out} is as it was. Run the same command again to start over.")
        sys.exit(130)
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


if __name__ == "__main__":
    main()
