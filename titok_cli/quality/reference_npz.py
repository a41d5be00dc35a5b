"""ADM-style `.npz` archives (reference batches, sample archives): header checks and streamed images."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from titok_cli.errors import ImageError
from titok_cli.quality.fid import FeatureStats


@dataclass(frozen=True)
class ReferenceBatch:
    """An ADM-format `.npz`: images `arr_0` (N, H, W, 3) uint8, and/or precomputed `mu`/`sigma`.

    Only the headers are read on opening; `iter_images` streams the pixels from the archive in
    batches, so a 50 000-image file never has to fit in memory.
    """

    path: Path
    count: int | None  # images in arr_0, None without arr_0
    image_shape: tuple[int, int, int] | None  # (H, W, 3)
    stats: FeatureStats | None  # from mu/sigma, None without them

    def iter_images(self, batch_size: int = 256, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """uint8 batches (B, H, W, 3) of images [start, stop) in file order (a rank takes its slice)."""
        if self.count is None or self.image_shape is None:
            raise ImageError(str(self.path), "holds no images (arr_0), only statistics")
        if start < 0 or batch_size < 1:
            raise ValueError(f"need start >= 0 and batch_size >= 1, got {start} and {batch_size}")
        stop = self.count if stop is None else min(stop, self.count)
        row = int(np.prod(self.image_shape))
        with zipfile.ZipFile(self.path) as archive, archive.open("arr_0.npy") as fh:
            _read_npy_header(fh, self.path, "arr_0")
            fh.seek(fh.tell() + start * row)
            for first in range(start, stop, batch_size):
                n = min(batch_size, stop - first)
                data = fh.read(n * row)
                if len(data) != n * row:
                    raise ImageError(str(self.path), f"arr_0 is truncated: image {first + len(data) // row} is incomplete")
                yield np.frombuffer(bytearray(data), dtype=np.uint8).reshape(n, *self.image_shape)  # writable


def images_to_tensor(batch: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) in [0, 1], the FID Inception's input."""
    pixels = torch.from_numpy(np.require(batch, dtype=np.uint8, requirements=["C", "W"]))  # (B, H, W, 3)
    return pixels.permute(0, 3, 1, 2).float() / 255  # (B, 3, H, W)


def _read_npy_header(fh: io.BufferedIOBase, path: Path, name: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype of one .npy member, leaving `fh` at its first data byte."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(fh)
        return np.lib.format.read_array_header_2_0(fh)
    except (ValueError, OSError, EOFError) as exc:
        raise ImageError(str(path), f"{name} is not a readable .npy array ({exc})") from None


def _load_member(archive: zipfile.ZipFile, path: Path, name: str) -> np.ndarray:
    try:
        with archive.open(f"{name}.npy") as fh:
            return np.lib.format.read_array(fh, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ImageError(str(path), f"{name} is not a readable numeric array ({str(exc).splitlines()[0]})") from None


def _check_images(archive: zipfile.ZipFile, path: Path) -> tuple[int, tuple[int, int, int]]:
    info = archive.getinfo("arr_0.npy")
    try:
        with archive.open(info) as fh:
            shape, fortran, dtype = _read_npy_header(fh, path, "arr_0")
            header_bytes = fh.tell()
    except zipfile.BadZipFile as exc:
        raise ImageError(str(path), f"arr_0 cannot be read from the archive ({exc})") from None
    if dtype != np.uint8:
        raise ImageError(str(path), f"arr_0 must hold uint8 pixels, found {dtype}")
    if len(shape) != 4 or shape[3] != 3:
        raise ImageError(str(path), f"arr_0 must have shape (N, H, W, 3), found {shape}")
    if fortran:
        raise ImageError(str(path), "arr_0 is stored in Fortran order; save it C-contiguous")
    if min(shape) < 1:
        raise ImageError(str(path), f"arr_0 holds no pixels (shape {shape})")
    expected = header_bytes + int(np.prod(shape))
    if info.file_size < expected:
        raise ImageError(str(path), f"arr_0 is truncated: {info.file_size} bytes for shape {shape} (needs {expected})")
    return shape[0], (shape[1], shape[2], shape[3])


def _check_stats(archive: zipfile.ZipFile, path: Path) -> FeatureStats:
    mu, sigma = _load_member(archive, path, "mu"), _load_member(archive, path, "sigma")
    if not (np.issubdtype(mu.dtype, np.floating) and np.issubdtype(sigma.dtype, np.floating)):
        raise ImageError(str(path), f"mu and sigma must be float arrays, found {mu.dtype} and {sigma.dtype}")
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ImageError(str(path), f"mu must be (D,) and sigma (D, D), found {mu.shape} and {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ImageError(str(path), "mu or sigma contains NaN or infinity")
    if not np.allclose(sigma, sigma.T, rtol=1e-5, atol=1e-8):
        raise ImageError(str(path), "sigma is not symmetric, so it is no covariance matrix")
    return FeatureStats(mu.astype(np.float64), sigma.astype(np.float64), None)


def read_reference_npz(path: str | os.PathLike) -> ReferenceBatch:
    """Open an ADM-style `.npz` (reference batch or sample archive) and check its headers.

    Accepts `arr_0` uint8 images (N, H, W, 3), `mu`/`sigma` statistics, or both (then FID can use
    the statistics and precision/recall the images). Anything else raises ImageError naming the
    file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(str(path), "no such file")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ImageError(str(path), f"not an .npz archive ({exc})") from None
    with archive:
        names = {n.removesuffix(".npy") for n in archive.namelist() if n.endswith(".npy")}
        has_images = "arr_0" in names
        has_stats = "mu" in names or "sigma" in names
        if not has_images and not has_stats:
            found = ", ".join(sorted(names)) or "nothing"
            raise ImageError(str(path), f"holds neither arr_0 (images) nor mu and sigma (statistics); found {found}")
        if has_stats and not {"mu", "sigma"} <= names:
            raise ImageError(str(path), f"has {'mu' if 'mu' in names else 'sigma'} without "
                                        f"{'sigma' if 'mu' in names else 'mu'}")  # fmt: skip
        count, shape = _check_images(archive, path) if has_images else (None, None)
        stats = _check_stats(archive, path) if has_stats else None
    return ReferenceBatch(path, count, shape, stats)
