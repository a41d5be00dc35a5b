"""The perceptual term of fine-tuning, named as the official configs name it.

The official trainer's `PerceptualLoss(model_name)` (modeling/modules/perceptual_loss.py of
bytedance/1d-tokenizer) takes "lpips", "convnext_s" or "lpips-convnext_s-A-B":
  * lpips: the LPIPS-VGG distance, mean over the batch;
  * convnext_s: both images resized to 224x224 (bilinear, antialiased), ImageNet-normalized,
    through torchvision's ConvNeXt-S; the mean squared difference of the 1000 logits;
  * lpips-convnext_s-A-B: (A * lpips + B * convnext_s) / (A + B).
The config's perceptual_weight then scales it. The official recipes (configs/training):
TiTok stage 2 (the two-stage models) "convnext_s" at weight 0.1; the single-stage recipes
"lpips-convnext_s-1.0-0.1" at weight 1.1, which is LPIPS + 0.1 ConvNeXt.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError

NAMES = ("lpips", "convnext_s", "lpips-convnext_s")  # what --perceptual takes, besides "auto"
MIX = (1.0, 0.1)  # lpips-convnext_s: the official A and B
DEFAULT_WEIGHTS = {"lpips": 1.0, "convnext_s": 0.1, "lpips-convnext_s": 1.1}  # 1.1 * (L + 0.1 C) / 1.1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CONVNEXT_SIZE = 224


def official_recipe(two_stage: bool) -> str:
    """The perceptual loss the official recipe of a tokenizer uses (stage 2 or single stage)."""
    return "convnext_s" if two_stage else "lpips-convnext_s"


def check_name(name: str) -> None:
    if name != "auto" and name not in NAMES:
        raise UsageError(f"perceptual loss {name!r} is not one of auto, {', '.join(NAMES)}")


class PerceptualLoss(nn.Module):
    """One scalar per batch for images in [0, 1], as the official module computes it; the
    networks are frozen and stay in eval mode."""

    def __init__(self, name: str, lpips: nn.Module | None = None, convnext: nn.Module | None = None) -> None:
        super().__init__()
        check_name(name)
        if name == "auto":
            raise ValueError("resolve 'auto' to the model's recipe (official_recipe) first")
        if ("lpips" in name) != (lpips is not None) or ("convnext_s" in name) != (convnext is not None):
            raise ValueError(f"perceptual loss {name!r} got the wrong networks")
        self.name = name
        self.lpips = lpips.requires_grad_(False).eval() if lpips is not None else None
        self.convnext = convnext.requires_grad_(False).eval() if convnext is not None else None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        return super().train(False)  # the official module calls eval() on every forward

    def convnext_distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean squared difference of ConvNeXt-S logits of x and y (each (B, 3, H, W) in [0, 1])."""
        size = (CONVNEXT_SIZE, CONVNEXT_SIZE)
        a = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)  # (B, 3, 224, 224)
        b = F.interpolate(y, size=size, mode="bilinear", align_corners=False, antialias=True)  # (B, 3, 224, 224)
        logits_a = self.convnext((a - self.mean) / self.std)  # (B, 1000)
        logits_b = self.convnext((b - self.mean) / self.std)  # (B, 1000)
        return F.mse_loss(logits_a, logits_b)

    def forward(self, images: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """The loss (a scalar) between originals and reconstructions, each (B, 3, H, W) in [0, 1]."""
        if self.name == "lpips":
            return self.lpips(images, recon).mean()
        if self.name == "convnext_s":
            return self.convnext_distance(recon, images)
        a, b = MIX
        return (a * self.lpips(images, recon).mean() + b * self.convnext_distance(recon, images)) / (a + b)


def build_perceptual(name: str, device: torch.device | str, lpips_paths: Sequence[str | os.PathLike] = (),
                     convnext_path: str | os.PathLike | None = None) -> tuple[PerceptualLoss, dict[str, Any]]:  # fmt: skip
    """The perceptual loss `name` on `device`, its networks loaded from the given files or the
    cache (`quality.weights`); also {"lpips": [...], "convnext": [...]}: the files used."""
    from ..quality.convnext import load_convnext_small
    from ..quality.feature_nets import describe_weights, load_feature_nets

    check_name(name)
    weights: dict[str, Any] = {}
    lpips = convnext = None
    if "lpips" in name:
        nets = load_feature_nets(device, lpips=True, fid=False, lpips_paths=lpips_paths)
        lpips, weights["lpips"] = nets.lpips, nets.weights["lpips"]
    if "convnext_s" in name:
        convnext, file = load_convnext_small(convnext_path, device)
        weights["convnext"] = describe_weights([file])
    return PerceptualLoss(name, lpips, convnext).to(device), weights


__all__ = ["DEFAULT_WEIGHTS", "NAMES", "PerceptualLoss", "build_perceptual", "official_recipe"]
