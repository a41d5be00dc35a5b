"""What a generator training run is given (`TrainSettings`) and what it reports (`TrainResult`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .loop import check_run_settings


@dataclass(frozen=True)
class TrainSettings:
    """How to train; defaults are the official MaskGIT trainer's (configs/training/generator/maskgit.yaml).

    `batch_size` is the global batch of one optimizer step, split evenly over torchrun ranks and
    `grad_accum` micro-batches (official: 64 per GPU x 32 GPUs = 2048). `warmup_steps` None is 2%
    of `steps` (the official 10k of 500k)."""

    steps: int = 1000
    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 2e-4
    end_lr: float = 1e-5
    warmup_steps: int | None = None
    weight_decay: float = 0.03
    beta1: float = 0.9
    beta2: float = 0.96
    max_grad_norm: float | None = 1.0
    ema_decay: float = 0.999
    seed: int = 42
    precision: str = "float32"  # or "bf16" (autocast; weights and optimizer stay float32)
    label_smoothing: float = 0.1
    unmasked_weight: float = 0.1
    class_dropout: float | None = None  # None: the generator config's class_label_dropout
    hflip: bool = True  # read mirrored copies (titok encode --hflip) when the token files hold them
    # not part of the result:
    device: str = "auto"
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 1
    deterministic: bool = False
    compile: bool = False  # torch.compile the training forward (float rounding differs slightly from eager)
    sample_every: int | None = None  # write RUN_DIR/samples/step-<N>.png every N steps (EMA weights)

    RESULT_KEYS = ("steps", "batch_size", "grad_accum", "lr", "end_lr", "warmup_steps", "weight_decay", "beta1",
                   "beta2", "max_grad_norm", "ema_decay", "seed", "precision", "label_smoothing",
                   "unmasked_weight", "class_dropout", "hflip")  # fmt: skip

    def check(self) -> None:
        """UsageError for values no run can use (before anything is loaded)."""
        check_run_settings(self, unit_range=("label_smoothing", "unmasked_weight"))
        if self.sample_every is not None and self.sample_every < 1:
            raise UsageError(f"sample-every must be >= 1, got {self.sample_every}")
        if not (math.isfinite(self.lr) and self.lr > 0 and math.isfinite(self.end_lr) and self.end_lr >= 0):
            raise UsageError("the learning rate must be > 0 and the end learning rate >= 0 (finite numbers)")
        if self.class_dropout is not None and not 0.0 <= self.class_dropout <= 1.0:
            raise UsageError(f"class dropout must be in [0, 1], got {self.class_dropout}")

    def resolved(self) -> "TrainSettings":
        warm = self.warmup_steps if self.warmup_steps is not None else round(0.02 * self.steps)
        return replace(self, warmup_steps=warm)

    def result_part(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.RESULT_KEYS}


@dataclass
class TrainResult:
    """What a finished `train_generator` call reports (rank 0's view)."""

    run_dir: Path
    final: Path | None
    steps: int
    resumed_from: int
    rows: int
    world: int
    last: dict[str, Any] = field(default_factory=dict)
    rank: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "final": str(self.final) if self.final else None, "steps": self.steps,
                "resumed_from": self.resumed_from, "rows": self.rows, "world_size": self.world,
                "last": self.last}  # fmt: skip
