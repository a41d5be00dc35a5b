"""Class ids -> token ids: the MaskGIT iterative decoding loop of the official `generate`.

Both guidance branches run in one batched forward, and the loop never reads a value
back to the host, so it can run ahead of an accelerator.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .sampling_params import SamplingParams


def gumbel_noise(shape: torch.Size, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """-log(-log(u)) with u ~ U(0,1); each log clamped at 1e-20 like the official code."""
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float32)
    return _gumbel(u)


def _gumbel(u: torch.Tensor) -> torch.Tensor:
    return -torch.log((-torch.log(u.clamp(min=1e-20))).clamp(min=1e-20))


class _Noise:
    """Gumbel noise for a batch: from one batch generator, or row r from its own generator.

    Per-row draws make a row's noise independent of the rest of the batch (the seed rule,
    `seeds.py`): each step, row r draws a [K,V] block, then (except on the last step) a [K] block.
    """

    def __init__(self, device: torch.device, generator: torch.Generator | None, seeds: Sequence[int] | None) -> None:
        self.device = device
        self.generator = generator
        self.rows = None if seeds is None else [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def __call__(self, shape: torch.Size) -> torch.Tensor:
        if self.rows is None:
            return gumbel_noise(shape, self.device, self.generator)
        u = torch.empty(shape, device=self.device, dtype=torch.float32)  # (B, ...)
        for row, rng in zip(u, self.rows):
            row.uniform_(0.0, 1.0, generator=rng)  # the same values as torch.rand(row.shape, generator=rng)
        return _gumbel(u)


def maskgit_generate(
    model: "TiTokGenerator",  # noqa: F821 - avoid an import cycle
    classes: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None = None,
    seeds: Sequence[int] | None = None,
) -> torch.Tensor:
    """Class ids [B] -> int64 ids [B,K].

    Noise comes from `generator` (one stream for the batch) or `seeds` (one generator per row,
    so row r depends only on seeds[r]); with neither, from torch's global generator.
    """
    device = model.device
    classes = classes.to(device).long().view(-1)
    b, k, t = classes.shape[0], model.num_tokens, params.num_steps
    if generator is not None and seeds is not None:
        raise ValueError("give generator= or seeds=, not both")
    if seeds is not None and len(seeds) != b:
        raise ValueError(f"seeds has {len(seeds)} entries for {b} classes")
    noise = _Noise(device, generator, seeds)
    mask_id = model.config.mask_token_id
    cond = model.condition_tokens(classes, drop_class=False)  # (B,)
    both = torch.cat([cond, model.condition_tokens(classes, drop_class=True)])  # (2B,)
    ids = torch.full((b, k), mask_id, dtype=torch.long, device=device)  # (B, K)
    decay = params.guidance_decay
    cfg: float | torch.Tensor = params.guidance_scale if decay == "constant" else 0.0
    pow_t = torch.full((1,), float(params.guidance_scale_pow), device=device)

    for step in range(t):
        ratio = (step + 1) / t
        temp = params.randomize_temperature * (1.0 - ratio)
        is_mask = ids == mask_id  # (B, K)
        if decay == "power-cosine":
            # float32 torch arithmetic, as in the official schedule
            scale_step = (1 - torch.cos(((step / t) ** pow_t) * math.pi)) * 1 / 2
            cfg = (params.guidance_scale - 1) * scale_step + 1  # (1,)
        guided = decay == "power-cosine" or cfg != 0
        if guided:
            out = model.forward_tokens(torch.cat([ids, ids]), both).float()  # (2B, K, V)
            cond_logits, uncond_logits = out[:b], out[b:]
            if decay == "power-cosine":
                logits = uncond_logits + (cond_logits - uncond_logits) * cfg
            else:
                logits = cond_logits + (cond_logits - uncond_logits) * cfg
        else:
            logits = model.forward_tokens(ids, cond).float()  # (B, K, V)
        if params.softmax_temperature_annealing:
            logits = logits / (0.5 + 0.8 * (1 - ratio))

        sampled = (logits + temp * noise(logits.shape)).argmax(dim=-1)  # (B, K)
        sampled_logits = logits.gather(-1, sampled.unsqueeze(-1)).squeeze(-1)  # (B, K)
        sampled = torch.where(is_mask, sampled, ids)
        if step == t - 1:
            ids = sampled
            break
        confidence = torch.where(is_mask, sampled_logits, torch.full_like(sampled_logits, math.inf))
        # How many stay masked: the cosine schedule, limited by row 0's masked count (official quirk).
        mask_len = torch.clamp(
            torch.minimum(is_mask[0].sum() - 1, torch.tensor(math.floor(k * math.acos(ratio) / (math.pi / 2)), device=device)),
            min=1,
        )  # scalar tensor, stays on the device
        confidence = confidence + temp * noise(confidence.shape)  # (B, K)
        sorted_conf = confidence.sort(dim=-1).values  # (B, K)
        cut_off = sorted_conf.gather(-1, (mask_len - 1).view(1, 1).expand(b, 1))  # (B, 1)
        ids = torch.where(confidence <= cut_off, torch.full_like(sampled, mask_id), sampled)
        if decay == "linear":
            cfg = ratio * params.guidance_scale
    return ids
