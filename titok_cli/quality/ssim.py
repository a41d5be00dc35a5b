"""SSIM (Wang et al. 2004) with the 11x11 Gaussian window, as papers report it for reconstructions.

The figure matches scikit-image's `structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1.0, channel_axis=...)` and pytorch-msssim's
`ssim(a, b, data_range=1.0, size_average=False)`: Gaussian weights with sigma 1.5 truncated to
11 taps, population (not sample) covariances, C1 = (0.01 * 1)^2, C2 = (0.03 * 1)^2, the SSIM map
averaged over pixels, then over the three channels.

Borders: only the "valid" region is averaged, i.e. the (H - 10) x (W - 10) positions whose
11 x 11 window lies entirely inside the image, and no padding is ever read. pytorch-msssim gets
there by convolving without padding; scikit-image filters the whole image with reflected borders
and then crops the 5-pixel strip before averaging, which leaves exactly the same positions
(a reflected pixel only enters windows that are cropped). Both references agree there, so we
follow that region; it needs images of at least 11 x 11.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

WINDOW = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Normalised 1-D Gaussian taps (size,), centred, exp(-d^2 / (2 sigma^2)) before normalising."""
    d = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(d**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype)


def _blur_valid(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian over H then W of every channel, no padding: (N, C, H, W) -> (N, C, H-10, W-10)."""
    c = x.shape[1]
    k = taps.numel()
    x = F.conv2d(x, taps.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)  # (N, C, H-10, W)
    return F.conv2d(x, taps.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)  # (N, C, H-10, W-10)


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-pixel SSIM over the valid region: (N, C, H, W) pair -> (N, C, H-10, W-10).

    Computed in float32, or float64 when an input is float64. Differentiable.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"SSIM needs two (N, C, H, W) batches of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[2:]) < WINDOW:
        raise ValueError(f"SSIM needs images of at least {WINDOW} x {WINDOW} pixels, got {tuple(x.shape[2:])}")
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    x, y = x.to(dtype), y.to(dtype)
    c = x.shape[1]
    taps = gaussian_window(dtype=dtype).to(x.device)
    moments = _blur_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), taps)  # (N, 5C, H-10, W-10)
    mx, my, mxx, myy, mxy = moments.split(c, dim=1)  # each (N, C, H-10, W-10)
    vx, vy, cxy = mxx - mx * mx, myy - my * my, mxy - mx * my  # population (co)variances
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """SSIM per image (N,) of two (N, C, H, W) batches in [0, data_range]: mean over the valid
    region of each channel, then over channels."""
    return ssim_map(x, y, data_range).mean(dim=(2, 3)).mean(dim=1)  # (N,)

