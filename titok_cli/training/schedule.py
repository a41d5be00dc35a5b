"""Learning rate: linear warm-up from 0, then a half cosine down to `end_lr` (the official trainer's).

A pure function of the optimizer step, so resuming needs nothing but the step: there is no
scheduler object whose state could drift from the checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class WarmupCosine:
    """lr(step) for optimizer step 0, 1, ...: step 0 uses lr 0, as the official LambdaLR does."""

    base_lr: float
    total_steps: int
    warmup_steps: int = 0
    end_lr: float = 1e-5

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * step / max(1, self.warmup_steps)
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        ratio = max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
        return self.end_lr + (self.base_lr - self.end_lr) * ratio

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every parameter group's lr for `step`; returns it."""
        lr = self(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr
