"""Transformer building blocks shared by the TiTok encoder and decoder.

Attribute names follow the CLIP-style layout of the official checkpoints
(`ln_1`, `attn.in_proj_weight`, `mlp.c_fc`, ...), so weights load with a plain strict
`load_state_dict`. Attention runs through `scaled_dot_product_attention`, batch-first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import runtime

HALF_DTYPES = (torch.float16, torch.bfloat16)

# CPU inference in float32 and bfloat16 runs the fully connected layers through oneDNN's linear op
# instead of F.linear. float32: ATen's F.linear calls MKL sgemm, which takes an AVX2 code path on
# AMD CPUs; oneDNN's AVX-512 kernels are 2.2x faster at our shapes on the AMD EPYC (Zen 5)
# machines we measure, on a par on Intel (benchmarks/README.md). Both are float32 GEMMs with
# float32 accumulation; only the summation order differs (~1e-6 relative, far inside
# REFERENCE.md section 9). bfloat16: ATen already uses oneDNN, so the product is bit-identical;
# calling the op directly lets GELU fuse into the GEMM (10-20% on the MLP's first layer).
# Only on x86-64, where it was measured; elsewhere (ARM) F.linear keeps its own backend.
# TITOK_CPU_LINEAR=aten restores F.linear everywhere (runtime.onednn_linear decides, read once).
_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


def _use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """oneDNN only for CPU inference in float32 / bfloat16; autograd and torch.compile keep F.linear."""
    return (
        runtime.onednn_linear()
        and x.dtype in _ONEDNN_DTYPES
        and weight.dtype == x.dtype
        and x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear; CPU inference goes through oneDNN (see runtime.onednn_linear)."""
    if _use_onednn(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """gelu(F.linear(...)) with exact (erf) GELU; fused into the GEMM when oneDNN runs it."""
    if _use_onednn(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu", [], "none")
    return F.gelu(F.linear(x, weight, bias))


class Linear(nn.Linear):
    """nn.Linear (same parameters and state-dict keys) whose forward is `linear` above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class KeepsFloat32(nn.Module):
    """A module whose float32 tensors ignore `.to(half)`, `.half()`, `.bfloat16()` (devices still move).

    Half-precision conversions of the whole model are the standard PyTorch idiom; parts that must
    stay exact (codebooks) or are numerically fragile subclass this. Dtypes listed in
    `half_dtypes_allowed` (empty by default) are converted as usual.
    """

    half_dtypes_allowed: tuple[torch.dtype, ...] = ()

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        def convert(t: torch.Tensor) -> torch.Tensor:
            if t.dtype != torch.float32:
                return fn(t)
            probe = fn(torch.empty(0, device=t.device))  # what `fn` does to a float32 tensor
            if probe.dtype in HALF_DTYPES and probe.dtype not in self.half_dtypes_allowed:
                return t.to(device=probe.device)
            return fn(t)

        return super()._apply(convert, recurse)


class Float32LayerNorm(KeepsFloat32, nn.LayerNorm):
    """nn.LayerNorm that stays float32 in a half-precision model and upcasts its input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float())


class Float32Conv2d(KeepsFloat32, nn.Conv2d):
    """nn.Conv2d that stays float32 in a half-precision model and upcasts its input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float())


class SelfAttention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameter layout (q, k, v packed)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        qkv = linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, N, 3W)
        qkv = qkv.view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)  # (3, B, H, N, D)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, H, N, D)
        out = out.transpose(1, 2).reshape(b, n, w)  # (B, N, W)
        return self.out_proj(out)


class MLP(nn.Module):
    """Feed-forward with exact (erf) GELU."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.c_fc = Linear(width, hidden)
        self.c_proj = Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(linear_gelu(x, self.c_fc.weight, self.c_fc.bias))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))  # (B, N, W)
        return x + self.mlp(self.ln_2(x))  # (B, N, W)
