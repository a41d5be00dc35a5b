"""K latent vectors + g*g mask tokens -> proxy-code logits (legacy) or pixels (single stage)."""

from __future__ import annotations

import torch
from torch import nn

from .layers import Linear, ResidualAttentionBlock

PROXY_CODEBOOK_SIZE = 1024  # MaskGIT-VQGAN codebook used by the two-stage (legacy) head


class DepthToSpace(nn.Module):
    """[B, p*p*3, g, g] -> [B, 3, g*p, g*p] with channel index (p1*p + p2)*3 + c."""

    def __init__(self, patch_size: int) -> None:
        super().__init__()
        self.p = patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        p = self.p
        x = x.view(b, p, p, 3, h, w)  # (B, p1, p2, c, h, w)
        x = x.permute(0, 3, 4, 1, 5, 2)  # (B, c, h, p1, w, p2)
        return x.reshape(b, 3, h * p, w * p)  # (B, 3, S, S)


class TiTokDecoder(nn.Module):
    """ViT over [class, g*g mask tokens, K latents]; the mask positions become the image grid."""

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        width: int,
        layers: int,
        heads: int,
        num_latent_tokens: int,
        token_size: int,
        legacy: bool,
    ) -> None:
        super().__init__()
        self.grid_size = image_size // patch_size
        self.legacy = legacy
        scale = width**-0.5
        g2 = self.grid_size**2
        self.decoder_embed = Linear(token_size, width, bias=True)
        self.class_embedding = nn.Parameter(scale * torch.randn(1, width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(g2 + 1, width))
        self.mask_token = nn.Parameter(scale * torch.randn(1, 1, width))
        self.latent_token_positional_embedding = nn.Parameter(scale * torch.randn(num_latent_tokens, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))
        self.ln_post = nn.LayerNorm(width)
        if legacy:
            self.ffn = nn.Sequential(
                nn.Conv2d(width, 2 * width, 1, bias=True),
                nn.Tanh(),
                nn.Conv2d(2 * width, PROXY_CODEBOOK_SIZE, 1, bias=True),
            )
            self.conv_out = nn.Identity()
        else:
            self.ffn = nn.Sequential(
                nn.Conv2d(width, patch_size * patch_size * 3, 1, bias=True),
                DepthToSpace(patch_size),
            )
            self.conv_out = nn.Conv2d(3, 3, 3, padding=1, bias=True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, c, _, k = z.shape
        g = self.grid_size
        x = self.decoder_embed(z.reshape(b, c, k).permute(0, 2, 1))  # (B, K, W)
        w = x.shape[-1]
        x = x + self.latent_token_positional_embedding[:k]  # (B, K, W)
        grid = torch.cat([self.class_embedding.expand(b, 1, w), self.mask_token.expand(b, g * g, w)], dim=1)
        grid = grid + self.positional_embedding  # (B, 1+g*g, W)
        x = torch.cat([grid, x], dim=1)  # (B, 1+g*g+K, W)
        x = self.ln_pre(x)
        for block in self.transformer:
            x = block(x)
        x = self.ln_post(x[:, 1 : 1 + g * g])  # (B, g*g, W)
        x = x.permute(0, 2, 1).reshape(b, w, g, g)  # (B, W, g, g)
        x = self.ffn(x)  # legacy: (B, 1024, g, g) logits; else (B, 3, S, S)
        return self.conv_out(x)
