"""Training images for fine-tuning: the inputs `titok encode` takes, listed once, checked once.

Folders and files are walked in the sorted order of `preprocess.iter_image_files`; webdataset
shards are read once and their images kept as bytes (fine-tuning sets are small). Every image is
decoded before training starts, so a broken file stops the run with its name instead of hours
later. During training an image is decoded again and cropped by `image_augment.train_crop` with
the generator of (seed, epoch, image index): the crop is a pure function of the step.
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import UsageError
from ..inputs import is_webdataset
from ..preprocess import iter_image_files, load_image, read_image

Loader = Callable[[], Image.Image]


def _tar_images(inputs: Sequence[str]) -> list[tuple[str, Loader]]:
    from ..inputs import WDS_IMAGE_EXTS

    try:
        import webdataset as wds
    except ImportError:
        raise UsageError("reading .tar shards needs the webdataset package: pip install 'titok-cli[wds]'") from None
    urls = [u for item in inputs for u in wds.shardlists.expand_urls(os.fspath(item))]
    out: list[tuple[str, Loader]] = []
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        ext = next((e for e in WDS_IMAGE_EXTS if e in sample), None)
        if ext is not None:
            name, data = f"{sample['__key__']}.{ext}", bytes(sample[ext])
            out.append((name, lambda d=data, n=name: read_image(io.BytesIO(d), n, None)))
    return out


class TrainImages:
    """The training images in a fixed order; `crops(indices, epochs, size, seed)` -> a uint8 batch."""

    def __init__(self, inputs: Sequence[str | os.PathLike], *, what: str = "training images", workers: int = 4) -> None:
        inputs = [os.fspath(p) for p in inputs]
        self.workers, self._pool = workers, None
        if not inputs:
            raise UsageError(f"no {what} given")
        if is_webdataset(inputs):
            self.items = _tar_images(inputs)
        else:
            self.items = [(str(path), lambda p=path: load_image(p, None)) for path, _ in iter_image_files(inputs)]
        if not self.items:
            raise UsageError(f"no image files found in {', '.join(inputs)} ({what})")
        self.inputs = inputs
        self.sizes: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return len(self.items)

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.items]

    def scan(self, min_side: int = 1) -> None:
        """Decode every image once; ImageError names the first that fails, UsageError one too small."""
        self.sizes = []
        for name, load in self.items:
            w, h = load().size
            if min(w, h) < min_side:
                raise UsageError(f"{name}: {w}x{h} pixels, smaller than the smallest side {min_side} training "
                                 "crops from")  # fmt: skip
            self.sizes.append((w, h))

    def identity(self) -> dict[str, Any]:
        """What the run's fingerprint records: the inputs, the count, a hash of names and sizes."""
        digest = hashlib.sha256(repr((self.names, self.sizes)).encode()).hexdigest()
        return {"inputs": [os.path.abspath(p) if "://" not in p else p for p in self.inputs],
                "images": len(self), "sha256": digest}  # fmt: skip

    def crops(self, indices: np.ndarray, epochs: np.ndarray, size: int, seed: int,
              scale: tuple[float, float] | None = None) -> torch.Tensor:  # fmt: skip
        """uint8 [B,3,size,size]: image indices[i] cropped with the generator of (seed, epochs[i], index)
        (the official crop, or a random-resized crop of `scale` of the area)."""
        from .image_augment import crop_rng, train_crop

        def one(i: int, e: int) -> torch.Tensor:
            return train_crop(self.items[i][1](), size, crop_rng(seed, e, i), scale)  # (3, S, S)

        jobs = [(int(i), int(e)) for i, e in zip(indices, epochs)]
        if self.workers > 1 and len(jobs) > 1:  # Pillow decodes without the GIL; each crop has its own generator
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="titok-crops")
            out = list(self._pool.map(lambda job: one(*job), jobs))
        else:
            out = [one(*job) for job in jobs]
        return torch.stack(out)  # (B, 3, S, S)
