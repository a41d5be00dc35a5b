"""Training engine shared by `titok train` (MaskGIT generators) and later jobs (`titok finetune`).

The generic parts know nothing about generators:
  schedule.py    warm-up + cosine learning rate, a pure function of the optimizer step
  ema.py         exponential moving average of the weights (the copy that gets published)
  checkpoint.py  atomic training checkpoints (weights, EMA, optimizer, RNG, data position) and resume
  data.py        token files -> rows + labels, and the seeded, rank-sharded, restartable sampler
  loop.py        optimizer, accumulation, clipping, autocast, DDP, metrics: one step at a time
The generator-specific parts:
  generator_objective.py  the official MaskGIT objective (arccos masking, label dropout, loss)
  generator_job.py        `train_generator`: token files + a generator config -> RUN_DIR/final
"""
