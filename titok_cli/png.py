"""Writing uint8 images as PNG files: atomically, on background threads, and as a contact sheet."""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .atomic_files import atomic_path


def save_png(array: np.ndarray, path: str | Path) -> None:
    """uint8 [H,W,3] (or [H,W]) -> PNG at `path`, through a temporary file and a rename."""
    from PIL import Image

    image = Image.fromarray(array, mode="RGB") if array.ndim == 3 else Image.fromarray(array)
    with atomic_path(path, ".png", durable=False) as tmp, open(tmp, "wb") as fh:
        image.save(fh, format="PNG")


class PngWriter:
    """Compress PNGs on background threads while the model works on the next batch.

    Compression releases the GIL, so two threads keep up with the device. At most `max_pending`
    images wait in memory; the first failed write is raised on exit.
    """

    def __init__(self, threads: int = 2, max_pending: int = 64) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="png")
        self._pending: list[Future] = []
        self._max = max_pending

    def submit(self, array: np.ndarray, path: str | Path) -> None:
        self._pending.append(self._pool.submit(save_png, array.copy(), path))
        while len(self._pending) > self._max:
            self._pending.pop(0).result()

    def __enter__(self) -> "PngWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def contact_sheet(images: np.ndarray, columns: int | None = None, gap: int = 2) -> np.ndarray:
    """uint8 [N,H,W,C] -> one uint8 image: a grid (near-square unless `columns`) on white, `gap` px apart."""
    n, h, w, c = images.shape
    cols = columns or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    sheet = np.full((rows * h + (rows + 1) * gap, cols * w + (cols + 1) * gap, c), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        r, q = divmod(i, cols)
        top, left = gap + r * (h + gap), gap + q * (w + gap)
        sheet[top : top + h, left : left + w] = image
    return sheet


__all__ = ["save_png", "PngWriter", "contact_sheet"]
