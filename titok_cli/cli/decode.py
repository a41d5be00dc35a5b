"""`titok decode`: a token file -> one PNG per row (and optionally a contact sheet)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import (
    BatchOpt,
    DeviceOpt,
    DtypeOpt,
    GridOpt,
    HelpOpt,
    JsonOpt,
    OverwriteOpt,
    PresetOpt,
    QuietOpt,
    device_and_dtype,
    plural,
    print_json,
    progress_bar,
    say,
    usage_error,
    warn,
)

def decode(
    tokens: Annotated[Path, typer.Argument(metavar="TOKENS", help="Token file (.npy, .npz or .tar shard) from `titok encode`.",
                                           show_default=False)],  # fmt: skip
    output: Annotated[Path, typer.Option("--output", "-o", metavar="OUTDIR", help="Folder for the PNG files.",
                                         file_okay=False, show_default=False)],  # fmt: skip
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", metavar="NAME",
                     help="Tokenizer to decode with [default: the one named in the manifest]."),
    ] = None,  # fmt: skip
    preset: PresetOpt = None,
    grid: GridOpt = None,
    batch_size: BatchOpt = 16,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
    _help: HelpOpt = False,
) -> None:
    """Decode a token file back to images: one PNG per row, named after its source image.

    The model comes from the manifest beside the file unless --model is given. Token ids out of
    range, a wrong token count or dtype, or a file made for another model are refused before
    anything is written; so is an OUTDIR that already holds files, unless --overwrite. Pixels
    are clamped to [0,1] and truncated to 8 bits, as officially.

    Example:  titok decode tokens.npy -o decoded/ --grid sheet.png
    """
    from titok_cli import load_tokenizer, load_tokens
    from titok_cli.decode_job import GRID_LIMIT, decode_to_pngs, model_source_from_header, same_model
    from titok_cli.outputs import check_output, check_output_file

    check_output_file(grid, (".png",), "--grid")
    if output.exists() and not output.is_dir():
        raise usage_error(f"{output} exists and is not a folder")
    dev, dt = device_and_dtype(device, dtype)
    tf = load_tokens(tokens, as_stored=True)  # memory-mapped .npy: rows are read batch by batch
    source = model or model_source_from_header(tf.header)
    if source is None:
        raise usage_error(f"{tokens} has no manifest naming its model; pass --model")
    check_output(output, overwrite)
    if model is None and preset is None:  # a file encoded from a lone weights file + preset
        preset = (tf.header.get("model") or {}).get("preset")
    tok = load_tokenizer(source, device=dev, dtype=dt, preset=preset)
    described = tok.source.describe()  # type: ignore[attr-defined]
    if model is not None and same_model(tf.header, described) is False:
        recorded = tf.header["model"]
        warn(f"{tokens} was made with {recorded.get('name') or recorded.get('repo')}; decoding with {model}")
    n = len(tf.tokens)
    if grid is not None and n > GRID_LIMIT:
        warn(f"--grid shows the first {GRID_LIMIT} of {n} images")
    with progress_bar("decoding", n, quiet or json_output) as update:
        result = decode_to_pngs(tf, tok, output, batch_size=batch_size, progress=update,
                                keep=min(n, GRID_LIMIT) if grid is not None else 0)  # fmt: skip
    if grid is not None and result.sheet is not None:
        from titok_cli.png import contact_sheet, save_png

        save_png(contact_sheet(result.sheet), grid)
    if json_output:
        print_json({"input": str(tokens), "model": described, "count": len(result.images), "output": str(output),
                    "images": [str(p) for p in result.images], "grid": str(grid) if grid else None})  # fmt: skip
        return
    say(f"{plural(len(result.images), 'image')} -> {output}/" + (f", grid -> {grid}" if grid else ""), quiet)
