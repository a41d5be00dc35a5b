"""TiTokTokenizer: images [B,3,S,S] in [0,1] <-> K tokens (VQ ids or VAE latents)."""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..config import VIT_SIZES, TokenizerConfig, tokenizer_config_from_dict
from ..errors import ConfigError, TokenFileError
from ..source import Source
from .decoder import PROXY_CODEBOOK_SIZE, TiTokDecoder
from .encoder import TiTokEncoder
from .layers import KeepsFloat32
from .pixel_decoder import Z_CHANNELS, PixelDecoder
from .quantizer import VectorQuantizer, sample_posterior, split_posterior


class ProxyCodebook(KeepsFloat32):
    """The MaskGIT-VQGAN codebook that turns proxy-code probabilities into a code grid (always float32)."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(PROXY_CODEBOOK_SIZE, Z_CHANNELS)


class TiTokTokenizer(nn.Module):
    """The TiTok 1-D tokenizer; module names equal the official state-dict keys."""

    def __init__(self, config: TokenizerConfig, source: Source | None = None) -> None:
        super().__init__()
        self.source = source  # where the weights came from (set by loading)
        if config.finetune_decoder and not config.is_legacy:
            raise ConfigError("finetune_decoder (two-stage decoding) needs the legacy decoder head (is_legacy)")
        self.config = config
        enc_w, enc_l, enc_h = VIT_SIZES[config.vit_enc_model_size]
        dec_w, dec_l, dec_h = VIT_SIZES[config.vit_dec_model_size]
        k, c = config.num_latent_tokens, config.token_size
        self.latent_tokens = nn.Parameter(enc_w**-0.5 * torch.randn(k, enc_w))
        self.encoder = TiTokEncoder(
            config.image_size, config.vit_enc_patch_size, enc_w, enc_l, enc_h, k,
            out_channels=2 * c if config.is_vae else c, legacy=config.is_legacy,
        )  # fmt: skip
        self.decoder = TiTokDecoder(
            config.image_size, config.vit_dec_patch_size, dec_w, dec_l, dec_h, k, c, legacy=config.is_legacy
        )
        if not config.is_vae:
            assert config.codebook_size is not None
            self.quantize = VectorQuantizer(config.codebook_size, c, config.use_l2_norm)
        if config.finetune_decoder:
            self.pixel_quantize = ProxyCodebook()
            self.pixel_decoder = PixelDecoder(config.pixel_hidden_channels)
        self.eval()

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | TokenizerConfig) -> "TiTokTokenizer":
        """Build with random weights from the official nested config dict (no I/O)."""
        if not isinstance(cfg, TokenizerConfig):
            cfg = tokenizer_config_from_dict(cfg)
        return cls(cfg)

    # -- shapes -------------------------------------------------------------------------
    @property
    def is_vae(self) -> bool:
        return self.config.is_vae

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def num_tokens(self) -> int:
        return self.config.num_latent_tokens

    @property
    def codebook_size(self) -> int | None:
        return self.config.codebook_size

    @property
    def dtype(self) -> torch.dtype:
        return self.latent_tokens.dtype

    @property
    def device(self) -> torch.device:
        return self.latent_tokens.device

    # -- image -> tokens ----------------------------------------------------------------
    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Pre-quantization encoder output z: [B,C,1,K] (VAE: [B,2C,1,K])."""
        self._check_images(images)
        x = images.to(device=self.device, dtype=self.dtype)  # (B, 3, S, S)
        return self.encoder(x, self.latent_tokens)  # (B, C, 1, K)

    @torch.inference_mode()
    def encode(
        self, images: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Images [B,3,S,S] in [0,1] -> int64 ids [B,K] (VQ) or float32 latents [B,C,K] (VAE).

        VAE models return the posterior mean unless `sample` is set; sampling draws its
        noise from `generator` so a seed reproduces it.
        """
        z = self.encode_latents(images)
        if self.is_vae:
            mean, logvar = split_posterior(z.float())  # (B, C, 1, K) each
            latents = sample_posterior(mean, logvar, generator) if sample else mean
            return latents.squeeze(2)  # (B, C, K)
        _, ids = self.quantize(z)
        return ids  # (B, K) int64

    # -- tokens -> image ----------------------------------------------------------------
    def tokens_to_latents(self, tokens: torch.Tensor) -> torch.Tensor:
        """Ids [B,K] (or [B,1,K]) or VAE latents [B,C,K] -> decoder input [B,C,1,K]."""
        tokens = tokens.to(self.device)
        if self.is_vae:
            if tokens.is_floating_point() and tokens.dim() == 3:
                b, c, k = tokens.shape
                if (c, k) != (self.config.token_size, self.num_tokens):
                    raise TokenFileError(
                        f"latents have shape [B,{c},{k}], this model expects [B,{self.config.token_size},{self.num_tokens}]"
                    )
                return tokens.float().unsqueeze(2)  # (B, C, 1, K)
            raise TokenFileError("a VAE tokenizer decodes float latents [B,C,K], not integer ids")
        if tokens.is_floating_point():
            raise TokenFileError(f"a VQ tokenizer decodes integer token ids, got {tokens.dtype}")
        if tokens.dim() == 3 and tokens.shape[1] == 1:
            tokens = tokens.squeeze(1)
        if tokens.dim() != 2 or tokens.shape[1] != self.num_tokens:
            raise TokenFileError(
                f"token ids have shape {list(tokens.shape)}, this model expects [B,{self.num_tokens}]"
            )
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= int(self.codebook_size or 0)):
            raise TokenFileError(
                f"token ids range {int(tokens.min())}..{int(tokens.max())} is outside the codebook 0..{self.codebook_size - 1}"
            )
        return self.quantize.lookup(tokens.long())  # (B, C, 1, K)

    def proxy_codes(self, logits: torch.Tensor) -> torch.Tensor:
        """Two-stage models: proxy logits [B,1024,g,g] -> soft VQGAN code grid [B,256,g,g]."""
        probs = F.softmax(logits.float(), dim=1)  # (B, 1024, g, g), float32 whatever the model dtype
        table = self.pixel_quantize.embedding.weight.float()  # (1024, 256)
        return torch.einsum("nchw,cd->ndhw", probs, table)  # (B, 256, g, g)

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder input [B,C,1,K] -> raw pixels [B,3,S,S] float32 (not clamped)."""
        x = self.decoder(z.to(device=self.device, dtype=self.dtype))  # logits (B,1024,g,g) or pixels
        if self.config.finetune_decoder:
            codes = self.proxy_codes(x)  # (B, 256, g, g) float32
            x = self.pixel_decoder(codes)  # (B, 3, S, S) in the pixel decoder's dtype
        return x.float().contiguous()

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Ids [B,K] or VAE latents [B,C,K] -> float32 pixels [B,3,S,S], roughly in [0,1], not clamped."""
        return self.decode_latents(self.tokens_to_latents(tokens))

    def _check_images(self, images: torch.Tensor) -> None:
        s = self.image_size
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, s, s):
            raise ValueError(f"images must be [B,3,{s},{s}], got {list(images.shape)}")


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """Raw decoder output [B,3,S,S] -> uint8 [B,S,S,3], truncating like the official demo."""
    return (pixels.clamp(0.0, 1.0) * 255.0).permute(0, 2, 3, 1).to(torch.uint8)
