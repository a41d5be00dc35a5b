"""LPIPS with the VGG16 backbone and the v0.1 linear heads (Zhang et al. 2018), in our own code.

The distance the papers report as "LPIPS" for reconstructions: both images go through the same
VGG16 feature stack, each of five ReLU outputs is unit-normalised along channels, the squared
difference is weighted per channel by a learned 1x1 head, averaged over space, and the five
layer scores are summed. Two public files hold the weights, and each loads here unchanged:

- torchvision's `vgg16-397923af.pth` into `LPIPS.backbone` (keys `features.0.weight` ...; the
  file's `classifier.*` keys are not part of LPIPS and are dropped by name, nothing else is);
- the lpips package's `weights/v0.1/vgg.pth` into `LPIPS.heads` (keys `lin0.model.1.weight` ...).

Nothing in `forward` runs in place or under `torch.no_grad`, so the module also serves as a
training loss: gradients reach the input images. The weights themselves are frozen
(requires_grad False), as a metric's should be; `requires_grad_(True)` undoes that.

Inputs are not clamped (lpips does not clamp either): clamp decoder output to [0, 1] first when
the figure should describe the saved image. On CUDA, PyTorch lets cuDNN run float32 convolutions
in TF32 by default (`torch.backends.cudnn.allow_tf32`); the agreement with the lpips package
measured in the tests is for full float32, so a caller that wants it sets that flag to False.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import load_into, read_state_dict
from ..errors import CheckpointError, FeatureWeightsError, UsageError

# The lpips package's ScalingLayer: the ImageNet mean/std the VGG was trained with, written for
# inputs already mapped to [-1, 1] ((x - shift) / scale).
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)

# Added to the channel norm before dividing (lpips.normalize_tensor), so an all-zero feature
# vector gives zeros instead of NaN.
EPS = 1e-10

# torchvision's vgg16 `features`: 3x3 convolutions ("M" = 2x2 max pool). Indices in the
# Sequential (and so the state-dict keys) follow from this list: conv, ReLU, conv, ReLU, pool, ...
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)

# Indices in `features` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3: LPIPS reads these five.
TAPS = (3, 8, 15, 22, 29)
CHANNELS = (64, 128, 256, 512, 512)


class VGG16Features(nn.Module):
    """VGG16's convolutional stack up to relu5_3, with torchvision's `features.*` key names."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for spec in VGG16_LAYOUT:
            if spec == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c_in, int(spec), kernel_size=3, padding=1), nn.ReLU()]
                c_in = int(spec)
        self.features = nn.Sequential(*layers)  # indices 0..29; torchvision's final pool (30) is unused

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in TAPS:
                taps.append(x)  # (N, C_l, H / 2^l, W / 2^l)
        return taps


class LinearHead(nn.Module):
    """One 1x1 channel weighting. Slot 0 held a Dropout in lpips' training code; an Identity keeps
    the index, so the key stays `model.1.weight` and the module never drops anything."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LinearHeads(nn.Module):
    """The five v0.1 heads, named `lin0` ... `lin4` as in the lpips package's `vgg.pth`."""

    def __init__(self) -> None:
        super().__init__()
        for i, c in enumerate(CHANNELS):
            self.add_module(f"lin{i}", LinearHead(c))

    def __getitem__(self, i: int) -> LinearHead:
        return getattr(self, f"lin{i}")


def unit_normalize(feat: torch.Tensor) -> torch.Tensor:
    """Divide each spatial position's feature vector by its L2 norm (+ EPS), as lpips does."""
    norm = feat.pow(2).sum(dim=1, keepdim=True).sqrt()  # (N, 1, H, W)
    return feat / (norm + EPS)


def vgg16_features_state(state: Mapping[str, torch.Tensor], where: str = "VGG16 weights") -> dict[str, torch.Tensor]:
    """The `features.*` tensors of a torchvision VGG16 state dict; its `classifier.*` keys are
    dropped by name. Any other key stays, so a strict load still reports it."""
    kept = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    if not any(k.startswith("features.") for k in kept):
        raise CheckpointError(f"{where}: no 'features.*' keys: not a torchvision VGG16 state dict")
    return kept


class LPIPS(nn.Module):
    """LPIPS-VGG v0.1 distance between two image batches in [0, 1]; one value per pair."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = VGG16Features()
        self.heads = LinearHeads()
        # Not in any weight file, so kept out of state_dict (persistent=False) but moved by .to().
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_state_dicts(
        cls, vgg16: Mapping[str, torch.Tensor], heads: Mapping[str, torch.Tensor]
    ) -> LPIPS:
        """Build from torchvision's VGG16 state dict (classifier keys allowed) and lpips' heads."""
        model = cls()
        model.load_vgg16(vgg16)
        model.load_heads(heads)
        return model

    @classmethod
    def from_files(cls, vgg16_path: str | os.PathLike, heads_path: str | os.PathLike) -> LPIPS:
        """Build from the two weight files (.pth read with weights_only=True, or .safetensors)."""
        model = cls()
        model.load_vgg16(read_state_dict(vgg16_path), str(vgg16_path))
        model.load_heads(read_state_dict(heads_path), str(heads_path))
        return model

    def load_vgg16(self, state: Mapping[str, torch.Tensor], where: str = "VGG16 weights") -> None:
        """Strictly load the backbone; raises CheckpointError naming every key that does not fit."""
        load_into(self.backbone, vgg16_features_state(state, where), where)

    def load_heads(self, state: Mapping[str, torch.Tensor], where: str = "LPIPS heads") -> None:
        """Strictly load the five linear heads; raises CheckpointError naming every misfit."""
        load_into(self.heads, state, where)

    def layer_distances(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-layer LPIPS terms (N, 5) for images in [0, 1]; `forward` is their sum."""
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS needs two (N, 3, H, W) batches of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        if not (x.is_floating_point() and y.is_floating_point()):
            raise ValueError(f"LPIPS needs float images in [0, 1], got {x.dtype} and {y.dtype}")
        dtype = self.shift.dtype
        n = x.shape[0]
        both = torch.cat([x.to(dtype), y.to(dtype)])  # (2N, 3, H, W): one pass through VGG
        both = (2 * both - 1 - self.shift) / self.scale  # [0,1] -> [-1,1] (lpips normalize=True) -> VGG input
        terms = []
        for i, feat in enumerate(self.backbone(both)):  # (2N, C_l, H_l, W_l)
            f = unit_normalize(feat)
            diff = (f[:n] - f[n:]).pow(2)  # (N, C_l, H_l, W_l)
            terms.append(self.heads[i](diff).mean(dim=(1, 2, 3)))  # (N,): 1 output channel, spatial mean
        return torch.stack(terms, dim=1)  # (N, 5)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distances (N,) between x and y, each (N, 3, H, W) in [0, 1]."""
        return self.layer_distances(x, y).sum(dim=1)  # (N,)


VGG16_WEIGHTS = "vgg16"  # the two entries of titok_cli.quality.weights that LPIPS needs
HEADS_WEIGHTS = "lpips-vgg"


def lpips_files(paths: Sequence[str | os.PathLike] = ()) -> tuple[Path, Path]:
    """(VGG16 file, heads file) for `--lpips`: nothing (the cache, or one download each), a
    folder holding both under their cache names, or the two files in either order (told apart
    by their keys: `features.*` is the VGG16, `lin*` the heads)."""
    from .weights import known, weights_path

    paths = [Path(p).expanduser() for p in paths]
    if not paths:
        return weights_path(VGG16_WEIGHTS), weights_path(HEADS_WEIGHTS)
    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0]
        return (weights_path(VGG16_WEIGHTS, folder / known(VGG16_WEIGHTS).filename),
                weights_path(HEADS_WEIGHTS, folder / known(HEADS_WEIGHTS).filename))  # fmt: skip
    if len(paths) != 2:
        raise UsageError("--lpips takes a folder holding both LPIPS weight files, or the two files "
                         f"(torchvision's {known(VGG16_WEIGHTS).filename} and lpips' vgg.pth); got {len(paths)} paths")  # fmt: skip
    for p in paths:
        if not p.is_file():
            raise FeatureWeightsError(f"{p}: no such file (LPIPS weights, given with --lpips)")
    a, b = paths
    a_is_vgg = any(k.startswith("features.") for k in read_state_dict(a))
    return (a, b) if a_is_vgg else (b, a)


def load_lpips(paths: Sequence[str | os.PathLike] = (), device: torch.device | str = "cpu") -> LPIPS:
    """LPIPS-VGG in float32 on `device`, its weights found as `lpips_files` says."""
    vgg16, heads = lpips_files(paths)
    return LPIPS.from_files(vgg16, heads).to(device)
