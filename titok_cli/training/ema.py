"""Exponential moving average of a model's parameters, with the official trainer's decay ramp.

The official EMA (decay 0.999) counts updates n = 1, 2, ... and uses decay
min((1 + s) / (10 + s), 0.999) with s = n - 1, and 0 for the first update (so the average starts
as a copy of the weights after the first optimizer step). Parameters that do not train are copied.
"""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Shadow copies of `model`'s named parameters (float32, on the model's device)."""

    def __init__(self, model: nn.Module, max_decay: float = 0.999) -> None:
        if not 0.0 <= max_decay <= 1.0:
            raise ValueError(f"EMA decay {max_decay} is not in [0, 1]")
        self.max_decay = max_decay
        self.updates = 0
        self.shadow = {n: p.detach().clone().float() for n, p in model.named_parameters()}

    def decay(self, update: int) -> float:
        """Decay used by update number `update` (1-based)."""
        s = update - 1
        return 0.0 if s <= 0 else min((1.0 + s) / (10.0 + s), self.max_decay)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step after an optimizer step."""
        self.updates += 1
        keep = self.decay(self.updates)
        for name, p in model.named_parameters():
            s = self.shadow[name]
            if p.requires_grad:
                s.lerp_(p.detach().float(), 1.0 - keep)
            else:
                s.copy_(p.detach())

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged weights into `model` (cast to its dtype)."""
        for name, p in model.named_parameters():
            p.copy_(self.shadow[name].to(p.dtype))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load(self, tensors: dict[str, torch.Tensor], updates: int) -> None:
        missing = sorted(set(self.shadow) - set(tensors))
        if missing:
            raise KeyError(f"EMA state lacks {', '.join(missing[:4])}")
        for name, s in self.shadow.items():
            s.copy_(tensors[name])
        self.updates = updates
