"""ConvNeXt-S, the ImageNet classifier behind the official stage-2 perceptual loss.

The official TiTok trainer compares the ImageNet logits of torchvision's `convnext_small`
(IMAGENET1K_V1 weights, file `convnext_small-0c510722.pth`) for an image and its reconstruction.
This is the same network with torchvision's module names, so that file loads strictly and
nothing of torchvision is needed at run time. Stochastic depth is left out: the official loss
always runs the network in eval mode, where it does nothing. Checked against torchvision in
tests/test_convnext.py (a small configuration's outputs, and ConvNeXt-S's keys and shapes).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import load_into, read_state_dict

SMALL_DIMS = (96, 192, 384, 768)
SMALL_DEPTHS = (3, 3, 27, 3)
WEIGHTS_NAME = "convnext-s"  # the titok_cli.quality.weights entry
EPS = 1e-6  # every LayerNorm of torchvision's ConvNeXt


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (each position on its own)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)  # (N, H, W, C)
        return y.permute(0, 3, 1, 2)  # (N, C, H, W)


class _Permute(nn.Module):
    """A parameter-free reordering of axes; keeps the indices of torchvision's `block.*` keys."""

    def __init__(self, dims: Sequence[int]) -> None:
        super().__init__()
        self.dims = tuple(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.dims)


class CNBlock(nn.Module):
    """Depthwise 7x7 conv, LayerNorm, 4x MLP with GELU, scaled per channel, plus the input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim),  # block.0
            _Permute((0, 2, 3, 1)),
            nn.LayerNorm(dim, eps=EPS),  # block.2
            nn.Linear(dim, 4 * dim),  # block.3
            nn.GELU(),
            nn.Linear(4 * dim, dim),  # block.5
            _Permute((0, 3, 1, 2)),
        )
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer_scale * self.block(x)  # (N, C, H, W)


class ConvNeXt(nn.Module):
    """`features` (stem, then stages and 2x2 downsamplings in turn), average pool, `classifier`."""

    def __init__(self, dims: Sequence[int] = SMALL_DIMS, depths: Sequence[int] = SMALL_DEPTHS,
                 num_classes: int = 1000) -> None:  # fmt: skip
        super().__init__()
        stem = nn.Sequential(nn.Conv2d(3, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0], eps=EPS))
        layers: list[nn.Module] = [stem]
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            layers.append(nn.Sequential(*(CNBlock(dim) for _ in range(depth))))
            if i + 1 < len(dims):
                layers.append(nn.Sequential(LayerNorm2d(dim, eps=EPS), nn.Conv2d(dim, dims[i + 1], kernel_size=2, stride=2)))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(LayerNorm2d(dims[-1], eps=EPS), nn.Flatten(1), nn.Linear(dims[-1], num_classes))
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalized images (N, 3, H, W) -> logits (N, classes)."""
        x = self.features(x)  # (N, C, H/32, W/32)
        x = x.mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1), the adaptive average pool
        return self.classifier(x)  # (N, classes)


def load_convnext_small(path: str | os.PathLike | None = None, device: torch.device | str = "cpu") -> tuple[ConvNeXt, str]:
    """ConvNeXt-S from torchvision's weight file (`path`, else the cache, else one download; see
    `quality.weights`), frozen, in eval mode on `device`. Returns the network and the file used."""
    from .weights import weights_path

    file = weights_path(WEIGHTS_NAME, path)
    net = ConvNeXt()
    load_into(net, read_state_dict(file), str(file))
    return net.to(device), str(file)


__all__ = ["ConvNeXt", "load_convnext_small"]
