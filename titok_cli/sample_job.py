"""Class ids -> many images in one `.npz` (the ADM evaluator's `arr_0`, uint8 [N,H,W,3]).

This is the FID protocol of the official sampling script (50 images for each of the 1000
ImageNet classes), made resumable and splittable over torchrun ranks:
  * every image follows the seed rule (`seeds.py`: its own generator, seeded from seed,
    class and index), so images do not depend on batch size, rank count or restarts, and
    equal the PNGs `titok sample` writes for the same request;
  * the label list is cut into fixed batches;
  * rank r renders batches b = r, r + W, ... into `<output>.partial/batch-<b>.npy`, each
    written atomically: a rerun skips the batches already on disk;
  * rank 0 streams the batches, in order, into the final .npz (temp file, then rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .distributed import barrier, dist_info
from .errors import TitokError
from .pairing import check_pair
from .sample_images import Progress, SamplePlan, render_batch
from .sampling_params import SamplingParams
from .seeds import SEED_RULE
from .atomic_files import atomic_path, zip_member


@dataclass
class SampleResult:
    output: Path
    count: int
    batches_done_before: int  # batches found on disk from an interrupted run


def sample_to_npz(
    generator,
    tokenizer,
    output: str | os.PathLike,
    classes: Sequence[int],
    n_per_class: int,
    params: SamplingParams,
    *,
    batch_size: int = 32,
    seed: int = 0,
    progress: Progress | None = None,
) -> SampleResult:
    """Render n_per_class images for every class into `output` (.npz with arr_0 and labels).

    Under torchrun every rank calls this with the same arguments; `progress` is called on rank 0.
    """
    output = Path(output)
    if output.suffix != ".npz":
        raise TitokError(f"{output}: the sample archive must end in .npz")
    if n_per_class < 1 or batch_size < 1:
        raise TitokError("--num and the batch size must be at least 1")
    check_pair(generator, tokenizer)
    plan = SamplePlan.build(classes, n_per_class, seed)
    labels = plan.labels
    n_batches = (len(labels) + batch_size - 1) // batch_size
    rank, world = dist_info()
    partial = output.with_name(output.name + ".partial")
    job = {"labels_sha": hashlib.sha256(np.asarray(labels).tobytes()).hexdigest(), "batch_size": batch_size,
           "seed": seed, "seed_rule": SEED_RULE, "params": params.to_dict(),
           "tokenizer_size": tokenizer.image_size}  # fmt: skip
    partial.mkdir(parents=True, exist_ok=True)
    job_file = partial / "job.json"
    if rank == 0 and not job_file.exists():
        with atomic_path(job_file) as tmp:
            tmp.write_text(json.dumps(job, sort_keys=True))
    barrier()
    if json.loads(job_file.read_text()) != json.loads(json.dumps(job, sort_keys=True)):
        raise TitokError(
            f"{partial} belongs to an unfinished run with other settings; rerun that command or delete the folder"
        )

    mine = list(range(rank, n_batches, world))
    before = sum(1 for b in mine if (partial / f"batch-{b:06d}.npy").exists())
    for done, b in enumerate(mine, 1):
        target = partial / f"batch-{b:06d}.npy"
        if not target.exists():
            rows = slice(b * batch_size, (b + 1) * batch_size)
            _, images = render_batch(generator, tokenizer, labels[rows], plan.seeds[rows], params)
            with atomic_path(target) as tmp, open(tmp, "wb") as fh:
                np.save(fh, images, allow_pickle=False)
        if progress is not None and rank == 0:
            progress(done, len(mine))
    barrier()
    if rank == 0:
        _assemble(partial, output, n_batches, labels)
        shutil.rmtree(partial, ignore_errors=True)
    barrier()
    return SampleResult(output=output, count=len(labels), batches_done_before=before)


def _assemble(partial: Path, output: Path, n_batches: int, labels: list[int]) -> None:
    first = np.load(partial / "batch-000000.npy", mmap_mode="r")
    shape = (len(labels), *first.shape[1:])
    with atomic_path(output) as tmp:
        with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
            with zip_member(zf, "arr_0.npy") as dst:
                np.lib.format.write_array_header_1_0(dst, {"descr": "|u1", "fortran_order": False, "shape": shape})
                for b in range(n_batches):
                    batch = np.load(partial / f"batch-{b:06d}.npy", mmap_mode="r")
                    dst.write(np.ascontiguousarray(batch).tobytes())
            with zip_member(zf, "labels.npy") as dst:
                np.lib.format.write_array(dst, np.asarray(labels, dtype=np.int64), allow_pickle=False)
