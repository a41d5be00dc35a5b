"""The random training crop of the official tokenizer trainer, without torchvision.

The official pipeline (bytedance/1d-tokenizer, data/webdataset_reader.py, `ImageTransform` with
the configs' resize_shorter_edge = crop_size, random_crop and random_flip on) is NOT a
random-resized crop: it is
  1. torchvision Resize(size, BICUBIC, antialias): the short side becomes `size`, the long side
     int(size * long / short) (truncated), by Pillow's bicubic resize (antialiased when shrinking);
  2. RandomCrop(size): a size x size window at a uniform offset along the long side;
  3. RandomHorizontalFlip(0.5).
The evaluation crop (`titok_cli.preprocess.center_crop`, the ADM crop) differs on purpose: it is
what published reconstruction numbers use.

`train_crop(..., scale=(lo, hi))` is the other common choice, a random-resized crop (the
Inception-style crop of torchvision's RandomResizedCrop: a window of lo..hi of the area with an
aspect ratio between 3/4 and 4/3, resized to size x size) followed by the same flip; useful when
the user's images are few and large. It draws from the same per-image generator.

Randomness: the three draws of an image (top, left, flip) come from `crop_rng(seed, epoch, index)`,
so the crop of an image is a pure function of those numbers: a resumed run, a different number
of ranks or of loader workers sees the same pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..image_modes import to_rgb


def crop_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one image's crop: numpy's SeedSequence over (seed, epoch, index)."""
    for name, value in (("seed", seed), ("epoch", epoch), ("index", index)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"crop {name} must be an integer >= 0, got {value!r}")
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the short side `size` and the long side truncated, as torchvision's Resize(int)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def crop_box(width: int, height: int, size: int, rng: np.random.Generator) -> tuple[tuple[int, int, int, int], bool]:
    """((left, top, right, bottom) in the resized image, flip?) for one draw; always three draws."""
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    flip = bool(rng.random() < 0.5)
    return (left, top, left + size, top + size), flip


RATIO = (3 / 4, 4 / 3)  # aspect ratios a random-resized window may take
_TRIES = 10  # windows drawn before falling back to the largest centred one that fits RATIO


def resized_crop_box(width: int, height: int, scale: tuple[float, float],
                     rng: np.random.Generator) -> tuple[int, int, int, int]:  # fmt: skip
    """(left, top, right, bottom) of a random window covering scale[0]..scale[1] of the area, its
    aspect ratio log-uniform in RATIO; after _TRIES misses, the centred window clamped to RATIO."""
    area = width * height
    log_lo, log_hi = np.log(RATIO[0]), np.log(RATIO[1])
    for _ in range(_TRIES):
        target = area * rng.uniform(scale[0], scale[1])
        ratio = float(np.exp(rng.uniform(log_lo, log_hi)))
        w, h = int(round(np.sqrt(target * ratio))), int(round(np.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < RATIO[0]:
        w, h = width, int(round(width / RATIO[0]))
    elif in_ratio > RATIO[1]:
        w, h = int(round(height * RATIO[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def train_crop(image: Image.Image, size: int, rng: np.random.Generator,
               scale: tuple[float, float] | None = None) -> torch.Tensor:  # fmt: skip
    """One training view of `image`, flipped left-right half the time. Returns uint8 (3, size, size).

    Default: the official view (short side to `size` by bicubic, a random size x size window).
    With `scale`: a random-resized crop of that share of the area, resized to size x size."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"crop size must be a positive integer, got {size!r}")
    img = to_rgb(image)
    if min(img.size) < 1:
        raise ValueError(f"image has no pixels (size {img.size[0]} x {img.size[1]})")
    if scale is not None:
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(f"crop scale must satisfy 0 < low <= high <= 1, got {scale}")
        box = resized_crop_box(img.size[0], img.size[1], scale, rng)
        img = img.resize((size, size), resample=Image.Resampling.BICUBIC, box=box)
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy())  # (3, size, size)
    target = resized_size(img.size[0], img.size[1], size)
    if img.size != target:  # Pillow would copy an unchanged size anyway; skip the copy
        img = img.resize(target, resample=Image.Resampling.BICUBIC)
    box, flip = crop_box(img.size[0], img.size[1], size, rng)
    img = img.crop(box)
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pixels = np.asarray(img, dtype=np.uint8)  # (size, size, 3)
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())  # (3, size, size)


def train_crops(images: list[Image.Image], size: int, seed: int, epoch: int, indices: list[int],
                scale: tuple[float, float] | None = None) -> torch.Tensor:  # fmt: skip
    """A batch of training views, image i drawn from crop_rng(seed, epoch, indices[i]): uint8 (B, 3, size, size)."""
    if len(images) != len(indices):
        raise ValueError(f"{len(images)} images but {len(indices)} indices")
    return torch.stack([train_crop(im, size, crop_rng(seed, epoch, i), scale) for im, i in zip(images, indices)])
