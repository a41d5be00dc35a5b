"""The official MaskGIT training objective for TiTok generators (bytedance/1d-tokenizer's trainer).

Per row: draw t ~ U(0, 1); mask ratio r = arccos(t) / (pi/2), clamped to [1e-6, 1]; mask
round(K * r) positions (at least 1), chosen by a random permutation; masked positions take the
mask token id (= codebook size). The class token is replaced by the "no class" token (V+N+1) with
probability `class_dropout` (the config's class_label_dropout, 0.1), which is what classifier-free
guidance samples against. Loss: cross-entropy with label smoothing 0.1 at every position, weighted
1 at masked and `unmasked_weight` (official `loss_weight_unmasked_token`: 0.1) at unmasked
positions, divided by the sum of the weights. Masked accuracy counts argmax hits at masked
positions only.

Reproducibility across ways of running: the random draws of a step are made for the whole global
batch from a generator seeded by (seed, step), and each rank / accumulation micro-batch takes its
rows; the loss is normalised by the weight sum of the whole global batch. So the update of a step
does not depend on how its batch is split over ranks and accumulation steps (the official trainer
normalises per GPU micro-batch and averages; identical for one process without accumulation).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import GeneratorConfig


@dataclass(frozen=True)
class MaskGITObjective:
    """Settings of the objective; the defaults are the official ones."""

    label_smoothing: float = 0.1
    unmasked_weight: float = 0.1
    class_dropout: float = 0.1

    @classmethod
    def for_config(cls, cfg: GeneratorConfig, **overrides: float) -> "MaskGITObjective":
        """Official defaults with the generator config's class_label_dropout."""
        return cls(**{"class_dropout": cfg.class_label_dropout, **overrides})


@dataclass
class StepDraws:
    """The random choices of one optimizer step for its global batch (CPU tensors)."""

    masks: torch.Tensor  # (G, K) bool: True where the token is masked
    drop_class: torch.Tensor  # (G,) bool: True where the class token becomes "no class"

    def rows(self, sl: slice) -> "StepDraws":
        return StepDraws(self.masks[sl], self.drop_class[sl])


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of optimizer step `step`: seeded from sha256("titok-train:seed:step"), so it
    depends on nothing but the two numbers (not on ranks, earlier steps or a resume)."""
    digest = hashlib.sha256(f"titok-train:{int(seed)}:{int(step)}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def draw_step(seed: int, step: int, global_batch: int, num_tokens: int, class_dropout: float) -> StepDraws:
    """Masks (arccos schedule) and class drops for the global batch of `step`."""
    gen = step_generator(seed, step)
    t = torch.rand(global_batch, generator=gen)  # (G,)
    ratio = (torch.acos(t) / (math.pi * 0.5)).clamp(1e-6, 1.0)  # (G,)
    count = (num_tokens * ratio).round().clamp(min=1)  # (G,)
    order = torch.rand(global_batch, num_tokens, generator=gen).argsort(dim=-1)  # (G, K) a permutation per row
    masks = order < count[:, None]  # (G, K)
    drop = torch.rand(global_batch, generator=gen) < class_dropout  # (G,)
    return StepDraws(masks, drop)


def model_inputs(tokens: torch.Tensor, labels: torch.Tensor, draws: StepDraws,
                 cfg: GeneratorConfig) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(masked ids [B,K], condition tokens [B]) as the official forward builds them."""
    masked = torch.where(draws.masks, cfg.mask_token_id, tokens)  # (B, K)
    cond = labels + (cfg.codebook_size + 1)  # (B,) class c -> V+1+c
    cond = torch.where(draws.drop_class, cfg.drop_label_id, cond)  # (B,)
    return masked, cond


def weights_of(masks: torch.Tensor, unmasked_weight: float) -> torch.Tensor:
    """Per-position loss weights [B,K]: 1 where masked, `unmasked_weight` elsewhere."""
    m = masks.float()
    return m + (1.0 - m) * unmasked_weight


def loss_sums(logits: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor,
              objective: MaskGITObjective) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(weighted CE sum, masked hits, masked count) of a micro-batch; divide the first by the
    global batch's weight sum (`weights_of(...).sum()`) to get its share of the official loss."""
    ce = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none",
                         label_smoothing=objective.label_smoothing)  # (B, K) fmt: skip
    w = weights_of(masks, objective.unmasked_weight).to(ce.device)  # (B, K)
    hits = ((logits.argmax(-1) == targets) & masks).sum()
    return (ce * w).sum(), hits.detach(), masks.sum()
