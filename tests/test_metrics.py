"""Quality metrics on real photos: PSNR agrees across pixel formats and with its definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from titok_cli.metrics import psnr


@pytest.fixture(scope="module")
def photo(images_dir) -> np.ndarray:
    path = next(p for p in sorted(images_dir.iterdir()) if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return np.asarray(Image.open(path).convert("RGB").resize((64, 64)), dtype=np.uint8)  # (64, 64, 3)


def test_psnr_matches_its_definition_on_a_real_photo(photo):
    noisy = np.clip(photo.astype(np.int16) + np.random.default_rng(0).integers(-8, 9, photo.shape), 0, 255)
    noisy = noisy.astype(np.uint8)
    mse = np.mean((photo.astype(np.float64) - noisy.astype(np.float64)) ** 2)
    assert psnr(photo, noisy, data_range=255) == pytest.approx(10 * math.log10(255**2 / mse))
    # the same pixels as floats in [0, 1], as tensors (C, H, W): the same figure
    a = torch.from_numpy(photo.copy()).permute(2, 0, 1) / 255
    b = torch.from_numpy(noisy).permute(2, 0, 1) / 255
    assert psnr(a, b) == pytest.approx(psnr(photo, noisy, data_range=255))
    assert psnr(a, a) == math.inf


def test_psnr_clamps_like_saved_pixels_and_checks_shapes(photo):
    a = torch.from_numpy(photo.copy()).float() / 255
    assert psnr(a, a + 2.0) == psnr(a, torch.ones_like(a))  # out-of-range values count as saved (clamped)
    with pytest.raises(ValueError, match="same shape"):
        psnr(a, a[:32])
