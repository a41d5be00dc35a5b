"""The patch discriminator of TiTok's stage-2 / single-stage tokenizer training, in our own code.

Architecture and state-dict keys are the official `NLayerDiscriminator`'s (bytedance/1d-tokenizer,
modeling/modules/discriminator.py, default arguments), so a discriminator saved by the official
trainer (the `discriminator.*` keys of its loss module) loads here strictly:

  block_in    5x5 conv 3 -> 128, LeakyReLU(0.1)                         (N, 128, H, W)
  blocks.i    3x3 conv, blur-downsample x2, GroupNorm(32), LeakyReLU(0.1)  128 -> 128 -> 256 -> 512
  pool        adaptive max pool to 16 x 16                               (N, 512, 16, 16)
  to_logits   1x1 conv, LeakyReLU(0.1), 5x5 conv 512 -> 1                (N, 1, 16, 16)

Every convolution pads "same" as TensorFlow does (the extra pixel of an even padding goes to the
right/bottom). The blur kernel is a persistent buffer (`blocks.i.1.kernel`), as in the official.

One change that does not alter any value: when the feature map divides into 16 x 16 evenly (any
input side that is a multiple of 128, e.g. 256), the pool runs as a plain max pool with that
stride, which is the same arithmetic; CUDA has no deterministic backward for the adaptive max
pool, so without this `--deterministic` runs would fail.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

HIDDEN = 128
STAGES = 3
POOLED = 16  # side of the logit map before the last two convolutions
SLOPE = 0.1  # LeakyReLU negative slope
BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)  # the official blur kernel for blur_kernel_size 4


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of one side so the output has ceil(size / stride) positions."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: int, stride: int, dilation: int = 1) -> torch.Tensor:
    """Zero-pad the last two dims of `x` the TensorFlow "SAME" way (no copy when nothing is needed)."""
    top, bottom = same_padding(x.shape[-2], kernel, stride, dilation)
    left, right = same_padding(x.shape[-1], kernel, stride, dilation)
    if top or bottom or left or right:
        x = F.pad(x, [left, right, top, bottom])
    return x


class SameConv2d(nn.Conv2d):
    """nn.Conv2d (same parameter names) with "SAME" padding computed from the input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_same(x, self.kernel_size[0], self.stride[0], self.dilation[0])  # (N, C, H', W')
        return super().forward(x)


class BlurDownsample(nn.Module):
    """Depthwise [1,3,3,1] x [1,3,3,1] blur with stride 2 (anti-aliased halving); kernel kept as a buffer."""

    def __init__(self, taps: tuple[float, ...] = BLUR_TAPS) -> None:
        super().__init__()
        row = torch.tensor(taps, dtype=torch.float32)
        kernel = row[None, :] * row[:, None]
        self.register_buffer("kernel", (kernel / kernel.sum())[None, None])  # (1, 1, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        x = pad_same(x, self.kernel.shape[-1], 2)
        weight = self.kernel.to(x.dtype).expand(channels, -1, -1, -1)  # (C, 1, k, k)
        return F.conv2d(x, weight, stride=2, groups=channels)  # (N, C, ceil(H/2), ceil(W/2))


class MaxPoolTo(nn.Module):
    """Adaptive max pool to `side` x `side`; a plain strided max pool when the input divides evenly."""

    def __init__(self, side: int) -> None:
        super().__init__()
        self.side = side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.side == 0 and w % self.side == 0:
            step = (h // self.side, w // self.side)
            return F.max_pool2d(x, kernel_size=step, stride=step)  # (N, C, side, side)
        return F.adaptive_max_pool2d(x, self.side)  # (N, C, side, side)


def _act() -> nn.Module:
    return nn.LeakyReLU(SLOPE)


class NLayerDiscriminator(nn.Module):
    """The official TiTok patch discriminator: images in [0, 1] -> a 16 x 16 map of real/fake logits."""

    def __init__(self, channels: int = 3, hidden: int = HIDDEN, stages: int = STAGES) -> None:
        super().__init__()
        widths = [hidden] + [hidden * 2**i for i in range(stages)]  # (128, 128, 256, 512) by default
        self.block_in = nn.Sequential(SameConv2d(channels, hidden, kernel_size=5), _act())
        self.blocks = nn.ModuleList(
            nn.Sequential(
                SameConv2d(c_in, c_out, kernel_size=3),
                BlurDownsample(),
                nn.GroupNorm(32, c_out),
                _act(),
            )
            for c_in, c_out in zip(widths[:-1], widths[1:])
        )
        self.pool = MaxPoolTo(POOLED)
        last = widths[-1]
        self.to_logits = nn.Sequential(SameConv2d(last, last, kernel_size=1), _act(), SameConv2d(last, 1, kernel_size=5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block_in(x)  # (N, 128, H, W)
        for block in self.blocks:
            h = block(h)  # (N, C_i, H / 2^i, W / 2^i)
        h = self.pool(h)  # (N, 512, 16, 16)
        return self.to_logits(h)  # (N, 1, 16, 16)


def build_discriminator(seed: int = 0, device: torch.device | str = "cpu") -> NLayerDiscriminator:
    """A freshly initialised discriminator (PyTorch's default init, as the official), the same for
    the same seed on every machine: built on the CPU under a forked RNG, so the global RNG is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = NLayerDiscriminator()
    return model.to(device)


PatchDiscriminator = NLayerDiscriminator  # the name the fine-tuning job may use; same class
