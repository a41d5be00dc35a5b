"""Image quality metrics: how close a reconstruction is to its reference.

One home for every quality figure the library reports (bench's half-precision agreement,
examples/roundtrip.py's reconstruction PSNR; later SSIM, LPIPS, FID), so a figure means the same
thing wherever it is printed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover
    from .models.tokenizer import TiTokTokenizer


def psnr(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, data_range: float = 1.0) -> float:
    """PSNR in dB between two images (or batches) of the same shape.

    Values are clamped to [0, data_range] first, as they are when saved: 1.0 for float pixels,
    255 for uint8 arrays. Identical inputs give +inf. Computed in float64, so a uint8 pair gives
    the same figure as its float copy divided by 255.
    """
    x = _float64(a).clamp(0, data_range)
    y = _float64(b).clamp(0, data_range)
    if x.shape != y.shape:
        raise ValueError(f"psnr needs two images of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    mse = ((x - y) ** 2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)


def _float64(a: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A float64 copy (numpy arrays may be read-only, e.g. from a decoded image: torch warns on those)."""
    if isinstance(a, np.ndarray):
        return torch.from_numpy(np.array(a, dtype=np.float64))
    return a.double()


def precision_agreement(
    tok32: "TiTokTokenizer", tok_half: "TiTokTokenizer", images: torch.Tensor, chunk: int = 8
) -> dict[str, Any]:
    """A half-precision tokenizer against its float32 copy on real images (N, 3, S, S).

    VQ: share of identical token ids; VAE: max relative error of the latents. Both: PSNR between
    the two decodes of the float32 tokens (so only decoding differs), and the NaN count.
    """
    a, b, pa, pb = [], [], [], []
    for i in range(0, images.shape[0], chunk):
        xi = images[i : i + chunk]  # (n, 3, S, S)
        ca, cb = tok32.encode(xi), tok_half.encode(xi)  # VQ (n, K) ids; VAE (n, C, K) latents
        a.append(ca.cpu())
        b.append(cb.cpu())
        pa.append(tok32.decode(ca).cpu())  # (n, 3, S, S)
        pb.append(tok_half.decode(ca).cpu())
    ca, cb, xa, xb = torch.cat(a), torch.cat(b), torch.cat(pa), torch.cat(pb)
    out: dict[str, Any] = {"images": int(images.shape[0])}
    if tok32.is_vae:
        out["latent_max_rel_error"] = ((ca - cb).abs().max() / ca.abs().max()).item()
    else:
        out["token_agreement"] = (ca == cb).float().mean().item()
    out["decode_psnr_db"] = psnr(xb, xa)
    out["nan_count"] = int(xb.isnan().sum().item() + (cb.isnan().sum().item() if cb.is_floating_point() else 0))
    return out


__all__ = ["psnr", "precision_agreement"]
