"""Image patches plus K learned latent tokens -> K latent vectors of token_size channels.

Precision: in a half-precision model the head (ln_post, conv_out) stays float32, so the latents
that pick the nearest codebook row are not rounded to bfloat16 on the way (measured with random
weights on the 7 test photos: bf16 token agreement with float32 up by 0-0.9 points; a few
microseconds of work). In float32 the casts are no-ops: the exact path is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import Float32Conv2d, Float32LayerNorm, ResidualAttentionBlock


class TiTokEncoder(nn.Module):
    """ViT over [class, patches, latent tokens]; only the latent positions are kept."""

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        width: int,
        layers: int,
        heads: int,
        num_latent_tokens: int,
        out_channels: int,
        legacy: bool,
    ) -> None:
        super().__init__()
        self.grid_size = image_size // patch_size
        self.num_latent_tokens = num_latent_tokens
        self.legacy = legacy
        scale = width**-0.5
        self.patch_embed = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=True)
        self.class_embedding = nn.Parameter(scale * torch.randn(1, width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid_size**2 + 1, width))
        self.latent_token_positional_embedding = nn.Parameter(scale * torch.randn(num_latent_tokens, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))
        self.ln_post = Float32LayerNorm(width)
        self.conv_out = Float32Conv2d(width, out_channels, kernel_size=1, bias=True)

    def forward(self, pixel_values: torch.Tensor, latent_tokens: torch.Tensor) -> torch.Tensor:
        b = pixel_values.shape[0]
        k = self.num_latent_tokens
        x = self.patch_embed(pixel_values)  # (B, W, g, g)
        x = x.flatten(2).transpose(1, 2)  # (B, g*g, W), row-major over the grid
        w = x.shape[-1]
        x = torch.cat([self.class_embedding.expand(b, 1, w), x], dim=1)  # (B, 1+g*g, W)
        x = x + self.positional_embedding  # (B, 1+g*g, W)
        latents = latent_tokens.expand(b, k, w) + self.latent_token_positional_embedding  # (B, K, W)
        x = torch.cat([x, latents], dim=1)  # (B, 1+g*g+K, W)
        x = self.ln_pre(x)
        for block in self.transformer:
            x = block(x)
        x = self.ln_post(x[:, -k:])  # (B, K, W) float32
        if self.legacy:
            # Official quirk: the token-major buffer is reinterpreted as channel-major, no transpose.
            x = x.reshape(b, w, k, 1)  # (B, W, K, 1)
        else:
            x = x.reshape(b, k, w, 1).permute(0, 2, 1, 3)  # (B, W, K, 1)
        z = self.conv_out(x)  # (B, C, K, 1)
        return z.reshape(b, -1, 1, k)  # (B, C, 1, K)
