"""Shared by tests/test_finetune_*.py: a distinct image domain and seeded stand-in LPIPS weights.

The domain: stripes of two random colours at random angles and frequencies, drawn with numpy at
80 x 96 pixels (so the training crops have something to choose from): nothing like the photos the
golden tokenizers were made from. The LPIPS files hold seeded random values under the cache names
(the rule of tests/reference/make_lpips_ssim_reference.py), so no test needs the network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def stripe_images(folder: Path, count: int, seed: int) -> Path:
    """`count` PNGs of coloured stripes in `folder`; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:80, 0:96]  # (H, W)
    for i in range(count):
        one, two = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        freq, angle = rng.uniform(0.05, 0.3), rng.uniform(0, np.pi)
        on = (np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * freq) > 0)[..., None]  # (H, W, 1)
        Image.fromarray(np.where(on, one, two).astype(np.uint8)).save(folder / f"stripes{i:04d}.png")
    return folder


def lpips_folder(folder: Path) -> Path:
    """Seeded VGG16 + LPIPS head weights under the names `--lpips DIR` looks for."""
    from titok_cli.quality.weights import known

    from .reference.make_lpips_ssim_reference import seeded_heads_state, seeded_vgg16_state

    folder.mkdir(parents=True, exist_ok=True)
    torch.save(seeded_vgg16_state(), folder / known("vgg16").filename)
    torch.save(seeded_heads_state(), folder / known("lpips-vgg").filename)
    return folder
