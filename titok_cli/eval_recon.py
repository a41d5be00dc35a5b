"""Images -> tokens -> images again, and how close the round trip comes (`titok eval recon`).

The protocol (also written into every result, `ReconResult.protocol`):
  * reference: the center crop the model is given (the official ADM crop of `preprocess`), as
    uint8 pixels / 255 in float32: exactly the model input, nothing resized again.
  * reconstruction: the decoder output clamped to [0, 1] and rounded to uint8 levels
    (round(x * 255) / 255), as the official evaluation does and as a saved PNG holds it.
    (`titok decode` truncates instead of rounding, like the official demo; so a PNG of
    `--save-recon` can differ from `titok decode`'s by one level.)
  * PSNR per image (`metrics.psnr` on the uint8 pair), SSIM per image (`quality.ssim`), LPIPS
    per image (`quality.lpips`, VGG v0.1): the report gives their means over the images.
  * rFID: Fréchet distance between the FID Inception pool3 features of references and
    reconstructions, both resized to 299 x 299 by `FIDInceptionV3.prepare`, in float32;
    Inception Score of the reconstructions (and of the references, for comparison).
  * codebook usage, entropy and per-position usage of the token ids (VQ models only).

How a run works: `inputs` streams the crops and `rank_batches` batches them on each torchrun
rank; every batch appends per-image rows (metrics, token ids, Inception features and logits) to
the rank's `scratch` log, committed every few seconds, so an interrupted run resumes when the
same call is repeated. Rank 0 then reads all rows in input order and computes the report from
them in one fixed order: the numbers do not depend on where a run was interrupted (a rerun
forms the same batches), nor on the number of ranks when each batch holds one image. With
bigger batches, the ranks' batches hold other images than one process's would, and kernels may
round differently per batch (measured on CPU: PSNR and SSIM in the 7th digit, rFID 1e-6
relative, a decoded pixel now and then one level apart).
"""

from __future__ import annotations

import heapq
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .distributed import barrier, dist_info
from .errors import TitokError
from .inputs import count_inputs, has_inputs, inputs_changed_since
from .metrics import psnr
from .outputs import check_output, row_file_names
from .png import PngWriter
from .quality.codebook import CodebookCounter
from .quality.feature_nets import FeatureNets, full_float32
from .quality.ssim import ssim
from .rank_batches import FAILURES_FILE, Item, Progress, RankJob, resume_point, run_batches
from .recon_result import ReconResult, read_result
from .scratch import Scratch, fingerprint_of, read_jsonl
from .atomic_files import atomic_path
from .token_file import model_header, token_dtype

FEATURES = 2048  # FID Inception pool3
LOGITS = 1008  # FID Inception classes (IS)
FEATURE_ROW = 2 * FEATURES + 2 * LOGITS  # per image: reference pool3, recon pool3, reference logits, recon logits
IS_SPLITS, IS_MIN_IMAGES = 10, 500  # torch-fidelity's 10 splits from 500 images up; below, one split
STATS_CHUNK = 1024  # feature rows per float64 accumulation step at the merge (a fixed order)
SCRATCH_ROWS, SCRATCH_TOKENS, SCRATCH_FEATURES = "rows.jsonl", "tokens.bin", "features.bin"


@dataclass(frozen=True)
class ReconSettings:
    """How to run: everything besides the inputs, the model and the feature networks."""

    batch_size: int = 16
    workers: int = 0
    exif_transpose: bool = False
    save_recon: Path | None = None  # folder for the reconstructions as PNG (input names, .png)

    def check(self) -> None:
        if self.batch_size < 1:
            raise TitokError("batch size must be at least 1")
        if self.workers < 0:
            raise TitokError("workers must be 0 or more")


def quantize(pixels: torch.Tensor) -> torch.Tensor:
    """Decoder output (N, 3, S, S) float -> uint8 levels: clamp to [0, 1], round(x * 255)."""
    return (pixels.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)  # (N, 3, S, S)


def protocol_of(tokenizer: Any, nets: FeatureNets, settings: ReconSettings) -> dict[str, Any]:
    """What exactly is compared, for the report (and the fingerprint: a rerun must match it)."""
    size = tokenizer.config.image_size
    return {
        "crop": f"official ADM center crop to {size}x{size} (BOX halving, BICUBIC resize, floor-offset crop)",
        "image_size": size,
        "exif_transpose": settings.exif_transpose,
        "reference": "the center-cropped original as given to the model: uint8 / 255, float32",
        "reconstruction": "decoder output clamped to [0, 1], rounded to uint8 (round(x*255)/255), as saved in a PNG",
        "compute_dtype": str(tokenizer.dtype).replace("torch.", ""),
        "metrics_dtype": "float32, no TF32 (PSNR in float64 on the uint8 pair)",
        "psnr": "per image, data range 1, then the mean",
        "ssim": "per image: 11x11 Gaussian window, sigma 1.5, data range 1, valid region, channel mean; then the mean",
        "lpips": "LPIPS-VGG v0.1 per image, then the mean" if nets.lpips is not None else None,
        "inception": ("FID Inception-v3 (pytorch-fid port of the 2015-12-05 graph), input resized to 299x299 "
                      "(bilinear, no antialias), float32; IS from logits without fc bias, 10 splits "
                      f"(one below {IS_MIN_IMAGES} images), rows shuffled by RandomState(2020) as torch-fidelity does"
                      if nets.inception is not None else None),
        "codebook": "token ids of all measured images" if not tokenizer.config.is_vae else None,
    }


def eval_recon(
    inputs: Sequence[str | os.PathLike],
    tokenizer: Any,
    nets: FeatureNets | None = None,
    settings: ReconSettings | None = None,
    *,
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    on_resume: Callable[[int, int | None], None] | None = None,
    on_failure: Callable[[str, str], None] | None = None,
) -> ReconResult:
    """Encode + decode every image under `inputs` and measure the reconstructions (see the module doc).

    Bad inputs are skipped, reported to `on_failure(path, reason)` and listed in the result.
    With `output`, the report is also written there as JSON (atomically); an existing file is
    replaced only with `overwrite`, or returned as `already_done` when it is the report of this
    identical run. The scratch log lives in `<output>.partial/` (without `output`: in the temp
    folder, named after the run's fingerprint, so runs across machines need `output` on a
    shared file system); repeating an interrupted call resumes from it.
    Under torchrun every rank calls this; rank 0 merges, every rank gets the result.
    """
    nets = nets or FeatureNets()
    settings = settings or ReconSettings()
    settings.check()
    inputs = [os.fspath(p) for p in inputs]
    output = Path(output) if output is not None else None
    rank, world = dist_info()
    cfg = tokenizer.config
    protocol = protocol_of(tokenizer, nets, settings)
    model = model_header(tokenizer)
    from . import __version__

    parts = {"model": model, "inputs": [os.path.abspath(p) for p in inputs], "protocol": protocol,
             "weights": nets.weights, "tool": f"titok-cli {__version__}", "ranks": world,
             "save_recon": None if settings.save_recon is None else os.path.abspath(settings.save_recon)}  # fmt: skip
    fingerprint = fingerprint_of(parts)
    if output is not None and output.is_file() and not overwrite:
        done = read_result(output)
        if done is not None and done.fingerprint == fingerprint and \
                not inputs_changed_since(inputs, output.stat().st_mtime_ns, None):
            done.already_done = True
            return done
    if output is not None:
        check_output(output, overwrite)
    total = count_inputs(inputs) if progress is not None else None
    if total == 0 or (total is None and not has_inputs(inputs)):
        raise TitokError(f"no image files found in {', '.join(inputs)}")

    partial = (output.with_name(output.name + ".partial") if output is not None
               else Path(tempfile.gettempdir()) / f"titok-eval-recon-{fingerprint[:16]}.partial")  # fmt: skip
    files = [SCRATCH_ROWS, FAILURES_FILE] + ([] if cfg.is_vae else [SCRATCH_TOKENS])
    files += [SCRATCH_FEATURES] if nets.inception is not None else []
    scratch = Scratch(partial / f"rank-{rank:05d}-of-{world:05d}", parts, files)
    fresh = scratch.state["next_index"] == 0 and not scratch.state["done"]
    if settings.save_recon is not None and fresh:
        check_output(settings.save_recon, overwrite)
    barrier()  # every rank has checked the PNG folder before any rank writes into it
    resumed_from = resume_point(scratch, rank, world, total, on_resume)
    try:
        if not scratch.state["done"]:
            job = RankJob(inputs, rank, world, cfg.image_size, settings.batch_size, settings.workers, False,
                          settings.exif_transpose, progress, total, on_failure)  # fmt: skip
            _measure_rank(scratch, tokenizer, nets, settings, job)
    finally:
        scratch.close()

    barrier()
    result: ReconResult | TitokError | None = None
    if rank == 0:
        ranks = [partial / f"rank-{r:05d}-of-{world:05d}" for r in range(world)]
        try:
            result = _merge(ranks, tokenizer, nets, protocol, model)
        except TitokError as exc:  # every rank raises it (a rerun would fail the same way)
            result = exc
        else:
            result.fingerprint, result.output = fingerprint, output
            if output is not None:
                with atomic_path(output, ".json") as tmp:
                    tmp.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
        shutil.rmtree(partial, ignore_errors=True)
    result = _share(result)
    if isinstance(result, TitokError):
        raise result
    result.resumed_from = resumed_from
    return result


def _share(result: ReconResult | TitokError | None) -> ReconResult | TitokError:
    """Rank 0's result (or error) on every rank (as is without a process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [result]
        dist.broadcast_object_list(box, src=0)
        result = box[0]
    assert result is not None
    return result


def _measure_rank(scratch: Scratch, tokenizer: Any, nets: FeatureNets, settings: ReconSettings, job: RankJob) -> None:
    """This rank's share: encode, decode and measure each batch, appending rows to the scratch log."""
    cfg, device = tokenizer.config, tokenizer.device
    dtype = token_dtype(None if cfg.is_vae else cfg.codebook_size)
    rows_fh = scratch.handles[SCRATCH_ROWS]
    tokens_fh = scratch.handles.get(SCRATCH_TOKENS)
    feats_fh = scratch.handles.get(SCRATCH_FEATURES)
    writer = PngWriter() if settings.save_recon is not None else None

    def flush(pending: list[Item]) -> None:
        cpu_ref = torch.stack([p[3] for p in pending])  # (B, 3, S, S) uint8
        ref = cpu_ref.to(device, non_blocking=True).float() / 255.0  # (B, 3, S, S): model input and reference
        codes = tokenizer.encode(ref)  # VQ (B, K) int64; VAE (B, C, K) float32
        recon_u8 = quantize(tokenizer.decode(codes))  # (B, 3, S, S) uint8
        rec = recon_u8.float() / 255.0  # (B, 3, S, S)
        cpu_rec = recon_u8.cpu()
        values = {"psnr": [psnr(cpu_rec[j], cpu_ref[j], data_range=255.0) for j in range(len(pending))],
                  "ssim": ssim(rec, ref).tolist()}  # fmt: skip
        with full_float32():
            if nets.lpips is not None:
                values["lpips"] = nets.lpips(rec, ref).tolist()  # (B,)
            if feats_fh is not None:
                feats, logits = nets.inception(torch.cat([ref, rec]))  # (2B, 2048), (2B, 1008)
                b = len(pending)
                row = torch.cat([feats[:b], feats[b:], logits[:b], logits[b:]], dim=1)  # (B, FEATURE_ROW)
                feats_fh.write(np.ascontiguousarray(row.float().cpu().numpy()).tobytes())
        if tokens_fh is not None:
            tokens_fh.write(np.ascontiguousarray(codes.cpu().numpy().astype(dtype, copy=False)).tobytes())
        for j, (i, name, _, _) in enumerate(pending):
            rows_fh.write((json.dumps({"i": i, "path": name, **{k: v[j] for k, v in values.items()}}) + "\n").encode())
        if writer is not None:
            pictures = cpu_rec.permute(0, 2, 3, 1).numpy()  # (B, S, S, 3)
            names = row_file_names([p[1] for p in pending], len(pending), where="input")
            for picture, name in zip(pictures, names):
                writer.submit(picture, settings.save_recon / name)

    with torch.inference_mode():
        if writer is None:
            run_batches(scratch, job, device, flush)
        else:
            with writer:
                run_batches(scratch, job, device, flush)


def _merge(ranks: list[Path], tokenizer: Any, nets: FeatureNets, protocol: dict[str, Any],
           model: dict[str, Any]) -> ReconResult:  # fmt: skip
    """Rank 0: the report from every rank's committed rows, taken in input order."""
    cfg = tokenizer.config
    counts = [json.loads((r / "state.json").read_text())["rows"] for r in ranks]
    failures = sorted((f for r in ranks for f in read_jsonl(r / FAILURES_FILE)), key=lambda f: f["i"])

    def rank_rows(k: int) -> Iterator[tuple[dict, int, int]]:
        for j, row in zip(range(counts[k]), read_jsonl(ranks[k] / SCRATCH_ROWS)):
            yield row, k, j

    order = list(heapq.merge(*(rank_rows(k) for k in range(len(ranks))), key=lambda item: item[0]["i"]))
    n = len(order)
    if n == 0:
        raise TitokError("no image could be read: " + "; ".join(f"{f['failed']} ({f['reason']})" for f in failures[:5]))

    def mean(key: str) -> float:
        values = [row[key] for row, _, _ in order]
        return math.inf if math.inf in values else math.fsum(values) / n

    codebook, note = None, "VAE model: continuous latents, no codebook to measure"
    if not cfg.is_vae:
        dtype = token_dtype(cfg.codebook_size)
        counter = CodebookCounter(cfg.codebook_size, cfg.num_latent_tokens)
        for r, c in zip(ranks, counts):
            ids = np.fromfile(r / SCRATCH_TOKENS, dtype=dtype, count=c * cfg.num_latent_tokens)
            counter.update(torch.from_numpy(ids.astype(np.int64)).view(c, cfg.num_latent_tokens))  # (c, K)
        codebook, note = counter.stats(), None

    rfid = is_rec = is_ref = None
    if nets.inception is not None:
        rfid, is_ref, is_rec = _distribution_metrics(ranks, counts, [(k, j) for _, k, j in order])
    return ReconResult(
        count=n, psnr=mean("psnr"), ssim=mean("ssim"), lpips=mean("lpips") if nets.lpips is not None else None,
        rfid=rfid, inception_score=is_rec, inception_score_reference=is_ref, codebook=codebook,
        codebook_note=note, model=model, protocol=protocol, weights=nets.weights,
        failures=[(f["failed"], f["reason"]) for f in failures],
    )  # fmt: skip


def _distribution_metrics(ranks: list[Path], counts: list[int], order: list[tuple[int, int]]
                          ) -> tuple[float | None, tuple[float, float], tuple[float, float]]:  # fmt: skip
    """rFID and the two Inception Scores from the stored features, accumulated in input order."""
    from .quality.fid import FeatureStatsAccumulator, inception_score

    tables = [np.memmap(r / SCRATCH_FEATURES, dtype=np.float32, mode="r", shape=(c, FEATURE_ROW)) if c else None
              for r, c in zip(ranks, counts)]  # fmt: skip
    ref_acc, rec_acc = FeatureStatsAccumulator(FEATURES), FeatureStatsAccumulator(FEATURES)
    logits = np.empty((len(order), 2 * LOGITS), dtype=np.float32)  # (N, 2 * 1008): reference, recon
    for start in range(0, len(order), STATS_CHUNK):
        chunk = order[start : start + STATS_CHUNK]
        rows = torch.from_numpy(np.stack([tables[k][j] for k, j in chunk]))  # (n, FEATURE_ROW)
        ref_acc.update(rows[:, :FEATURES])
        rec_acc.update(rows[:, FEATURES : 2 * FEATURES])
        logits[start : start + len(chunk)] = rows[:, 2 * FEATURES :].numpy()
    n = len(order)
    rfid = ref_acc.stats().frechet_distance(rec_acc.stats()) if n >= 2 else None
    splits = IS_SPLITS if n >= IS_MIN_IMAGES else 1
    return (rfid, inception_score(torch.from_numpy(logits[:, :LOGITS]), splits),
            inception_score(torch.from_numpy(logits[:, LOGITS:]), splits))  # fmt: skip


__all__ = ["ReconSettings", "eval_recon", "quantize"]
