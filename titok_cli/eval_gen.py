"""Generated samples against a reference batch: gFID, Inception Score, precision and recall (`titok eval gen`).

The definitions are those of ADM's evaluator (guided-diffusion's `evaluations/evaluator.py`),
computed on the FID Inception-v3 port (`quality.inception`) in float32:
  * gFID: Fréchet distance between the pool3 statistics of the samples and of the reference; a
    reference that carries `mu`/`sigma` is used through them (as ADM does), else its images.
  * Inception Score of the samples: 10 splits in file order (ADM's 50 000 / 5000), one split
    below 500 samples.
  * precision / recall (Kynkäänniemi et al.): need the reference's images (`arr_0`).
A sample archive is ADM's format (`titok sample --npz`): `arr_0` uint8 (N, H, W, 3). `expect`
refuses an archive with another number of images, so a 50k run is really 50k samples.
Under torchrun each rank takes a contiguous slice of each archive; rank 0 joins the features in
file order, so the numbers equal one process's up to per-batch rounding of the network.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .distributed import dist_info
from .errors import ImageError, TitokError

RESULT_FORMAT = "titok-eval-gen"
IS_SPLITS, IS_MIN_IMAGES = 10, 500  # ADM: 10 splits of 5000; below 500 samples, one split

Inception = Callable[[torch.Tensor], Any]  # [0, 1] images (N, 3, H, W) -> (pool3 (N, 2048), logits (N, 1008))
Progress = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class GenSettings:
    """How to measure: batch size, the sample count the caller asked for, precision/recall on or off."""

    batch_size: int = 64
    expect: int | None = None
    precision_recall: bool = True

    def check(self) -> None:
        if self.batch_size < 1:
            raise TitokError("batch size must be at least 1")
        if self.expect is not None and self.expect < 1:
            raise TitokError("the expected sample count must be at least 1")


@dataclass
class GenResult:
    """The report of one `eval gen` run."""

    samples: int  # images in the sample archive
    reference_images: int | None  # images in the reference archive (None: statistics only)
    fid: float
    inception_score: tuple[float, float]  # (mean, std over splits) of the samples
    precision: float | None  # None without reference images or when turned off
    recall: float | None
    fid_reference: str  # "statistics" (mu/sigma of the file) or "images" (features computed here)
    protocol: dict[str, Any]
    weights: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sample_path: str = ""
    reference_path: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"format": RESULT_FORMAT, "version": 1, "samples": self.samples,
                "reference_images": self.reference_images, "fid": self.fid,
                "inception_score": {"mean": self.inception_score[0], "std": self.inception_score[1]},
                "precision": self.precision, "recall": self.recall, "fid_reference": self.fid_reference,
                "protocol": self.protocol, "weights": self.weights, "sample_path": self.sample_path,
                "reference_path": self.reference_path}  # fmt: skip


def _features(batches: Iterator[np.ndarray], inception: Inception, device: torch.device,
              progress: Progress | None, done: int, total: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """pool3 features (n, 2048) and IS logits (n, 1008), float32, of uint8 batches (B, H, W, 3)."""
    from .eval_recon import full_float32
    from .quality.fid import images_to_tensor

    feats, logits = [], []
    with torch.inference_mode(), full_float32():
        for batch in batches:
            f, g = inception(images_to_tensor(batch).to(device))  # (B, 2048), (B, 1008)
            feats.append(f.float().cpu().numpy())
            logits.append(g.float().cpu().numpy())
            done += len(batch)
            if progress is not None:
                progress(done, total)
    if not feats:
        return np.zeros((0, 2048), np.float32), np.zeros((0, 1008), np.float32)
    return np.concatenate(feats), np.concatenate(logits)


def _rank_slice(count: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous share [start, stop) of `count` items for `rank` of `world`."""
    return count * rank // world, count * (rank + 1) // world


def _gather(arrays: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every rank's (features, logits) joined in rank order (as is without a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return arrays
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, arrays)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def eval_gen(
    samples: str | os.PathLike,
    reference: str | os.PathLike,
    inception: Inception,
    settings: GenSettings | None = None,
    *,
    device: torch.device | str = "cpu",
    weights: dict[str, list[dict[str, Any]]] | None = None,
    progress: Progress | None = None,
) -> GenResult:
    """gFID, IS and precision/recall of the `samples` archive against `reference` (see the module doc).

    Raises ImageError for an archive that cannot be read and TitokError when the sample count
    differs from `settings.expect`. Under torchrun every rank calls this and gets the result.
    """
    from .quality.fid import (
        feature_stats,
        inception_score,
        precision_recall,
        read_reference_npz,
    )

    settings = settings or GenSettings()
    settings.check()
    device = torch.device(device)
    smp = read_reference_npz(samples)
    if smp.count is None:
        raise ImageError(str(samples), "holds no images (arr_0): a sample archive needs them")
    if settings.expect is not None and smp.count != settings.expect:
        raise TitokError(f"{samples} holds {smp.count} samples, but {settings.expect} were expected "
                         "(--expect): the run is incomplete or not the one meant")  # fmt: skip
    ref = read_reference_npz(reference)
    rank, world = dist_info()
    need_ref_images = ref.count is not None and (ref.stats is None or settings.precision_recall)
    total = smp.count + (ref.count if need_ref_images else 0)

    def features_of(batch: Any, done: int) -> tuple[np.ndarray, np.ndarray]:
        start, stop = _rank_slice(batch.count, rank, world)
        return _gather(_features(batch.iter_images(settings.batch_size, start, stop), inception, device,
                                 progress, done, total))  # fmt: skip

    smp_feats, smp_logits = features_of(smp, 0)
    ref_feats = features_of(ref, smp.count)[0] if need_ref_images else None
    ref_stats = ref.stats if ref.stats is not None else feature_stats(ref_feats)
    fid = feature_stats(smp_feats).frechet_distance(ref_stats)
    splits = IS_SPLITS if smp.count >= IS_MIN_IMAGES else 1
    score = inception_score(smp_logits, splits, shuffle_seed=None)
    precision = recall = None
    if settings.precision_recall and ref_feats is not None:
        precision, recall = precision_recall(ref_feats, smp_feats)
    protocol = {
        "inception": "FID Inception-v3 (pytorch-fid port of the 2015-12-05 graph), uint8 / 255 resized to "
                     "299x299 (bilinear, no antialias), float32",
        "fid": "pool3 mean and N-1 covariance in float64; the reference's mu/sigma when the file has them",
        "inception_score": f"softmax of logits without fc bias, {splits} split(s) in file order (ADM)",
        "precision_recall": "ADM evaluator: 3rd-nearest-neighbour radii, squared Euclidean distances",
    }  # fmt: skip
    return GenResult(samples=smp.count, reference_images=ref.count, fid=fid, inception_score=score,
                     precision=precision, recall=recall,
                     fid_reference="statistics" if ref.stats is not None else "images", protocol=protocol,
                     weights=weights or {}, sample_path=str(Path(samples)), reference_path=str(Path(reference)))  # fmt: skip


__all__ = ["GenResult", "GenSettings", "eval_gen"]
