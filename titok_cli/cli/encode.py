"""`titok encode`: image files and folders -> one token file (.npy/.npz/.tar) plus its manifest."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .common import (
    DEFAULT_WORKERS,
    BatchOpt,
    DeviceOpt,
    DtypeOpt,
    ExifOpt,
    HelpOpt,
    JsonOpt,
    OverwriteOpt,
    PresetOpt,
    QuietOpt,
    WorkersOpt,
    at_least,
    device_and_dtype,
    note,
    plural,
    print_json,
    rank_job_reporting,
    say,
)

if TYPE_CHECKING:  # pragma: no cover
    from titok_cli.encode_job import EncodeResult

SUMMARY_FAILURES = 10  # failures repeated in the closing summary (all of them are in the manifest)


def encode(
    inputs: Annotated[
        list[str],
        typer.Argument(metavar="INPUT", help="Image files and/or folders (searched recursively, in sorted order), "
                       "or webdataset .tar shards.", show_default=False),
    ],  # fmt: skip
    output: Annotated[
        Path,
        typer.Option("--output", "-o", metavar="FILE", show_default=False,
                     help="Token file to write: .npy (ids only), .npz (ids + names) or .tar (webdataset samples)."),
    ],  # fmt: skip
    model: Annotated[
        str, typer.Option("--model", "-m", metavar="NAME",
                          help="Tokenizer: registry name, Hub repo id (owner/name[@rev]) or folder."),
    ] = "titok-l32",  # fmt: skip
    preset: PresetOpt = None,
    batch_size: BatchOpt = 16,
    workers: WorkersOpt = DEFAULT_WORKERS,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    strict: Annotated[bool, typer.Option("--strict", metavar="", help="Stop at the first bad file and write nothing.")] = False,
    exif_transpose: ExifOpt = False,
    shard_size: Annotated[
        int | None,
        typer.Option("--shard-size", metavar="ROWS", callback=at_least(1),
                     help="Rows per output file: OUT-000000.npy, OUT-000001.npy, ..."),
    ] = None,  # fmt: skip
    hflip: Annotated[
        bool,
        typer.Option("--hflip", metavar="", help="Also encode each crop mirrored left-right, kept row for row as "
                     "tokens_hflip (.npz/.tar): flip augmentation for `titok train`."),
    ] = False,  # fmt: skip
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
    _help: HelpOpt = False,
) -> None:
    """Encode images into TiTok tokens: one row per image, in sorted path order.

    Each image gets the official center crop to the model's resolution. VQ models give integer
    ids [N,K] (smallest unsigned dtype that fits the codebook), VAE models float latents
    [N,C,K]. A manifest OUT.manifest.jsonl (e.g. tokens.npy.manifest.jsonl) beside the file
    records each row's source path, the model and the files that failed. Bad files are reported
    as they are found and skipped (exit code 1); a single image file that cannot be read is an
    error, as with --strict. Output appears only when the run is complete;
    an interrupted run resumes when the same command is repeated. An existing OUT is replaced
    only with --overwrite (the same command again reports it as done). Under torchrun every
    rank takes a share and rank 0 writes the file.

    Example:  titok encode photos/ extra.jpg -o tokens.npy --model titok-l32
    """
    from titok_cli import load_tokenizer
    from titok_cli.distributed import dist_info, rank_device
    from titok_cli.encode_job import encode_files
    from titok_cli.outputs import check_output_file

    check_output_file(output, (".npy", ".npz", ".tar"), "output")
    if hflip and output.suffix == ".npy":
        raise typer.BadParameter("needs a .npz or .tar output (a .npy file holds one array)", param_hint="--hflip")
    dev, dt = device_and_dtype(rank_device(device), dtype)
    rank, _ = dist_info()
    tok = load_tokenizer(model, device=dev, dtype=dt, preset=preset)
    hide = quiet or json_output or rank != 0
    with rank_job_reporting("encoding", hide) as reporting:
        result = encode_files(
            inputs, output, tok, batch_size=batch_size, workers=workers, strict=strict or _one_image(inputs),
            exif_transpose=exif_transpose, shard_size=shard_size, overwrite=overwrite, hflip=hflip, **reporting,
        )  # fmt: skip
    if rank != 0:
        return  # rank 0 reports for everyone
    if json_output:
        print_json({**_json_summary(result, tok), "hflip": hflip})
    else:
        _print_summary(result, tok, quiet, hflip)
    if result.failures:
        raise typer.Exit(1)


def _one_image(inputs: list[str]) -> bool:
    """A lone image file: nothing to skip to, so a bad one fails the run with one `error:` line."""
    path = Path(inputs[0])
    return len(inputs) == 1 and path.suffix.lower() != ".tar" and not path.is_dir()


def _json_summary(result: EncodeResult, tok: Any) -> dict[str, Any]:
    outputs = [str(p) for p in result.outputs or [result.output]] if result.written else []
    return {
        "output": str(result.output) if result.written else None, "outputs": outputs,
        "manifest": str(result.manifest) if result.written else None, "count": result.count,
        "tokens_per_image": tok.num_tokens, "resumed_from": result.resumed_from,
        "already_done": result.already_done, "model": tok.source.describe(),
        "failed": [{"path": p, "reason": r} for p, r in result.failures],
    }  # fmt: skip


def _print_summary(result: EncodeResult, tok: Any, quiet: bool, hflip: bool) -> None:
    outputs = [str(p) for p in result.outputs or [result.output]] if result.written else []
    shape = f"{tok.config.token_size}x{tok.num_tokens} latents" if tok.is_vae else f"{tok.num_tokens} tokens"
    each = f"{shape} each" + (f", plus {tok.num_tokens} for its mirror image" if hflip else "")
    if not outputs:
        target = "nothing written"
    elif len(outputs) == 1:
        target = outputs[0]
    else:
        target = f"{outputs[0]} .. {outputs[-1]} ({len(outputs)} files)"
    if result.already_done:
        say(f"already done: {target} holds the {plural(result.count, 'image')} of this same command "
            "(--overwrite to encode again)", quiet)  # fmt: skip
        return
    if result.failures and not quiet:
        shown = result.failures[:SUMMARY_FAILURES]
        more = len(result.failures) - len(shown)
        listing = "; ".join(f"{p} ({r})" for p, r in shown) + (f"; and {more} more" if more else "")
        note(f"{plural(len(result.failures), 'file')} failed: {listing}" + (f" (all in {result.manifest})" if outputs else ""))
    say(f"{plural(result.count, 'image')} -> {target} ({each}), {len(result.failures)} failed", quiet)
