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


def train_crop(image: Image.Image, size: int, rng: np.random.Generator) -> torch.Tensor:
    """One official training view of `image`: short side to `size` (bicubic), a random size x size
    window, a horizontal flip half the time. Returns uint8 (3, size, size)."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"crop size must be a positive integer, got {size!r}")
    img = to_rgb(image)
    if min(img.size) < 1:
        raise ValueError(f"image has no pixels (size {img.size[0]} x {img.size[1]})")
    target = resized_size(img.size[0], img.size[1], size)
    if img.size != target:  # Pillow would copy an unchanged size anyway; skip the copy
        img = img.resize(target, resample=Image.Resampling.BICUBIC)
    box, flip = crop_box(img.size[0], img.size[1], size, rng)
    img = img.crop(box)
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pixels = np.asarray(img, dtype=np.uint8)  # (size, size, 3)
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())  # (3, size, size)


def train_crops(images: list[Image.Image], size: int, seed: int, epoch: int, indices: list[int]) -> torch.Tensor:
    """A batch of training views, image i drawn from crop_rng(seed, epoch, indices[i]): uint8 (B, 3, size, size)."""
    if len(images) != len(indices):
        raise ValueError(f"{len(images)} images but {len(indices)} indices")
    return torch.stack([train_crop(im, size, crop_rng(seed, epoch, i)) for im, i in zip(images, indices)])
