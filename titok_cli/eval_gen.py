"""Generation quality of a sample archive: gFID, Inception Score and precision/recall, as ADM measures them.

The protocol is that of guided-diffusion's evaluator (the numbers TiTok and most class-conditional
ImageNet papers report), on the FID Inception-v3 of `quality/inception.py`:
  * images: uint8 `arr_0` (N, H, W, 3) of an `.npz`, divided by 255 in float32, resized to
    299 x 299 bilinearly (`F.interpolate`, no antialiasing) inside the network: pytorch-fid's
    resize. ADM's evaluator resizes inside its TF1 graph instead, so numbers differ slightly from
    its own where images are not 299 x 299 (see quality/inception.py); TF32 is off on CUDA;
  * gFID: Fréchet distance between the pool3 statistics (float64 mean, N-1 covariance) of the
    samples and of the reference. A reference that stores `mu`/`sigma` is compared through them,
    as ADM does, even when it also holds images;
  * Inception Score: ADM's: the rows in file order, cut into chunks of 5000 (the last one may be
    shorter); the score of each chunk from the softmax of pool3 @ fc.weight (no bias); the mean and
    the (population) std over chunks;
  * precision/recall: ADM's k=3 manifolds on pool3 features of samples and reference images
    (a reference of statistics only has no manifold: both are then None, with a note saying why).
Images are streamed from the archive in batches. Under torchrun, rank r reads the contiguous rows
[r N / W, (r+1) N / W) of each archive and rank 0 gathers the features in file order, so the
result does not depend on the number of ranks. Memory on rank 0: the float32 pool3 features and
logits of every sample and reference image, (2048 + 1008) x 4 bytes each: 0.6 GB for 50 000 samples.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ImageError, SampleCountError, TitokError
from .quality.fid import FeatureStats, feature_stats, inception_score, precision_recall
from .quality.feature_nets import full_float32
from .quality.inception import FEATURE_DIM, INPUT_SIZE, NUM_CLASSES, FIDInceptionV3
from .quality.reference_npz import ReferenceBatch, images_to_tensor, read_reference_npz

IS_SPLIT_SIZE = 5000  # ADM's compute_inception_score(split_size=5000)
PR_NEIGHBOURS = 3  # ADM's nhood_sizes=(3,)
Progress = Callable[[int, int], None]  # (images done, images total), called on rank 0


@dataclass(frozen=True)
class ReferenceSet:
    """A reference batch ready to compare against: its statistics and, with images, its features.

    `stats` comes from the file's `mu`/`sigma` when it has them, else from its images. `features`
    (N, 2048) float32 is None for a reference of statistics only. Only rank 0 holds `stats` and
    `features` when they come from images (other ranks hold None: rank 0 computes the metrics).
    """

    path: Path
    holds_images: bool
    holds_stats: bool
    count: int | None  # images in arr_0
    stats: FeatureStats | None
    features: torch.Tensor | None  # (N, 2048)

    @property
    def stats_from(self) -> str:
        return "file" if self.holds_stats else "images"


@dataclass(frozen=True)
class GenEvalResult:
    """The metrics of one sample archive against one reference, and how they were measured."""

    fid: float
    inception_score: float
    inception_score_std: float
    precision: float | None  # None when the reference holds statistics only
    recall: float | None
    sample_count: int
    reference_count: int | None  # images in the reference (None: statistics only)
    samples: str
    reference: str
    reference_holds: str  # "images", "statistics" or "images and statistics"
    reference_stats_from: str  # "file" (mu/sigma) or "images"
    protocol: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """The results document (`--json`, `-o results.json`, a sweep's table rows)."""
        return {
            "fid": self.fid, "inception_score": self.inception_score,
            "inception_score_std": self.inception_score_std, "precision": self.precision, "recall": self.recall,
            "sample_count": self.sample_count, "reference_count": self.reference_count, "samples": self.samples,
            "reference": self.reference, "reference_holds": self.reference_holds,
            "reference_stats_from": self.reference_stats_from, "protocol": self.protocol, "notes": list(self.notes),
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GenEvalResult:
        """The inverse of `as_json` (a sweep reads its finished points back)."""
        return cls(**{**data, "notes": tuple(data.get("notes", ()))})


class FeatureExtractor:
    """The FID Inception on one device, turning archive rows into pool3 features and IS logits."""

    def __init__(self, model: FIDInceptionV3, device: torch.device | str = "cpu", batch_size: int = 64) -> None:
        if batch_size < 1:
            raise TitokError(f"the feature batch size must be at least 1, not {batch_size}")
        self.model = model.to(device=device, dtype=torch.float32).eval()
        self.device = torch.device(device)
        self.batch_size = batch_size

    @classmethod
    def load(cls, inception: str | os.PathLike | None = None, device: torch.device | str = "cpu",
             batch_size: int = 64) -> FeatureExtractor:  # fmt: skip
        """With the weights from `inception` (a file), or the cache / one download (weights.py)."""
        from .quality.inception import load_fid_inception

        return cls(load_fid_inception(inception, device=device), device, batch_size)

    @torch.inference_mode()
    def archive_features(self, archive: ReferenceBatch, progress: Progress | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor] | None:  # fmt: skip
        """pool3 features (N, 2048) and logits (N, 1008) of every image of `archive`, in file order.

        Under torchrun each rank computes its contiguous share; rank 0 returns the whole set
        (float32, CPU), the other ranks None.
        """
        from .distributed import dist_info

        assert archive.count is not None
        rank, world = dist_info()
        bounds = [archive.count * r // world for r in range(world + 1)]
        start, stop = bounds[rank], bounds[rank + 1]
        feats, logits = [], []
        done = 0
        with full_float32():
            for batch in archive.iter_images(self.batch_size, start, stop):
                out = self.model(images_to_tensor(batch).to(self.device))  # (B, 2048), (B, 1008)
                feats.append(out.features.float())
                logits.append(out.logits.float())
                done += batch.shape[0]
                if progress is not None and rank == 0:
                    progress(min(done * world, archive.count), archive.count)  # the ranks run at one pace
        empty = torch.zeros(0, device=self.device)
        mine = torch.cat([torch.cat(feats) if feats else empty.reshape(0, FEATURE_DIM),
                          torch.cat(logits) if logits else empty.reshape(0, NUM_CLASSES)], dim=1)  # (n, 3056)
        whole = _gather_rows(mine, [b - a for a, b in zip(bounds, bounds[1:])]) if world > 1 else mine
        if whole is None:
            return None
        whole = whole.cpu()  # (N, 3056)
        return whole[:, :FEATURE_DIM].contiguous(), whole[:, FEATURE_DIM:].contiguous()

    def protocol(self) -> dict[str, Any]:
        return {"network": "FID Inception-v3 (pytorch-fid port of the 2015-12-05 TF graph)",
                "resize": f"{INPUT_SIZE}x{INPUT_SIZE} bilinear, align_corners=False, no antialias",
                "input": "uint8 / 255, float32", "dtype": "float32 (no TF32 on CUDA)", "batch_size": self.batch_size,
                "device": str(self.device), "fid": "ADM/pytorch-fid: float64 mean, N-1 covariance",
                "inception_score": f"ADM: chunks of {IS_SPLIT_SIZE} in file order, softmax without fc bias",
                "precision_recall": f"ADM: k={PR_NEIGHBOURS} nearest-neighbour manifolds on pool3"}  # fmt: skip


def _gather_rows(mine: torch.Tensor, counts: list[int]) -> torch.Tensor | None:
    """Every rank's rows (n_r, D) -> all rows in rank order on rank 0 (None elsewhere).

    Shares are padded to the largest (gather needs equal shapes) and cut back on rank 0.
    """
    import torch.distributed as dist

    from .distributed import dist_info

    rank, world = dist_info()
    if dist.get_backend() == "gloo":
        mine = mine.cpu()
    width = mine.shape[1]
    padded = torch.zeros(max(counts), width, dtype=mine.dtype, device=mine.device)  # (max n, D)
    padded[: mine.shape[0]] = mine
    bucket = [torch.empty_like(padded) for _ in range(world)] if rank == 0 else None
    dist.gather(padded, bucket, dst=0)
    if rank != 0:
        return None
    assert bucket is not None
    return torch.cat([part[:n] for part, n in zip(bucket, counts)])  # (N, D)


def _open_archive(path: str | os.PathLike, what: str) -> ReferenceBatch:
    archive = read_reference_npz(path)
    if archive.count is None:
        raise ImageError(str(archive.path), f"holds no images (arr_0), only mu/sigma: {what} must be images")
    return archive


def open_samples(path: str | os.PathLike, expect: int | None = None) -> ReferenceBatch:
    """Check a sample archive's header (and its count against `expect`) before any work."""
    archive = _open_archive(path, "a sample archive")
    assert archive.count is not None
    if expect is not None and archive.count != expect:
        raise SampleCountError(
            f"{archive.path} holds {archive.count:,} images, but --expect says {expect:,}: "
            "the archive is incomplete or from another run"
        )
    if archive.count <= PR_NEIGHBOURS:
        raise ImageError(str(archive.path), f"holds {archive.count} images; gFID and precision/recall need "
                                            f"at least {PR_NEIGHBOURS + 1}")  # fmt: skip
    return archive


def load_reference(path: str | os.PathLike, extractor: FeatureExtractor, progress: Progress | None = None
                   ) -> ReferenceSet:  # fmt: skip
    """Read a reference batch; features of its images are computed when it has images."""
    from .distributed import dist_info

    ref = read_reference_npz(path)
    features = stats = None
    if ref.count is not None:
        if ref.count <= PR_NEIGHBOURS and ref.stats is None:
            raise ImageError(str(ref.path), f"holds {ref.count} images; a reference needs at least "
                                            f"{PR_NEIGHBOURS + 1}")  # fmt: skip
        got = extractor.archive_features(ref, progress)
        if got is not None:
            features = got[0]
    if ref.stats is not None:
        stats = ref.stats
    elif features is not None:
        stats = feature_stats(features)
    if ref.stats is not None and ref.stats.mu.shape != (FEATURE_DIM,):
        raise ImageError(str(ref.path), f"mu has {ref.stats.mu.shape[0]} features, the FID Inception gives {FEATURE_DIM}")
    if features is not None and features.shape[0] <= PR_NEIGHBOURS:
        features = None  # too few images for a k=3 manifold (stats came from the file)
    rank, _ = dist_info()
    return ReferenceSet(ref.path, ref.count is not None, ref.stats is not None, ref.count,
                        stats if rank == 0 or ref.stats is not None else None, features)  # fmt: skip


def adm_inception_score(logits: torch.Tensor, split_size: int = IS_SPLIT_SIZE) -> tuple[float, float]:
    """ADM's Inception Score: rows in order, chunks of `split_size`; mean and std over chunks."""
    scores = [inception_score(logits[i : i + split_size], splits=1, shuffle_seed=None)[0]
              for i in range(0, logits.shape[0], split_size)]  # fmt: skip
    return float(np.mean(scores)), float(np.std(scores))


def _holds(ref: ReferenceSet) -> str:
    if ref.holds_images and ref.holds_stats:
        return "images and statistics"
    return "images" if ref.holds_images else "statistics"


def evaluate_samples(samples: str | os.PathLike | ReferenceBatch, reference: ReferenceSet,
                     extractor: FeatureExtractor, *, expect: int | None = None,
                     is_split_size: int = IS_SPLIT_SIZE, progress: Progress | None = None) -> GenEvalResult:  # fmt: skip
    """gFID, IS and precision/recall of `samples` against a loaded reference; every rank gets the result."""
    archive = samples if isinstance(samples, ReferenceBatch) else open_samples(samples, expect)
    if is_split_size < 1:
        raise TitokError(f"the Inception Score chunk size must be at least 1, not {is_split_size}")
    got = extractor.archive_features(archive, progress)

    def compute() -> GenEvalResult:
        assert got is not None and reference.stats is not None and archive.count is not None
        features, logits = got
        fid = feature_stats(features).frechet_distance(reference.stats)
        is_mean, is_std = adm_inception_score(logits, is_split_size)
        notes = []
        precision = recall = None
        if reference.features is not None:
            precision, recall = precision_recall(reference.features, features, k=PR_NEIGHBOURS)
        elif reference.holds_images:
            notes.append(f"precision/recall need at least {PR_NEIGHBOURS + 1} reference images: "
                         f"{reference.path.name} holds {reference.count}")  # fmt: skip
        else:
            notes.append(f"precision/recall need reference images: {reference.path.name} holds only mu/sigma")
        protocol = {**extractor.protocol(), "is_split_size": is_split_size}
        return GenEvalResult(
            fid=fid, inception_score=is_mean, inception_score_std=is_std, precision=precision, recall=recall,
            sample_count=archive.count, reference_count=reference.count, samples=str(archive.path),
            reference=str(reference.path), reference_holds=_holds(reference),
            reference_stats_from=reference.stats_from, protocol=protocol, notes=tuple(notes),
        )  # fmt: skip

    return _on_rank0(compute)


def _on_rank0(compute: Callable[[], GenEvalResult]) -> GenEvalResult:
    """Run `compute` on rank 0 and hand its result (or its error) to every rank."""
    from .distributed import dist_info

    rank, world = dist_info()
    if world == 1:
        return compute()
    import torch.distributed as dist

    box: list[Any] = [None]
    if rank == 0:
        try:
            box[0] = ("ok", compute())
        except Exception as exc:  # noqa: BLE001 - every rank raises it, so none waits forever
            box[0] = ("error", exc)
    dist.broadcast_object_list(box, src=0)
    dist.barrier()  # no rank leaves (and tears gloo down) while another still receives
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def evaluate_gen(samples: str | os.PathLike, reference: str | os.PathLike, *, expect: int | None = None,
                 inception: str | os.PathLike | None = None, batch_size: int = 64,
                 device: torch.device | str = "cpu", is_split_size: int = IS_SPLIT_SIZE,
                 progress: Progress | None = None) -> GenEvalResult:  # fmt: skip
    """`titok eval gen` as one call: check the archives, load the Inception, measure.

    The sample count is checked against `expect` and both headers are read before the network
    loads, so a wrong archive fails in a second.
    """
    archive = open_samples(samples, expect)
    ref_header = read_reference_npz(reference)
    extractor = FeatureExtractor.load(inception, device=device, batch_size=batch_size)
    total = (archive.count or 0) + (ref_header.count or 0)  # one bar: reference images, then samples
    ref = load_reference(reference, extractor, None if progress is None else lambda done, _n: progress(done, total))
    before = ref_header.count or 0
    step = None if progress is None else lambda done, _n: progress(before + done, total)
    return evaluate_samples(archive, ref, extractor, is_split_size=is_split_size, progress=step)


__all__ = [
    "FeatureExtractor", "GenEvalResult", "ReferenceSet", "adm_inception_score", "evaluate_gen",
    "evaluate_samples", "load_reference", "open_samples",
]  # fmt: skip
