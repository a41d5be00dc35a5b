"""Class ids -> many images in one `.npz` (the ADM evaluator's `arr_0`, uint8 [N,H,W,3]).

This is the FID protocol of the official sampling script (50 images for each of the 1000
ImageNet classes), made resumable and splittable over torchrun ranks:
  * the label list is cut into fixed batches; batch b draws its noise from a generator
    seeded with (seed, b), so images do not depend on how many ranks ran or on restarts;
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .distributed import _barrier, dist_info
from .errors import TitokError
from .models.tokenizer import to_uint8
from .sampling import SamplingParams, maskgit_generate
from .token_file import atomic_path, zip_member


@dataclass
class SampleResult:
    output: Path
    count: int
    batches_done_before: int  # batches found on disk from an interrupted run


def batch_seed(seed: int, batch: int) -> int:
    """A per-batch seed that does not depend on rank count (mixes seed and batch number)."""
    digest = hashlib.sha256(f"titok-sample:{seed}:{batch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def render_batch(generator, tokenizer, labels: Sequence[int], params: SamplingParams, seed: int) -> np.ndarray:
    """Labels -> uint8 images [B,H,W,3], reproducible for a given seed on a given device."""
    device = generator.device
    rng = torch.Generator(device=device).manual_seed(seed)
    classes = torch.as_tensor(list(labels), dtype=torch.long, device=device)
    ids = maskgit_generate(generator, classes, params, generator=rng)  # (B, K)
    with torch.inference_mode():
        pixels = tokenizer.decode(ids)  # (B, 3, S, S)
    return to_uint8(pixels).cpu().numpy()  # (B, S, S, 3)


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
    progress: Callable[[int, int], None] | None = None,
) -> SampleResult:
    """Render n_per_class images for every class into `output` (.npz with arr_0 and labels)."""
    output = Path(output)
    if output.suffix != ".npz":
        raise TitokError(f"{output}: the sample archive must end in .npz")
    if n_per_class < 1 or batch_size < 1:
        raise TitokError("--n-per-class and the batch size must be at least 1")
    if tokenizer.num_tokens != generator.num_tokens or tokenizer.codebook_size != generator.codebook_size:
        raise TitokError("the tokenizer does not decode this generator's tokens (token count or codebook differ)")
    labels = [int(c) for c in classes for _ in range(n_per_class)]
    n_batches = (len(labels) + batch_size - 1) // batch_size
    rank, world = dist_info()
    partial = output.with_name(output.name + ".partial")
    job = {"labels_sha": hashlib.sha256(np.asarray(labels).tobytes()).hexdigest(), "batch_size": batch_size,
           "seed": seed, "params": asdict(params), "tokenizer_size": tokenizer.image_size}  # fmt: skip
    partial.mkdir(parents=True, exist_ok=True)
    job_file = partial / "job.json"
    if rank == 0 and not job_file.exists():
        with atomic_path(job_file) as tmp:
            tmp.write_text(json.dumps(job, sort_keys=True))
    _barrier()
    if json.loads(job_file.read_text()) != json.loads(json.dumps(job, sort_keys=True)):
        raise TitokError(
            f"{partial} belongs to an unfinished run with other settings; rerun that command or delete the folder"
        )

    mine = list(range(rank, n_batches, world))
    before = sum(1 for b in mine if (partial / f"batch-{b:06d}.npy").exists())
    for done, b in enumerate(mine, 1):
        target = partial / f"batch-{b:06d}.npy"
        if not target.exists():
            images = render_batch(generator, tokenizer, labels[b * batch_size : (b + 1) * batch_size], params,
                                  batch_seed(seed, b))  # fmt: skip
            with atomic_path(target) as tmp, open(tmp, "wb") as fh:
                np.save(fh, images, allow_pickle=False)
        if progress is not None:
            progress(done, len(mine))
    _barrier()
    if rank == 0:
        _assemble(partial, output, n_batches, labels)
        shutil.rmtree(partial, ignore_errors=True)
    _barrier()
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


def _main(argv: list[str]) -> None:
    """`python -m titok_cli.sample_job GEN TOK OUT N_PER_CLASS CLASSES...`: bare entry point for torchrun."""
    from .loading import load_generator, load_tokenizer

    gen_src, tok_src, out, n = argv[:4]
    classes = [int(c) for c in argv[4:]]
    dist_info()
    gen, tok = load_generator(gen_src), load_tokenizer(tok_src)
    params = SamplingParams(**(gen.config.sampling_defaults() | {"softmax_temperature_annealing": True}))
    sample_to_npz(gen, tok, out, classes, int(n), params, batch_size=4, seed=0)


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])
