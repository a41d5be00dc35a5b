"""Folders of images -> one token file: streaming, batched, with bad files reported and skipped.

Image decoding and center-cropping run in DataLoader workers (`workers` > 0); the main
process batches the crops, runs the tokenizer, and appends rows to a temporary raw file.
Only when every input has been seen is the final .npy/.npz (and its manifest) written and
renamed into place, so an interrupted or failed run leaves no partial output.
"""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .errors import ImageError, TitokError
from .preprocess import iter_image_files, load_image
from .token_file import manifest_path, model_header, save_tokens, token_dtype

Progress = Callable[[int, "int | None"], None]


@dataclass
class EncodeResult:
    """What an encode run produced: rows written and the inputs that were skipped (path, reason)."""

    output: Path
    manifest: Path
    count: int
    failures: list[tuple[str, str]] = field(default_factory=list)
    written: bool = True


class _CropStream(IterableDataset):
    """Yields (index, name, uint8 [3,S,S] crop or None, failure reason) in input order.

    Worker w of W handles the inputs whose index is w mod W; the DataLoader reads workers
    round-robin, so the merged stream keeps the sorted input order.
    """

    def __init__(self, inputs: Sequence[str], size: int, exif_transpose: bool) -> None:
        self.inputs = list(inputs)
        self.size = size
        self.exif_transpose = exif_transpose

    def __iter__(self) -> Iterator[tuple[int, str, torch.Tensor | None, str]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        for i, (path, name) in enumerate(iter_image_files(self.inputs)):
            if i % nw != wid:
                continue
            try:
                img = load_image(path, self.size, exif_transpose=self.exif_transpose)
                arr = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()  # (3, S, S)
                yield i, name, arr, ""
            except ImageError as exc:
                yield i, name, None, exc.reason


def count_inputs(inputs: Sequence[str]) -> int:
    """Number of candidate files (a streaming walk; nothing is kept)."""
    return sum(1 for _ in iter_image_files(inputs))


def encode_files(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    tokenizer,
    *,
    batch_size: int = 16,
    workers: int = 0,
    strict: bool = False,
    exif_transpose: bool = False,
    progress: Progress | None = None,
) -> EncodeResult:
    """Encode every image under `inputs` into `output` (.npy or .npz) plus its manifest.

    Bad files are skipped and listed in the result (and the manifest); with `strict` the
    first one raises its ImageError and nothing is written.
    """
    output = Path(output)
    if output.suffix not in (".npy", ".npz"):
        raise TitokError(f"{output}: output must end in .npy or .npz")
    if batch_size < 1:
        raise TitokError("batch size must be at least 1")
    inputs = [os.fspath(p) for p in inputs]
    total = count_inputs(inputs)  # also raises ImageError for a missing input path
    if total == 0:
        raise TitokError(f"no image files found in {', '.join(inputs)}")
    cfg = tokenizer.config
    device = tokenizer.device
    dtype = token_dtype(None if cfg.is_vae else cfg.codebook_size)
    row_shape = (cfg.token_size, cfg.num_latent_tokens) if cfg.is_vae else (cfg.num_latent_tokens,)

    stream = _CropStream(inputs, cfg.image_size, exif_transpose)
    loader = DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    names: list[str] = []
    failures: list[tuple[str, str]] = []
    pending: list[torch.Tensor] = []
    pending_names: list[str] = []
    done = 0

    output.parent.mkdir(parents=True, exist_ok=True)
    fd, raw_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".rows", dir=output.parent)
    raw_path = Path(raw_name)
    try:
        with os.fdopen(fd, "wb") as raw:

            def flush() -> None:
                batch = torch.stack(pending).to(device, non_blocking=True)  # (B, 3, S, S) uint8
                images = batch.float() / 255.0  # same float32 division as the official pipeline
                out = tokenizer.encode(images)  # (B, K) ids or (B, C, K) latents
                raw.write(np.ascontiguousarray(out.cpu().numpy().astype(dtype, copy=False)).tobytes())
                names.extend(pending_names)
                pending.clear()
                pending_names.clear()

            for _, name, crop, reason in loader:
                done += 1
                if crop is None:
                    if strict:
                        raise ImageError(name, reason)
                    failures.append((name, reason))
                else:
                    pending.append(crop)
                    pending_names.append(name)
                    if len(pending) >= batch_size:
                        flush()
                if progress is not None:
                    progress(done, total)
            if pending:
                flush()

        result = EncodeResult(output=output, manifest=manifest_path(output), count=len(names), failures=failures)
        if not names:
            result.written = False
            return result
        header = {
            "tool": f"titok-cli {_version()}",
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": model_header(tokenizer),
            "preprocessing": {
                "method": "official ADM center crop (BOX halving, BICUBIC resize, floor-offset crop), /255 float32",
                "image_size": cfg.image_size,
                "exif_transpose": exif_transpose,
            },
            "compute_dtype": str(tokenizer.dtype).replace("torch.", ""),
            "device": str(device),
            "inputs": inputs,
        }
        rows = np.memmap(raw_path, dtype=dtype, mode="r", shape=(len(names), *row_shape))
        save_tokens(output, rows, header, names, failures=failures)
        del rows
        return result
    finally:
        raw_path.unlink(missing_ok=True)


def _version() -> str:
    from . import __version__

    return __version__
