"""Images (folders, files or webdataset tar shards) -> token files, at dataset scale.

How a run works (each step in its own module):
  * `inputs` streams the inputs in a deterministic order, numbered; rank r of W (torchrun) and
    DataLoader worker w of N take the inputs whose number is congruent to their slot.
  * `rank_batches` batches the crops, the tokenizer runs on each batch and rows go to the `scratch`
    log in `<output>.partial/rank-<r>-of-<W>/`, committed every few seconds: a rerun of the
    same command continues from the last commit (and says so before it starts).
  * When all ranks are done, rank 0 merges the scratch rows by input number (so the result
    does not depend on the number of ranks or workers) and `token_writers` writes the final
    file(s) and manifests through temp files + rename; then the scratch is removed.
  * `outputs.check_output` applies the overwrite rule first: an existing output is replaced
    only with `overwrite`, and the finished result of the identical run is reported as done.
"""

from __future__ import annotations

import heapq
import json
import os
import shutil
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from .distributed import barrier, dist_info
from .errors import ImageError, TitokError
from .inputs import count_inputs, has_inputs, inputs_changed_since
from .outputs import OutputExistsError, check_output
from .rank_batches import FAILURES_FILE, Item, Progress, RankJob, resume_point, run_batches
from .scratch import Scratch, fingerprint_of, read_jsonl
from .token_file import load_tokens, manifest_path, model_header, token_dtype
from .token_writers import row_writer

SCRATCH_FILES = ("tokens.bin", "rows.jsonl", FAILURES_FILE)
HFLIP_FILE = "tokens_hflip.bin"  # the mirrored crops' ids, row for row with tokens.bin


@dataclass(frozen=True)
class EncodeSettings:
    """How to encode: everything besides the inputs, the output and the model."""

    batch_size: int = 16
    workers: int = 0
    strict: bool = False
    exif_transpose: bool = False
    shard_size: int | None = None
    hflip: bool = False  # also encode each crop mirrored left-right (flip augmentation for `titok train`)

    def check(self) -> None:
        if self.batch_size < 1:
            raise TitokError("batch size must be at least 1")
        if self.workers < 0:
            raise TitokError("workers must be 0 or more")
        if self.shard_size is not None and self.shard_size < 1:
            raise TitokError("shard size must be at least 1")


@dataclass
class EncodeResult:
    """What an encode run produced: rows written and the inputs that were skipped (path, reason)."""

    output: Path
    manifest: Path
    count: int
    failures: list[tuple[str, str]] = field(default_factory=list)
    written: bool = True
    outputs: list[Path] = field(default_factory=list)  # every token file (several with shards)
    resumed_from: int = 0  # inputs already done by an earlier, interrupted run
    already_done: bool = False  # the identical run had finished before: nothing was encoded


def encode_files(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    tokenizer: Any,
    *,
    batch_size: int = 16,
    workers: int = 0,
    strict: bool = False,
    exif_transpose: bool = False,
    progress: Progress | None = None,
    shard_size: int | None = None,
    overwrite: bool = False,
    on_resume: Callable[[int, "int | None"], None] | None = None,
    on_failure: Callable[[str, str], None] | None = None,
    hflip: bool = False,
) -> EncodeResult:
    """Encode every image under `inputs` into `output` (.npy, .npz or .tar) plus its manifest.

    Bad files are skipped, reported to `on_failure(path, reason)` as they are found and listed
    in the result and the manifest; with `strict` the first one raises its ImageError and
    nothing is written. An interrupted run resumes when the same call is repeated, calling
    `on_resume(done, total)` before it starts. An existing output raises OutputExistsError
    unless `overwrite`, or is reported as `already_done` when the identical run made it.
    With `shard_size`, rows go to `<stem>-000000.npy`, ... With `hflip` each crop is also
    encoded mirrored left-right (as the official pre-tokenization does) and the file keeps those
    ids row for row as `tokens_hflip` (.npz/.tar only). Under torchrun every rank calls this;
    rank 0 assembles the one final output.
    """
    settings = EncodeSettings(batch_size, workers, strict, exif_transpose, shard_size, hflip)
    settings.check()
    output = Path(output)
    if output.suffix not in (".npy", ".npz", ".tar"):
        raise TitokError(f"{output}: output must end in .npy, .npz or .tar (webdataset shards)")
    if hflip and output.suffix == ".npy":
        raise TitokError(f"{output}: --hflip needs a .npz or .tar output (a .npy file holds one array)")
    if hflip and tokenizer.config.is_vae:
        raise TitokError("--hflip keeps mirrored token ids for generator training; VAE latents have no ids")
    inputs = [os.fspath(p) for p in inputs]
    rank, world = dist_info()
    header, parts = _describe_run(tokenizer, inputs, settings)
    done = _already_done(output, inputs, settings, header["fingerprint"], overwrite)
    if done is not None:
        return done
    # The full count is a second walk of the tree, paid only when a progress display wants the
    # total; otherwise finding one image is enough to refuse an empty input (and a missing path
    # raises ImageError either way).
    total = count_inputs(inputs) if progress is not None else None
    if total == 0 or (total is None and not has_inputs(inputs)):
        raise TitokError(f"no image files found in {', '.join(inputs)}")

    partial = output.with_name(output.name + ".partial")
    files = SCRATCH_FILES + ((HFLIP_FILE,) if settings.hflip else ())
    scratch = Scratch(partial / f"rank-{rank:05d}-of-{world:05d}", {**parts, "ranks": world}, files)
    resumed_from = resume_point(scratch, rank, world, total, on_resume)
    try:
        if not scratch.state["done"]:
            job = RankJob(inputs, rank, world, tokenizer.config.image_size, settings.batch_size, settings.workers,
                          settings.strict, settings.exif_transpose, progress, total, on_failure)  # fmt: skip
            _encode_rank(scratch, tokenizer, job, settings.hflip)
    except ImageError:
        scratch.close()
        if world == 1:  # a strict failure would recur on rerun: leave nothing behind
            shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        scratch.close()

    barrier()
    result = EncodeResult(output=output, manifest=manifest_path(output), count=0, resumed_from=resumed_from)
    if rank == 0:
        ranks = [partial / f"rank-{r:05d}-of-{world:05d}" for r in range(world)]
        _assemble(ranks, output, header, tokenizer.config, settings, result)
        shutil.rmtree(partial, ignore_errors=True)
    barrier()
    return result


def _describe_run(tokenizer: Any, inputs: list[str], settings: EncodeSettings) -> tuple[dict, dict]:
    """The manifest header and the run's fingerprint parts (what a rerun must match to resume)."""
    from . import __version__

    cfg = tokenizer.config
    header: dict[str, Any] = {
        "tool": f"titok-cli {__version__}",
        "model": model_header(tokenizer),
        "preprocessing": {
            "method": "official ADM center crop (BOX halving, BICUBIC resize, floor-offset crop), /255 float32",
            "image_size": cfg.image_size,
            "exif_transpose": settings.exif_transpose,
            **({"hflip": "each crop also encoded mirrored left-right: tokens_hflip"} if settings.hflip else {}),
        },
        "compute_dtype": str(tokenizer.dtype).replace("torch.", ""),
        "inputs": inputs,
    }
    parts = {
        "model": {"model": header["model"], "compute_dtype": header["compute_dtype"]},
        "inputs": [os.path.abspath(p) for p in inputs],
        "settings": {"preprocessing": header["preprocessing"], "strict": settings.strict,
                     "shard_size": settings.shard_size},  # fmt: skip
        "tool": header["tool"],
    }
    header["fingerprint"] = fingerprint_of(parts)
    return header, parts


def _already_done(output: Path, inputs: list[str], settings: EncodeSettings, fingerprint: str,
                  overwrite: bool) -> EncodeResult | None:  # fmt: skip
    """The overwrite rule for encode: None to go ahead, a result when the identical run is finished."""
    first = output if settings.shard_size is None else output.with_name(f"{output.stem}-{0:06d}{output.suffix}")
    if not check_output(first, overwrite, fingerprint):
        return None
    tf = load_tokens(first, as_stored=True)
    names = set(tf.names or []) | {f["path"] for f in tf.failures}
    outputs = [first]
    if settings.shard_size is not None:
        outputs = [output.with_name(f"{output.stem}-{i:06d}{output.suffix}") for i in range(tf.header.get("num_shards", 1))]
        for extra in outputs[1:]:
            part = load_tokens(extra, as_stored=True)
            names |= set(part.names or []) | {f["path"] for f in part.failures}
            tf.failures = part.failures or tf.failures
    if inputs_changed_since(inputs, min(p.stat().st_mtime_ns for p in outputs), names):
        raise OutputExistsError(f"{first} was made by this command, but its inputs changed since; "
                                "pass --overwrite to re-encode")  # fmt: skip
    count = sum(len(load_tokens(p, as_stored=True).tokens) for p in outputs)
    return EncodeResult(output=first, manifest=manifest_path(first), count=count, outputs=outputs,
                        failures=[(f["path"], f["reason"]) for f in tf.failures], already_done=True)  # fmt: skip


def _encode_rank(scratch: Scratch, tokenizer: Any, job: RankJob, hflip: bool) -> None:
    """This rank's share of the inputs, appended to its scratch log with periodic commits."""
    cfg, device = tokenizer.config, tokenizer.device
    dtype = token_dtype(None if cfg.is_vae else cfg.codebook_size)
    tokens_fh, rows_fh = scratch.handles["tokens.bin"], scratch.handles["rows.jsonl"]

    def ids(batch: torch.Tensor) -> bytes:
        out = tokenizer.encode(batch.float() / 255.0)  # same float32 division as the official pipeline
        return np.ascontiguousarray(out.cpu().numpy().astype(dtype, copy=False)).tobytes()

    def flush(pending: list[Item]) -> None:
        batch = torch.stack([p[3] for p in pending]).to(device, non_blocking=True)  # (B, 3, S, S) uint8
        tokens_fh.write(ids(batch))
        if hflip:  # the mirrored crops as a batch of their own: the same batching as the originals
            scratch.handles[HFLIP_FILE].write(ids(batch.flip(-1)))  # (B, 3, S, S) mirrored along width
        for i, name, label, _ in pending:
            rows_fh.write((json.dumps({"i": i, "path": name, "label": label}) + "\n").encode())

    run_batches(scratch, job, device, flush)


def _assemble(ranks: list[Path], output: Path, header: dict, cfg: Any, settings: EncodeSettings,
              result: EncodeResult) -> None:  # fmt: skip
    """Merge the ranks' committed rows by input number into the final files."""
    shard_size = settings.shard_size
    dtype = token_dtype(None if cfg.is_vae else cfg.codebook_size)
    row_shape = (cfg.token_size, cfg.num_latent_tokens) if cfg.is_vae else (cfg.num_latent_tokens,)
    row_bytes = int(np.prod(row_shape)) * dtype.itemsize
    failures = sorted((f for r in ranks for f in read_jsonl(r / "failures.jsonl")), key=lambda f: f["i"])
    result.failures = [(f["failed"], f["reason"]) for f in failures]
    counts = [json.loads((r / "state.json").read_text())["rows"] for r in ranks]
    total = result.count = sum(counts)
    if total == 0:
        result.written = False
        return

    def rank_rows(folder: Path, count: int) -> Iterator[tuple[dict, bytes, bytes | None]]:
        with open(folder / "tokens.bin", "rb") as tok, ExitStack() as stack:
            flip = stack.enter_context(open(folder / HFLIP_FILE, "rb")) if settings.hflip else None
            for row, _ in zip(read_jsonl(folder / "rows.jsonl"), range(count)):
                yield row, tok.read(row_bytes), flip.read(row_bytes) if flip is not None else None

    rows = heapq.merge(*(rank_rows(r, c) for r, c in zip(ranks, counts)), key=lambda item: item[0]["i"])
    size = shard_size or total
    n_shards = (total + size - 1) // size
    for shard in range(n_shards):
        target = output if shard_size is None else output.with_name(f"{output.stem}-{shard:06d}{output.suffix}")
        n = min(size, total - shard * size)
        shard_header = dict(header)
        if shard_size is not None:
            shard_header.update(shard=shard, num_shards=n_shards, first_row=shard * size)
        last = shard == n_shards - 1 or shard_size is None
        with row_writer(target, dtype, row_shape, n, shard_header, result.failures if last else [],
                        hflip=settings.hflip) as add:  # fmt: skip
            for _ in range(n):
                row, data, flipped = next(rows)
                add(data, row["path"], row.get("label", -1), flipped)
        result.outputs.append(target)
    result.output = result.outputs[0]
    result.manifest = manifest_path(result.outputs[0])

