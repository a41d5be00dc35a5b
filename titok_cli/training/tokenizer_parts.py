"""Which parts of a tokenizer learn during fine-tuning, and the forward pass that trains them.

Parts are named after the model's modules (the official state-dict prefixes):
  encoder        the ViT encoder and its latent tokens (`latent_tokens`, `encoder.*`)
  quantizer      the VQ codebook (`quantize.*`; VQ models only)
  decoder        the ViT decoder (`decoder.*`)
  pixel_decoder  the two-stage models' proxy codebook and MaskGIT-VQGAN pixel decoder
                 (`pixel_quantize.*`, `pixel_decoder.*`)
The default is the decoder side (decoder, plus pixel_decoder where the model has one): encoder and
codebook stay bit-identical, so an image still gets the ids it got before and existing token
files decode with the new weights. A frozen part has requires_grad False and is not in the
optimizer; the EMA copies it unchanged, so the published weights hold it bit for bit.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UsageError
from ..models.quantizer import VectorQuantizer, split_posterior
from ..models.tokenizer import TiTokTokenizer

PARTS = ("encoder", "quantizer", "decoder", "pixel_decoder")
_PREFIXES = {"encoder": ("latent_tokens", "encoder."), "quantizer": ("quantize.",), "decoder": ("decoder.",),
             "pixel_decoder": ("pixel_quantize.", "pixel_decoder.")}  # fmt: skip
ID_CHANGING = ("encoder", "quantizer")  # training these changes the ids (or latents) images get


def parts_of(model: TiTokTokenizer) -> list[str]:
    """The parts this model has (a VAE has no quantizer, a single-stage model no pixel decoder)."""
    cfg = model.config
    return [p for p in PARTS if not (p == "quantizer" and cfg.is_vae) and not (p == "pixel_decoder" and
                                                                            not cfg.finetune_decoder)]  # fmt: skip


def default_parts(model: TiTokTokenizer) -> list[str]:
    return [p for p in ("decoder", "pixel_decoder") if p in parts_of(model)]


def choose_parts(model: TiTokTokenizer, names: Sequence[str] | None) -> list[str]:
    """The parts to train, in PARTS order; UsageError for a name the model does not have."""
    if names is None:
        return default_parts(model)
    have = parts_of(model)
    wanted = []
    for raw in names:
        for name in (x.strip().replace("-", "_") for x in str(raw).split(",")):
            if not name:
                continue
            if name not in have:
                extra = "" if name in PARTS else f"; parts are named {', '.join(PARTS)}"
                raise UsageError(f"--train {name}: this tokenizer has no such part (it has {', '.join(have)}){extra}")
            wanted.append(name)
    if not wanted:
        raise UsageError("--train names no part")
    return [p for p in have if p in wanted]


def part_of(name: str) -> str:
    """The part a parameter (or buffer) name belongs to."""
    for part, prefixes in _PREFIXES.items():
        if any(name == p or name.startswith(p) for p in prefixes):
            return part
    raise ValueError(f"parameter {name} belongs to no known part")


def freeze_except(model: TiTokTokenizer, parts: Sequence[str]) -> None:
    """requires_grad only for the parameters of `parts`."""
    for name, p in model.named_parameters():
        p.requires_grad_(part_of(name) in parts)


def frozen_modes(model: TiTokTokenizer, parts: Sequence[str]) -> None:
    """Frozen top-level modules in eval mode (call after model.train())."""
    for name, module in model.named_children():
        if part_of(name + ".") not in parts:
            module.eval()


def quantize_straight_through(quantize: VectorQuantizer, z: torch.Tensor, commitment: float
                              ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(decoder input [B,C,1,K] whose gradient reaches z, quantizer loss) for a learning encoder or
    codebook: the commitment term pulls z to its code, the codebook term the code to z."""
    b, c, _, k = z.shape
    flat = z.float().permute(0, 2, 3, 1).reshape(-1, c)  # (B*K, C)
    if quantize.use_l2_norm:
        flat = F.normalize(flat, dim=-1)
    e = quantize.codebook()  # (V, C)
    with torch.no_grad():
        ids = (flat.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * flat @ e.t()).argmin(dim=1)  # (B*K,)
    picked = e[ids]  # (B*K, C)
    loss = commitment * F.mse_loss(flat, picked.detach()) + F.mse_loss(picked, flat.detach())
    q = flat + (picked - flat).detach()  # (B*K, C): the code's value, the identity's gradient
    return q.view(b, 1, k, c).permute(0, 3, 1, 2).to(z.dtype), loss  # (B, C, 1, K)


def posterior_noise(shape: torch.Size, seeds: Sequence[int], device: torch.device) -> torch.Tensor:
    """N(0, 1) noise [B, ...] whose row i comes from its own seed (the same on any rank split)."""
    rows = [torch.randn(tuple(shape[1:]), generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(rows).to(device)


def reconstruct(model: TiTokTokenizer, images: torch.Tensor, parts: Sequence[str], noise_seeds: np.ndarray
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
    """Images [B,3,S,S] in [0,1] -> (reconstruction [B,3,S,S] float32, extra loss inputs).

    With the encoder frozen the decoder sees what `titok encode` produces (the codes of the ids,
    or the VAE posterior mean) and no quantizer/KL term is returned; with it learning, VQ models
    pass the quantizer straight through (extra `quantizer_loss`) and VAE models sample the
    posterior (extra `kl` per image), as the official training does."""
    learns_ids = any(p in parts for p in ID_CHANGING)
    with torch.set_grad_enabled(learns_ids and torch.is_grad_enabled()):
        z = model.encode_latents(images)  # (B, C, 1, K); VAE (B, 2C, 1, K)
    extra: dict[str, torch.Tensor] = {}
    if model.is_vae:
        mean, logvar = split_posterior(z.float())  # (B, C, 1, K) each
        if learns_ids:
            latents = mean + torch.exp(0.5 * logvar) * posterior_noise(mean.shape, noise_seeds, mean.device)
            extra["kl"] = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2, 3))  # (B,)
        else:
            latents = mean
        return model.decode_latents(latents), extra
    if learns_ids:
        latents, extra["quantizer_loss"] = quantize_straight_through(model.quantize, z, model.config.commitment_cost)
    else:
        with torch.no_grad():
            latents, _ = model.quantize(z)  # (B, C, 1, K)
    return model.decode_latents(latents), extra
