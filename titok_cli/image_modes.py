"""Pillow image modes -> RGB: the reference's `convert("RGB")`, except where that silently lies.

Kept apart from preprocess.py (which crops and reads files) because it is a table of per-mode
rules: every 8-bit mode converts exactly as the official pipeline does, and the wide modes whose
plain conversion turns a picture white or black are scaled by their range or refused.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Pillow modes holding 16-bit samples. Pillow 13's convert("RGB") clips these at 255 instead of
# scaling, so a 16-bit grayscale PNG would come out almost entirely white.
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


class PixelRangeError(ValueError):
    """Pixel values whose range we cannot map to 0..255 without guessing (read_image names the file)."""


def _high_bits(samples: np.ndarray, bits: int) -> Image.Image:
    """Unsigned `bits`-bit gray samples -> mode L keeping the top 8 bits (v * 257 -> v for 16 bits)."""
    top = (np.clip(samples.astype(np.int64), 0, (1 << bits) - 1) >> (bits - 8)).astype(np.uint8)
    return Image.fromarray(top)  # 2-D uint8 -> mode L


def _int_to_gray(image: Image.Image) -> Image.Image:
    """Mode I (32-bit signed) -> an image whose convert("RGB") is right, by the data's bit range.

    The range is the smallest of 8, 16, 24 or 31 (all of int32) bits that holds the largest value. Values up to
    255 are 8-bit data in a wide container (`L.convert("I")`, some PGMs) and take the reference's
    plain convert. Above that the image holds 16-bit (older Pillow opens 16-bit PNGs as I) or
    wider samples: keep the high byte of that range. Negative values (signed scientific data)
    have no range we could know, so they are refused, never clipped to black.
    """
    low, high = image.getextrema()
    if low < 0:
        raise PixelRangeError(f"32-bit integer image with negative values (min {low}, max {high}): unknown range")
    if high <= 255:
        return image  # convert("RGB") is right for 8-bit data
    bits = 16 if high <= 0xFFFF else 24 if high <= 0xFFFFFF else 31  # I is signed: 31 bits
    return _high_bits(np.asarray(image), bits)


def _float_to_gray(image: Image.Image) -> Image.Image:
    """Mode F (32-bit float) -> an image whose convert("RGB") is right.

    Values in 0..1 are scaled by 255, values in 0..255 kept as they are. The reference's
    convert("RGB") rounds 0..1 data to black; 0..255 data it converts well, and we leave that
    path byte-identical. Anything else (negative, above 255, NaN) is refused.
    """
    samples = np.asarray(image, dtype=np.float32)
    if not np.isfinite(samples).all():
        raise PixelRangeError("float image with NaN or infinite values")
    low, high = float(samples.min()), float(samples.max())
    if low >= 0.0 and high <= 1.0:
        scaled = np.clip(np.rint(samples.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled)  # 2-D uint8 -> mode L
    if low >= 0.0 and high <= 255.0:
        return image  # convert("RGB") is right for 0..255 data
    raise PixelRangeError(f"float image with values outside 0..1 and 0..255 (min {low:g}, max {high:g})")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB the way the reference does, except where that is garbage.

    The reference calls `convert("RGB")`, and we do too for every mode where that gives a
    sensible picture (L, 1, LA, P, RGBA, CMYK, ...; every 8-bit mode), so results stay
    bit-identical. Exceptions, where a bare convert silently turns the picture white or black:
    - 16-bit grayscale ("I;16*"): `convert` clips to 255 (measured with Pillow 13: camera.png * 257
      saved as a 16-bit PNG converts to mean 255.0 instead of 129). We keep the high byte
      (value >> 8), which maps v * 257 back to v exactly.
    - 32-bit integer ("I") holding more than 8 bits, and float ("F") holding 0..1 data: scaled by
      their range (`_int_to_gray`, `_float_to_gray`); ranges we cannot know raise PixelRangeError.
    - palette images with transparency go through RGBA first: same pixels as a direct convert
      (alpha is dropped either way) but without Pillow's "should be converted to RGBA" warning.
    """
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        return _high_bits(np.asarray(image), 16).convert("RGB")
    if image.mode == "I":
        return _int_to_gray(image).convert("RGB")
    if image.mode == "F":
        return _float_to_gray(image).convert("RGB")
    if image.mode in ("P", "PA") and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")
