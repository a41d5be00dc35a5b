"""What a tokenizer fine-tuning run is given (`FinetuneSettings`) and what it reports (`FinetuneResult`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .loop import check_run_settings


@dataclass(frozen=True)
class FinetuneSettings:
    """How to fine-tune; the optimizer defaults are the official stage-2 recipe's
    (configs/training/TiTok/stage2: AdamW lr 1e-4 for the tokenizer and the discriminator, betas
    0.9/0.999, weight decay 1e-4, cosine to 1e-5, gradient clipping 1.0, EMA weights published).

    `batch_size` is the global batch of one optimizer step, split evenly over torchrun ranks and
    `grad_accum` micro-batches (official: 32 per GPU). `warmup_steps` None is 1% of `steps` (the
    official 5k of 500k). `train` names the parts that learn (`tokenizer_parts.PARTS`); None is
    the decoder side, which keeps the token ids of existing files valid."""

    steps: int = 2000
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-4
    discriminator_lr: float = 1e-4
    end_lr: float = 1e-5
    warmup_steps: int | None = None
    weight_decay: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    max_grad_norm: float | None = 1.0
    ema_decay: float = 0.999
    seed: int = 42
    precision: str = "float32"  # or "bf16" (autocast; weights and optimizer stay float32)
    train: tuple[str, ...] | None = None
    crop_scale: float | None = None  # None: the official crop; a share s: random-resized crops of s..1 of the area
    # not part of the result:
    device: str = "auto"
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 1
    eval_every: int | None = None  # held-out metrics every N steps (always at the start and the end)
    eval_batch_size: int = 16
    deterministic: bool = False

    RESULT_KEYS = ("steps", "batch_size", "grad_accum", "lr", "discriminator_lr", "end_lr", "warmup_steps",
                   "weight_decay", "beta1", "beta2", "max_grad_norm", "ema_decay", "seed", "precision",
                   "train", "crop_scale")  # fmt: skip

    def check(self) -> None:
        """UsageError for values no run can use (before anything is loaded)."""
        check_run_settings(self, counts=("eval_batch_size",))
        if self.eval_every is not None and self.eval_every < 1:
            raise UsageError(f"eval-every must be >= 1, got {self.eval_every}")
        for name in ("lr", "discriminator_lr"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise UsageError(f"{name.replace('_', ' ')} must be a finite number > 0, got {getattr(self, name)}")
        if not (math.isfinite(self.end_lr) and self.end_lr >= 0):
            raise UsageError(f"the end learning rate must be a finite number >= 0, got {self.end_lr}")
        if self.crop_scale is not None and not 0.0 < self.crop_scale <= 1.0:
            raise UsageError(f"crop scale must be in (0, 1], got {self.crop_scale}")
        if self.train is not None and not self.train:
            raise UsageError("--train names no part")

    def resolved(self) -> FinetuneSettings:
        warm = self.warmup_steps if self.warmup_steps is not None else round(0.01 * self.steps)
        return replace(self, warmup_steps=warm)

    def result_part(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.RESULT_KEYS}
        out["train"] = list(self.train) if self.train is not None else None
        return out


HELDOUT_KEYS = ("psnr", "ssim", "lpips", "rfid")


@dataclass
class FinetuneResult:
    """What a finished `finetune_tokenizer` call reports (rank 0's view).

    `heldout` holds one record per measurement ({"step", "psnr", "ssim", "lpips", "rfid"}); the
    first is the starting checkpoint (step 0), the last the published weights."""

    run_dir: Path
    final: Path | None
    steps: int
    resumed_from: int
    images: int
    world: int
    trained: list[str]
    frozen: list[str]
    last: dict[str, Any] = field(default_factory=dict)
    heldout: list[dict[str, Any]] = field(default_factory=list)
    rank: int = 0

    @property
    def before(self) -> dict[str, Any] | None:
        return self.heldout[0] if self.heldout else None

    @property
    def after(self) -> dict[str, Any] | None:
        return self.heldout[-1] if len(self.heldout) > 1 else None

    def as_json(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "final": str(self.final) if self.final else None, "steps": self.steps,
                "resumed_from": self.resumed_from, "images": self.images, "world_size": self.world,
                "trained": self.trained, "frozen": self.frozen, "last": self.last, "heldout": self.heldout,
                "before": self.before, "after": self.after}  # fmt: skip
