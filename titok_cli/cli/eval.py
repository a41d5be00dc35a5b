"""`titok eval`: measure a tokenizer (`recon`) or generated samples (`gen`, `sweep`) the way the papers do."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from . import eval_gen
from .common import (
    DEFAULT_WORKERS,
    BatchOpt,
    DeviceOpt,
    DtypeOpt,
    ExifOpt,
    HelpOpt,
    JsonOpt,
    PresetOpt,
    QuietOpt,
    WorkersOpt,
    device_and_dtype,
    note,
    out_console,
    plural,
    print_json,
    rank_job_reporting,
    say,
    usage_error,
)
from .decode import OverwriteOpt
from .failures import guarded

if TYPE_CHECKING:  # pragma: no cover
    from titok_cli.recon_result import ReconResult

SUMMARY_FAILURES = 10  # failures repeated in the closing summary (all of them are in the results file)

eval_app = typer.Typer(
    name="eval",
    help="Measure a tokenizer (recon: PSNR, SSIM, LPIPS, rFID, IS, codebook usage) or generated samples "
    "(gen: gFID, IS, precision/recall; sweep: gFID over a grid of sampling settings).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def recon(
    inputs: Annotated[
        list[str],
        typer.Argument(metavar="INPUT", help="Image files and/or folders (searched recursively, in sorted order), "
                       "or webdataset .tar shards.", show_default=False),
    ],  # fmt: skip
    model: Annotated[
        str, typer.Option("--model", "-m", metavar="NAME",
                          help="Tokenizer: registry name, Hub repo id (owner/name[@rev]) or folder."),
    ] = "titok-l32",  # fmt: skip
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE.json", show_default=False,
                     help="Also write the results as JSON (the scratch for resuming goes beside it)."),
    ] = None,  # fmt: skip
    batch_size: BatchOpt = 16,
    workers: WorkersOpt = DEFAULT_WORKERS,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    save_recon: Annotated[
        Path | None,
        typer.Option("--save-recon", metavar="DIR", show_default=False,
                     help="Write the reconstructions there as PNG (input names), exactly the measured pixels."),
    ] = None,  # fmt: skip
    lpips: Annotated[
        list[Path] | None,
        typer.Option("--lpips", metavar="PATH", show_default=False,
                     help="LPIPS weights: a folder holding vgg16-397923af.pth and lpips-v0.1-vgg.pth, or the two "
                     "files (give --lpips twice) [default: the cache, downloaded once when online]."),
    ] = None,  # fmt: skip
    inception: Annotated[
        Path | None,
        typer.Option("--inception", metavar="PATH", show_default=False,
                     help="FID Inception weights (pt_inception-2015-12-05-6726825d.pth) [default: the cache, "
                     "downloaded once when online]."),
    ] = None,  # fmt: skip
    no_lpips: Annotated[bool, typer.Option("--no-lpips", metavar="", help="Skip LPIPS (needs no LPIPS weights).")] = False,
    no_fid: Annotated[bool, typer.Option("--no-fid", metavar="", help="Skip rFID and IS (needs no Inception weights).")] = False,
    exif_transpose: ExifOpt = False,
    overwrite: OverwriteOpt = False,
    preset: PresetOpt = None,
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
    _help: HelpOpt = False,
) -> None:
    """Encode + decode every image and report how close the reconstructions are.

    References are the center crops the model is given; reconstructions are clamped and rounded
    to uint8 as a saved PNG. Reports the mean PSNR, SSIM and LPIPS (VGG) per image, rFID and
    Inception Score (FID Inception, images resized to 299x299), and codebook usage, entropy and
    per-position usage (VQ models). Bad files are reported and skipped (exit code 1). An
    interrupted run resumes when the same command is repeated; under torchrun every rank takes
    a share and rank 0 reports.

    Example:  titok eval recon val/ --model titok-l32 -o recon.json
    """
    from titok_cli.outputs import check_output_file

    if output is not None:
        check_output_file(output, (".json",), "output")
    if lpips and no_lpips:
        raise usage_error("--lpips and --no-lpips contradict each other")
    if inception is not None and no_fid:
        raise usage_error("--inception and --no-fid contradict each other")
    from titok_cli import load_tokenizer
    from titok_cli.distributed import dist_info, rank_device
    from titok_cli.eval_recon import ReconSettings, eval_recon
    from titok_cli.quality.feature_nets import load_feature_nets

    dev, dt = device_and_dtype(rank_device(device), dtype)
    rank, _ = dist_info()
    # The weight files first: a missing one is reported before the tokenizer is loaded.
    nets = load_feature_nets(dev, lpips=not no_lpips, fid=not no_fid, lpips_paths=lpips or (),
                             inception_path=inception)  # fmt: skip
    tok = load_tokenizer(model, device=dev, dtype=dt, preset=preset)
    hide = quiet or json_output or rank != 0
    settings = ReconSettings(batch_size, workers, exif_transpose, save_recon)
    with rank_job_reporting("evaluating", hide) as reporting:
        result = eval_recon(inputs, tok, nets, settings, output=output, overwrite=overwrite, **reporting)
    if rank != 0:
        return  # rank 0 reports for everyone
    if json_output:
        print_json({**result.to_dict(), "output": result.output, "resumed_from": result.resumed_from,
                    "already_done": result.already_done})  # fmt: skip
    else:
        _print_report(result, quiet)
    if result.failures:
        raise typer.Exit(1)


eval_app.command("recon")(guarded(recon))
eval_gen.register(eval_app)


def _print_table(rows: list[tuple[str, str]], quiet: bool) -> None:
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    if not quiet:
        out_console().print(table)


def _rows(result: ReconResult) -> list[tuple[str, str]]:
    """(metric, value) lines of the report table."""
    rows = [("model", str(result.model.get("name"))), ("images", str(result.count)), ("PSNR (dB)", f"{result.psnr:.3f}"), ("SSIM", f"{result.ssim:.4f}")]
    rows.append(("LPIPS (VGG)", "skipped" if result.lpips is None else f"{result.lpips:.4f}"))
    if result.inception_score is None:
        rows.append(("rFID, IS", "skipped"))
    else:
        rows.append(("rFID", "-" if result.rfid is None else f"{result.rfid:.3f}"))
        rows.append(("IS (reconstructions)", "{:.3f} ± {:.3f}".format(*result.inception_score)))
        rows.append(("IS (references)", "{:.3f} ± {:.3f}".format(*result.inception_score_reference)))
    book = result.codebook
    if book is None:
        rows.append(("codebook", result.codebook_note or "-"))
    else:
        rows.append(("codebook usage", f"{book.usage:.2%} ({book.distinct} of {book.codebook_size})"))
        rows.append(("code entropy (bits)", f"{book.entropy_bits:.3f} (perplexity {book.perplexity:.1f})"))
        rows.append(("per-position usage", f"{book.mean_position_usage:.2%} mean over {len(book.position_usage)} positions"))
    return rows


def _print_report(result: ReconResult, quiet: bool) -> None:
    if result.failures and not quiet:
        shown = result.failures[:SUMMARY_FAILURES]
        more = len(result.failures) - len(shown)
        listing = "; ".join(f"{p} ({r})" for p, r in shown) + (f"; and {more} more" if more else "")
        note(f"{plural(len(result.failures), 'file')} failed: {listing}")
    if result.already_done:
        say(f"already done: {result.output} holds the report of this same command (--overwrite to measure again)", quiet)
    _print_table(_rows(result), quiet)
    if result.output is not None:
        say(f"results: {result.output}", quiet)

