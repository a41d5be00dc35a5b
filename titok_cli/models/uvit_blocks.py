"""UViT building blocks (official model_type "UViT"): attention with a bias-free qkv, MLP, and
the pre-norm block whose out-block variant merges a long skip. Key names as in the official
checkpoints (`attn.qkv`, `attn.proj`, `mlp.fc1`, `mlp.fc2`, `norm1`, `norm2`, `skip_linear`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Linear, linear_gelu


class UViTAttention(nn.Module):
    """qkv without bias, split (3, heads, head_dim), then fused attention.

    Precision: the official UViT casts q, k, v to float32 for the attention product (a detail of
    its autocast training setup). In a float32 model that cast is a no-op, so the exact path is
    unchanged. In a half-precision model (`model.to(torch.bfloat16)`, opt-in) we keep q, k, v in
    the model dtype: PyTorch's fused attention accumulates its products and softmax in float32
    internally anyway, and the two casts per block (plus a copy of the permuted qkv) cost more
    than the attention itself at 2x129 tokens (measured on CPU: 1.4 -> 0.5 ms per block at batch
    1, 12.8 -> 4.4 ms at batch 8; logits differ from the float32-cast variant by bf16 rounding only).
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = Linear(dim, 3 * dim, bias=False)
        self.proj = Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (3, B, A, L, D)
        q, k, v = qkv.unbind(0)  # views, model dtype (see the class doc)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, A, L, D)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))  # (B, L, H)


class UViTMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.fc2 = Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(linear_gelu(x, self.fc1.weight, self.fc1.bias))


class UViTBlock(nn.Module):
    """Pre-norm block; out-blocks first merge their long skip with skip_linear(cat(x, skip))."""

    def __init__(self, dim: int, heads: int, hidden: int, skip: bool = False) -> None:
        super().__init__()
        self.skip_linear = Linear(2 * dim, dim) if skip else None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = UViTAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = UViTMlp(dim, hidden)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))  # (B, L, H)
        x = x + self.attn(self.norm1(x))  # (B, L, H)
        return x + self.mlp(self.norm2(x))  # (B, L, H)
