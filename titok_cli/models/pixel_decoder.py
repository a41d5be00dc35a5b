"""MaskGIT-VQGAN convolutional decoder: a 256-channel code grid -> pixels (x16 upsampling).

Used by the two-stage tokenizers: the TiTok decoder predicts a soft mixture over the
1024 VQGAN codes for every grid cell, and this network paints the pixels.

Precision: `model.to(torch.bfloat16)` converts this decoder too (measured: PSNR against float32
about 37-38 dB on the golden tiny model with real photos and on full-size random weights, no
NaN; bfloat16 keeps float32's exponent range, and GroupNorm accumulates in float32 inside
PyTorch's kernels). float16 is refused here: its parameters stay float32 and it runs in float32,
because float16 VQGAN decoders are known to overflow into NaN/inf. In bfloat16 the convolutions
run channels-last (oneDNN/AMX on CPU, tensor cores on GPU), about twice as fast as NCHW bfloat16
on our CPU. float32 runs channels-last on AMD CPUs (1.15x there, benchmarks/README.md) and NCHW
elsewhere (measured no faster on Intel); `runtime.float32_channels_last` decides, and
TITOK_CHANNELS_LAST=1/0 overrides it.

Speed without changing results beyond float rounding (REFERENCE.md section 9):
  * nearest x2 upsampling followed by a 3x3 conv is computed as one 2x2 conv per output phase on
    the small grid ("sub-pixel" form, `upsample_conv3x3`): nearest upsampling repeats each input
    pixel, so the 3x3 taps that land on the same input pixel can be summed beforehand. Same
    `upsample_conv` parameters; 16 instead of 36 multiply-adds per output pixel and channel pair,
    and no 4x upsampled copy (measured float32 batch 8: the four upsampling convs 1.36 -> 0.77 s;
    max relative difference to the nearest+conv form about 4e-7).
  * with gradients off (inference), SiLU and the residual additions run in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import runtime
from .layers import HALF_DTYPES, KeepsFloat32


CHANNEL_MULT = (1, 1, 2, 2, 4)
NUM_RES_BLOCKS = 2
Z_CHANNELS = 256


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


def _silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU of a fresh intermediate: in place when no gradient is recorded."""
    return F.silu(x, inplace=not torch.is_grad_enabled())


def _add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b where `a` is a fresh intermediate: in place when no gradient is recorded."""
    return a.add_(b) if not torch.is_grad_enabled() else a + b


def subpixel_weights(weight: torch.Tensor) -> torch.Tensor:
    """3x3 conv weight [O,I,3,3] -> the four phase kernels [4*O,I,2,2] of `upsample_conv3x3`.

    Output row 2i+a of (nearest x2, then 3x3 conv, padding 1) reads input rows i-1, i, i (a = 0)
    or i, i, i+1 (a = 1): kernel rows {0}, {1,2} or {0,1}, {2} are summed; likewise for columns.
    Phase (a, b) is stored at channel block 2a+b.
    """
    groups = ((slice(0, 1), slice(1, 3)), (slice(0, 2), slice(2, 3)))
    phases = []
    for rows in groups:
        r = torch.stack([weight[:, :, s].sum(2) for s in rows], dim=2)  # (O, I, 2, 3)
        for cols in groups:
            phases.append(torch.stack([r[..., s].sum(-1) for s in cols], dim=-1))  # (O, I, 2, 2)
    return torch.cat(phases, dim=0)  # (4*O, I, 2, 2)


def upsample_conv3x3(x: torch.Tensor, phase_weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """conv3x3(nearest_x2(x)) with padding 1, from `subpixel_weights`; keeps x's memory format."""
    b, _, h, w = x.shape
    o = phase_weight.shape[0] // 4
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() \
        else torch.contiguous_format
    # Window (r, c) of the 1-padded input covers input rows r-1, r: phase a uses r = i + a.
    y = F.conv2d(F.pad(x, (1, 1, 1, 1)), phase_weight)  # (B, 4*O, H+1, W+1)
    y = y.unflatten(1, (2, 2, o))  # (B, 2, 2, O, H+1, W+1)
    out = torch.empty((b, o, 2 * h, 2 * w), dtype=y.dtype, device=y.device, memory_format=fmt)
    grid = out.unflatten(2, (h, 2)).unflatten(4, (w, 2))  # (B, O, H, 2, W, 2), a view of out
    for a in range(2):
        for c in range(2):
            grid[:, :, :, a, :, c] = y[:, a, c, :, a : a + h, c : c + w]
    if bias is not None:
        out += bias.view(1, -1, 1, 1)
    return out  # (B, O, 2H, 2W)


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
        h = self.conv1(_silu(self.norm1(x)))  # (B, out, H, W)
        h = self.conv2(_silu(self.norm2(h)))  # (B, out, H, W)
        if self.nin_shortcut is not None:
            return _add(self.nin_shortcut(h), h)  # the block input is discarded (official behaviour)
        return _add(h, x)


class UpLevel(nn.Module):
    """Res blocks at one resolution level, then (levels >= 1) nearest x2 and a 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int, upsample: bool) -> None:
        super().__init__()
        self.block = nn.ModuleList(
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels) for i in range(NUM_RES_BLOCKS)
        )
        self.upsample_conv = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=True) if upsample else None
        self._phase_cache: tuple[tuple, torch.Tensor] | None = None

    def phase_weight(self) -> torch.Tensor:
        """`subpixel_weights` of upsample_conv, recomputed only when the weight changes."""
        w = self.upsample_conv.weight  # type: ignore[union-attr]
        if torch.compiler.is_compiling():  # traced into the graph instead of cached
            return subpixel_weights(w)
        key = (w.data_ptr(), w._version, w.dtype, w.device, w.stride())
        if self._phase_cache is None or self._phase_cache[0] != key:
            with torch.no_grad():
                pw = subpixel_weights(w.float()).to(w.dtype)
                if not w.is_contiguous():
                    pw = pw.contiguous(memory_format=torch.channels_last)
            self._phase_cache = (key, pw)
        return self._phase_cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        if self.upsample_conv is not None:
            if torch.is_grad_enabled():  # keep the autograd graph on the parameter
                x = self.upsample_conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
            else:
                x = upsample_conv3x3(x, self.phase_weight(), self.upsample_conv.bias)  # (B, C, 2H, 2W)
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
        self._apply(lambda t: t)  # conv weights in this device's and dtype's memory format

    @property
    def memory_format(self) -> torch.memory_format:
        if self.conv_in.weight.dtype in HALF_DTYPES or (runtime.float32_channels_last() and self.conv_in.weight.device.type == "cpu"):
            return torch.channels_last
        return torch.contiguous_format

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
        return self.conv_out(_silu(self.norm_out(x)))  # (B, 3, 16g, 16g)
