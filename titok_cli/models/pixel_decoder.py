"""MaskGIT-VQGAN convolutional decoder: a 256-channel code grid -> pixels (x16 upsampling).

Used by the two-stage tokenizers: the TiTok decoder predicts a soft mixture over the
1024 VQGAN codes for every grid cell, and this network paints the pixels.

Precision: `model.to(torch.bfloat16)` converts this decoder too (measured: PSNR against float32
about 37-38 dB on the golden tiny model with real photos and on full-size random weights, no
NaN; bfloat16 keeps float32's exponent range, and GroupNorm accumulates in float32 inside
PyTorch's kernels). float16 is refused here: its parameters stay float32 and it runs in float32,
because float16 VQGAN decoders are known to overflow into NaN/inf. In bfloat16 the convolutions
run channels-last (oneDNN/AMX on CPU, tensor cores on GPU), about twice as fast as NCHW bfloat16
on our CPU; float32 stays NCHW, the exact path (channels-last measured no faster there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import HALF_DTYPES, KeepsFloat32

CHANNEL_MULT = (1, 1, 2, 2, 4)
NUM_RES_BLOCKS = 2
Z_CHANNELS = 256
NUM_PROXY_CODES = 1024


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice. Official quirk: the 1x1 shortcut is applied to conv2's output."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.nin_shortcut = (
            nn.Conv2d(out_channels, out_channels, 1, bias=False) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out, H, W)
        h = self.conv2(F.silu(self.norm2(h)))  # (B, out, H, W)
        if self.nin_shortcut is not None:
            return h + self.nin_shortcut(h)  # the block input is discarded (official behaviour)
        return x + h


class UpLevel(nn.Module):
    """Res blocks at one resolution level, then (levels >= 1) nearest x2 and a 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int, upsample: bool) -> None:
        super().__init__()
        self.block = nn.ModuleList(
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels) for i in range(NUM_RES_BLOCKS)
        )
        self.upsample_conv = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=True) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        if self.upsample_conv is not None:
            x = self.upsample_conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (B, C, 2H, 2W)
        return x


class PixelDecoder(KeepsFloat32):
    """Code grid [B,256,g,g] -> image [B,3,16g,16g]; `up` is indexed by level and run 4..0."""

    half_dtypes_allowed = (torch.bfloat16,)  # float16 stays float32 (overflow risk), see the module doc

    def __init__(self, hidden_channels: int = 128) -> None:
        super().__init__()
        top = hidden_channels * CHANNEL_MULT[-1]
        self.conv_in = nn.Conv2d(Z_CHANNELS, top, 3, padding=1, bias=True)
        self.mid = nn.ModuleList([ResnetBlock(top, top), ResnetBlock(top, top)])
        levels = []
        for level in range(len(CHANNEL_MULT)):
            in_mult = CHANNEL_MULT[min(level + 1, len(CHANNEL_MULT) - 1)]
            levels.append(
                UpLevel(hidden_channels * in_mult, hidden_channels * CHANNEL_MULT[level], upsample=level > 0)
            )
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(hidden_channels)
        self.conv_out = nn.Conv2d(hidden_channels, 3, 3, padding=1, bias=True)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.conv_in.weight.dtype in HALF_DTYPES else torch.contiguous_format

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        super()._apply(fn, recurse)
        fmt = self.memory_format
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.weight.device.type != "meta":
                m.weight.data = m.weight.data.contiguous(memory_format=fmt)
        return self

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """Any float codes in; runs in this decoder's parameter dtype; output in that dtype."""
        codes = codes.to(dtype=self.conv_in.weight.dtype, memory_format=self.memory_format)
        x = self.conv_in(codes)  # (B, 4h, g, g)
        for block in self.mid:
            x = block(x)
        for level in reversed(self.up):
            x = level(x)  # channels shrink, spatial size doubles (except level 0)
        return self.conv_out(F.silu(self.norm_out(x)))  # (B, 3, 16g, 16g)
