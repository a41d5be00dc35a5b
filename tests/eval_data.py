"""Inputs of the `titok eval gen/sweep` tests: seeded random FID Inception weights, a photo reference.

The public Inception weights are not available offline, so the tests run the real network on
random but seeded weights (the rule of tests/reference/make_fid_reference.py), saved to a file
and given with --inception like the real one. The reference batch is the test photos, center
cropped to the golden generators' 64 x 64 by the project's own preprocessing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tests.reference.make_fid_reference import random_inception_weights
from titok_cli.quality.inception import FIDInceptionV3


def write_random_inception(path: Path) -> Path:
    """A .pth with pytorch-fid's keys and seeded random values (loads through load_fid_inception)."""
    shapes = {k: tuple(v.shape) for k, v in FIDInceptionV3().state_dict().items()}
    torch.save(random_inception_weights(shapes), path)
    return path


def photo_images(images_dir: Path, size: int = 64) -> np.ndarray:
    """Every test photo as its `size` center crop, uint8 (N, size, size, 3), sorted by name."""
    from titok_cli.preprocess import load_image

    paths = sorted(p for p in images_dir.iterdir() if p.is_file())
    return np.stack([np.asarray(load_image(p, size)) for p in paths])  # (N, S, S, 3)


def write_photo_reference(images_dir: Path, path: Path, size: int = 64) -> Path:
    """An ADM-format reference batch (`arr_0` only) of the test photos."""
    np.savez(path, arr_0=photo_images(images_dir, size))
    return path
