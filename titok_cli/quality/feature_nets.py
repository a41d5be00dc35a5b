"""The networks behind LPIPS and rFID/IS, loaded once in float32, and how to run them exactly."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

Inception = Callable[[torch.Tensor], Any]  # [0, 1] images (N, 3, H, W) -> (pool3 (N, 2048), logits (N, 1008))


@dataclass
class FeatureNets:
    """The networks behind LPIPS and rFID/IS (None: that metric is skipped) and their weight files."""

    lpips: torch.nn.Module | None = None
    inception: Inception | None = None
    weights: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # metric -> [{file, bytes}]


def describe_weights(paths: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """A weight file's identity for the report and the run fingerprint: its name and size."""
    return [{"file": Path(p).name, "bytes": Path(p).stat().st_size} for p in paths]


def load_feature_nets(device: torch.device | str, *, lpips: bool = True, fid: bool = True,
                      lpips_paths: Sequence[str | os.PathLike] = (),
                      inception_path: str | os.PathLike | None = None) -> FeatureNets:  # fmt: skip
    """LPIPS-VGG and the FID Inception in float32 on `device`, from the given files or the cache
    (see `quality.weights`: offline and absent is a FeatureWeightsError naming the file)."""
    from .inception import WEIGHTS_NAME, load_fid_inception
    from .lpips import LPIPS, lpips_files
    from .weights import weights_path

    nets = FeatureNets()
    if lpips:
        vgg16, heads = lpips_files(lpips_paths)
        nets.lpips = LPIPS.from_files(vgg16, heads).to(device)
        nets.weights["lpips"] = describe_weights([vgg16, heads])
    if fid:
        file = weights_path(WEIGHTS_NAME, inception_path)
        nets.inception = load_fid_inception(file, device=device)
        nets.weights["inception"] = describe_weights([file])
    return nets


@contextmanager
def full_float32() -> Iterator[None]:
    """Run the feature networks in full float32 on CUDA: PyTorch lets cuDNN convolutions (and may let
    matmuls) use TF32, and the agreement with the reference implementations was measured without it."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
