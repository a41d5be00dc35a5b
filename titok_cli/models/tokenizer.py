"""TiTokTokenizer: images [B,3,S,S] in [0,1] <-> K tokens (VQ ids or VAE latents)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import VIT_SIZES, TokenizerConfig, tokenizer_config_from_dict
from ..errors import ConfigError, TokenFileError
from ..source import Source
from .decode_memory import decode_batch_limit
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
    def tokens_to_latents(self, tokens: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Ids [B,K] (or [B,1,K]) or VAE latents [B,C,K] -> decoder input [B,C,1,K].

        Ids may be any integer dtype, numpy or torch, signed or unsigned (the uint16 files of the
        4096/8192-code models included): they are range-checked first, then used as int64.
        """
        tokens = _as_tensor(tokens)
        if self.is_vae:
            if tokens.is_floating_point() and tokens.dim() == 3:
                b, c, k = tokens.shape
                if (c, k) != (self.config.token_size, self.num_tokens):
                    raise TokenFileError(
                        f"latents have shape [B,{c},{k}], this model expects [B,{self.config.token_size},{self.num_tokens}]"
                    )
                return tokens.to(self.device).float().unsqueeze(2)  # (B, C, 1, K)
            raise TokenFileError("a VAE tokenizer decodes float latents [B,C,K], not integer ids")
        if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
            raise TokenFileError(f"a VQ tokenizer decodes integer token ids, got {tokens.dtype}")
        if tokens.dim() == 3 and tokens.shape[1] == 1:
            tokens = tokens.squeeze(1)
        if tokens.dim() != 2 or tokens.shape[1] != self.num_tokens:
            raise TokenFileError(
                f"token ids have shape {list(tokens.shape)}, this model expects [B,{self.num_tokens}]"
            )
        # torch has no min/max for uint16/32/64: widen first (uint64 ids >= 2**63 turn negative: refused)
        ids = tokens.to(torch.int64)  # (B, K)
        if ids.numel():
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= int(self.codebook_size or 0):
                raise TokenFileError(
                    f"token ids range {lo}..{hi} is outside the codebook 0..{int(self.codebook_size or 0) - 1}"
                )
        return self.quantize.lookup(ids.to(self.device))  # (B, C, 1, K)

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
    def decode(self, tokens: torch.Tensor | np.ndarray, *, max_batch: int | None = None) -> torch.Tensor:
        """Ids [B,K] or VAE latents [B,C,K] -> float32 pixels [B,3,S,S], roughly in [0,1], not clamped.

        The batch is decoded in chunks that fit the memory budget of `decode_memory.decode_batch_limit`
        (or at most `max_batch` images at a time); every image is computed alone along the batch
        axis, so the pixels do not depend on the chunking.
        """
        z = self.tokens_to_latents(tokens)  # (B, C, 1, K), every row validated
        step = max_batch if max_batch is not None else decode_batch_limit(self.config, self.dtype, self.device)
        if step < 1:
            raise ValueError("max_batch must be at least 1")
        if len(z) <= step:
            return self.decode_latents(z)
        s = self.image_size
        out = torch.empty((len(z), 3, s, s), dtype=torch.float32, device=self.device)  # (B, 3, S, S)
        for start in range(0, len(z), step):
            out[start : start + step] = self.decode_latents(z[start : start + step])
        return out

    def decode_tokens(self, tokens: torch.Tensor | np.ndarray, **kwargs: Any) -> torch.Tensor:
        """The official name: ids [B,1,K] or [B,K] (VAE: [B,C,1,K] or [B,C,K]) -> pixels, as `decode`.

        For code ported from the official repository (`tokenizer.decode_tokens(ids)`); like the
        official method it returns unclamped float pixels.
        """
        if self.is_vae and getattr(tokens, "ndim", 0) == 4 and tokens.shape[2] == 1:
            tokens = tokens[:, :, 0]  # (B, C, K)
        return self.decode(tokens, **kwargs)

    def _check_images(self, images: torch.Tensor) -> None:
        s = self.image_size
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, s, s):
            raise ValueError(f"images must be [B,3,{s},{s}], got {list(images.shape)}")


def _as_tensor(tokens: torch.Tensor | np.ndarray) -> torch.Tensor:
    """numpy arrays (memory-mapped or read-only included) or tensors -> a tensor of the same values."""
    if isinstance(tokens, torch.Tensor):
        return tokens
    arr = np.asarray(tokens)
    if arr.dtype.kind in "iu":
        arr = arr.astype(np.int64)  # a copy: writable, and in a dtype torch can compute with
    elif arr.dtype.kind == "f":
        arr = np.array(arr, dtype=np.float32)
    else:
        raise TokenFileError(f"token arrays hold integer ids or float latents, got dtype {arr.dtype}")
    return torch.from_numpy(arr)


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """Raw decoder output [B,3,S,S] -> uint8 [B,S,S,3], truncating like the official demo."""
    return (pixels.clamp(0.0, 1.0) * 255.0).permute(0, 2, 3, 1).to(torch.uint8)
