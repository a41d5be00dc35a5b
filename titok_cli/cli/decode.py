"""`titok decode`: a token file -> one PNG per row (and optionally a contact sheet)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .common import (
    BatchOpt,
    DeviceOpt,
    DtypeOpt,
    GridOpt,
    JsonOpt,
    PngWriter,
    QuietOpt,
    check_output_file,
    contact_sheet,
    device_and_dtype,
    plural,
    print_json,
    progress_bar,
    save_png,
    say,
    usage_error,
    warn,
)

if TYPE_CHECKING:  # pragma: no cover
    from titok_cli.token_file import TokenFile

GRID_LIMIT = 1024  # a contact sheet of more images than this is not useful to look at


def png_names(names: list[str] | None, count: int) -> list[PurePosixPath]:
    """Output file per row: the source name with .png (`a/b.jpg` -> `a/b.png`), else `000123.png`.

    Names that would leave the output folder are refused; rows whose names collide get
    `_row<i>` appended so no PNG overwrites another.
    """
    from titok_cli.errors import TokenFileError

    if names is None:
        width = max(6, len(str(max(count - 1, 0))))
        return [PurePosixPath(f"{i:0{width}d}.png") for i in range(count)]
    targets = []
    for name in names:
        path = PurePosixPath(name.replace("\\", "/"))
        parts = [p for p in path.parts if p not in ("", ".")]
        if path.is_absolute() or ".." in parts or not parts or ":" in parts[0]:
            raise TokenFileError(f"manifest row name {name!r} is not a relative path; refusing to write outside OUTDIR")
        targets.append(PurePosixPath(*parts).with_suffix(".png"))
    seen = Counter(targets)
    return [t if seen[t] == 1 else t.with_name(f"{t.stem}_row{i}.png") for i, t in enumerate(targets)]


def _same_model(header: dict[str, Any], chosen: Any) -> bool | None:
    """Whether the manifest's model is the one chosen (None when the manifest does not say)."""
    recorded = header.get("model") or {}
    mine = chosen.source.describe() if hasattr(chosen, "source") else {}
    keys = [k for k in ("local_path", "repo", "name") if recorded.get(k)]
    if not keys:
        return None
    return any(recorded.get(k) == mine.get(k) for k in keys)


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
    grid: GridOpt = None,
    batch_size: BatchOpt = 16,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Decode a token file back to images: one PNG per row, named after its source image.

    The model comes from the manifest beside the file unless --model is given. Token ids out of
    range, a wrong token count or dtype, or a file made for another model are refused before
    anything is written. Pixels are clamped to [0,1] and truncated to 8 bits, as officially.

    Example:  titok decode tokens.npy -o decoded/ --grid sheet.png
    """
    if grid is not None:
        check_output_file(grid, (".png",), "--grid")
    if output.exists() and not output.is_dir():
        raise usage_error(f"{output} exists and is not a folder")
    dev, dt = device_and_dtype(device, dtype)

    from titok_cli.token_file import check_tokens_fit, load_tokens, model_source_from_header

    tf: TokenFile = load_tokens(tokens)
    source = model or model_source_from_header(tf.header)
    if source is None:
        raise usage_error(f"{tokens} has no manifest naming its model; pass --model")

    import numpy as np
    import torch

    from titok_cli import load_tokenizer, to_uint8

    tok = load_tokenizer(source, device=dev, dtype=dt)
    check_tokens_fit(tf, tok)
    targets = png_names(tf.names, len(tf.tokens))
    if model is not None and _same_model(tf.header, tok) is False:
        recorded = tf.header["model"]
        warn(f"{tokens} was made with {recorded.get('name') or recorded.get('repo')}; decoding with {model}")

    n = len(tf.tokens)
    keep_for_grid = min(n, GRID_LIMIT) if grid is not None else 0
    if grid is not None and n > GRID_LIMIT:
        warn(f"--grid shows the first {GRID_LIMIT} of {n} images")
    sheet_rows = []
    written = []
    output.mkdir(parents=True, exist_ok=True)
    with PngWriter() as pngs, progress_bar("decoding", n, quiet or json_output) as update:
        for start in range(0, n, batch_size):
            chunk = np.asarray(tf.tokens[start : start + batch_size])
            batch = torch.from_numpy(chunk.astype(np.float32 if tok.is_vae else np.int64))
            pixels = to_uint8(tok.decode(batch)).cpu().numpy()  # (B, S, S, 3)
            for i, image in enumerate(pixels):
                path = output / targets[start + i]
                pngs.submit(image, path)
                written.append(path)
            if start < keep_for_grid:
                sheet_rows.append(pixels[: keep_for_grid - start])
            update(min(start + batch_size, n), None)
    if grid is not None and sheet_rows:
        save_png(contact_sheet(np.concatenate(sheet_rows)), grid)

    if json_output:
        print_json({
            "input": str(tokens), "model": tok.source.describe(),  # type: ignore[attr-defined]
            "count": len(written), "output": str(output), "images": [str(p) for p in written],
            "grid": str(grid) if grid else None,
        })  # fmt: skip
        return
    say(f"{plural(len(written), 'image')} -> {output}/" + (f", grid -> {grid}" if grid else ""), quiet)
