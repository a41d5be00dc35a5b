"""Training engine shared by `titok train` (MaskGIT generators) and later jobs (`titok finetune`).

The generic parts know nothing about generators:
  schedule.py    warm-up + cosine learning rate, a pure function of the optimizer step
  ema.py         exponential moving average of the weights (the copy that gets published)
  checkpoint.py  atomic training checkpoints (weights, EMA, optimizer, RNG, data position) and resume
  data.py        token files -> rows + labels, and the seeded, rank-sharded, restartable sampler
  loop.py        optimizer, accumulation, clipping, autocast, DDP, metrics: one step at a time
The generator-specific parts:
  generator_objective.py  the official MaskGIT objective (arccos masking, label dropout, loss)
  generator_settings.py   `TrainSettings` (official trainer defaults, checks) and `TrainResult`
  generator_job.py        `train_generator`: token files + a generator config -> RUN_DIR/final
The tokenizer fine-tuning parts (`titok finetune`):
  tokenizer_settings.py   `FinetuneSettings` (official stage-2 optimizer defaults) and `FinetuneResult`
  tokenizer_parts.py      which parts learn (decoder side by default) and the training forward
  tokenizer_images.py     training images listed and checked once, cropped per (seed, epoch, index)
  tokenizer_heldout.py    held-out PSNR/SSIM/LPIPS(/rFID) via `eval_recon` on the EMA weights
  tokenizer_job.py        `finetune_tokenizer`: images + a tokenizer -> RUN_DIR/final

    from titok_cli.training import TrainSettings, train_generator
    result = train_generator(["tokens.npz"], "run", "titok-l32-gen", settings=TrainSettings(steps=20_000))
    gen = titok_cli.load_generator(result.final)
"""

from __future__ import annotations

from ..lazy import lazy_attribute

_LAZY = {"TrainSettings": "generator_settings", "TrainResult": "generator_settings", "train_generator": "generator_job",
         "FinetuneSettings": "tokenizer_settings", "FinetuneResult": "tokenizer_settings",
         "finetune_tokenizer": "tokenizer_job"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    return lazy_attribute(__name__, _LAZY, name)
