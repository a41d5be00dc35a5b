"""Latent vectors <-> token ids (VQ), or the diagonal Gaussian posterior (VAE)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import KeepsFloat32


class VectorQuantizer(KeepsFloat32):
    """Nearest-codebook-row lookup; codebook and distances stay float32 when the model goes half precision."""

    def __init__(self, codebook_size: int, token_size: int, use_l2_norm: bool) -> None:
        super().__init__()
        self.use_l2_norm = use_l2_norm
        self.embedding = nn.Embedding(codebook_size, token_size)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)

    def codebook(self) -> torch.Tensor:
        """Codebook rows in float32, L2-normalized when the model was trained that way."""
        e = self.embedding.weight.float()  # (V, C)
        return F.normalize(e, dim=-1) if self.use_l2_norm else e

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (straight-through quantized value [B,C,1,K], ids [B,K]) like the official encode."""
        b, c, _, k = z.shape
        flat = z.float().permute(0, 2, 3, 1).reshape(-1, c)  # (B*K, C)
        if self.use_l2_norm:
            flat = F.normalize(flat, dim=-1)
        e = self.codebook()  # (V, C)
        dist = flat.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * flat @ e.t()  # (B*K, V)
        ids = dist.argmin(dim=1)  # (B*K,)
        quantized = flat + (e[ids] - flat)  # (B*K, C): straight-through value, as the official code
        quantized = quantized.view(b, 1, k, c).permute(0, 3, 1, 2)  # (B, C, 1, K)
        return quantized.to(z.dtype), ids.view(b, k)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids [B,K] -> codebook rows laid out as decoder input [B,C,1,K] (float32)."""
        rows = self.codebook()[ids]  # (B, K, C)
        return rows.permute(0, 2, 1).unsqueeze(2)  # (B, C, 1, K)


def split_posterior(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VAE head output [B,2C,1,K] -> (mean, log-variance clamped to [-30, 20])."""
    mean, logvar = torch.chunk(z, 2, dim=1)  # (B, C, 1, K) each
    return mean, logvar.clamp(-30.0, 20.0)


def sample_posterior(
    mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """mean + std * N(0, 1), with noise from an explicit generator for reproducibility."""
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + torch.exp(0.5 * logvar) * noise
