"""`finetune_tokenizer`: images + a released tokenizer -> the tokenizer adapted to those images.

RUN_DIR layout:
  checkpoints/checkpoint-<step>.safetensors   the last `keep_checkpoints` saves (see checkpoint.py):
                                              weights, EMA, optimizers, discriminator, LeCAM buffers, RNG
  metrics.jsonl                               one JSON line per logged step (and per held-out measurement)
  heldout/step-<N>.json                       `titok eval recon` reports of the held-out images
  final/config.json + final/model.safetensors the EMA weights in Hub format (`load_tokenizer` reads it)
The engine is `titok train`'s: the global batch of a step is fixed by (seed, step) and split over
torchrun ranks and accumulation micro-batches, each image cropped by (seed, epoch, index), so a
rerun resumes exactly and 2 ranks compute the update of one process. Gradients are summed over
ranks explicitly (the loss calls the discriminator itself, out of DDP's sight).
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..distributed import barrier, dist_info, rank_device
from . import checkpoint as ckpt_io
from .data import EpochSampler
from .ema import EMA
from .loop import (MetricsLog, adamw, all_reduce_sum, autocast, checkpoint_if_due, memory_mb, micro_batch_size,
                   report_step, set_deterministic, sum_gradients, train_mode)  # fmt: skip
from .schedule import WarmupCosine
from .tokenizer_heldout import Heldout
from .tokenizer_images import TrainImages
from .tokenizer_parts import ID_CHANGING, choose_parts, freeze_except, frozen_modes, parts_of, reconstruct
from .tokenizer_settings import FinetuneResult, FinetuneSettings

FINAL = "final"
CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"


def _start(spec: str | os.PathLike, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any], str]:
    """(tokenizer in float32 on `device`, its official nested config, where its weights came from)."""
    from ..hub import resolve
    from ..loading import load_tokenizer

    found = resolve(spec, "tokenizer")
    model = load_tokenizer(spec, device=device)
    return model, copy.deepcopy(dict(found.config)), str(found.source.weights)


def _official_config(doc: dict[str, Any], spec: str, weights: str, parts: list[str], frozen: list[str],
                     settings: FinetuneSettings, losses: Any) -> dict[str, Any]:  # fmt: skip
    """config.json of final/: the starting config, plus what it was fine-tuned from and how."""
    from .. import __version__

    doc = copy.deepcopy(doc)
    experiment = dict(doc.get("experiment") or {})
    experiment.pop("tokenizer_checkpoint", None)  # names the starting weights file, not these
    experiment.update(finetuned_from={"model": str(spec), "weights": weights}, trained_parts=parts,
                      frozen_parts=frozen, trained_with=f"titok-cli {__version__}")  # fmt: skip
    doc["experiment"] = experiment
    doc["losses"] = losses.official_block()
    doc["optimizer"] = {"name": "adamw", "params": {"learning_rate": settings.lr, "beta1": settings.beta1,
                        "beta2": settings.beta2, "weight_decay": settings.weight_decay,
                        "discriminator_learning_rate": settings.discriminator_lr}}  # fmt: skip
    doc["lr_scheduler"] = {"scheduler": "cosine", "params": {"learning_rate": settings.lr,
                           "warmup_steps": settings.warmup_steps, "end_lr": settings.end_lr}}  # fmt: skip
    doc["training"] = {"global_batch_size": settings.batch_size, "gradient_accumulation_steps": settings.grad_accum,
                       "mixed_precision": settings.precision, "use_ema": True, "seed": settings.seed,
                       "max_train_steps": settings.steps, "max_grad_norm": settings.max_grad_norm}  # fmt: skip
    return doc


def finetune_tokenizer(
    images: Sequence[str | os.PathLike],
    run_dir: str | os.PathLike,
    model: str | os.PathLike,
    *,
    settings: FinetuneSettings | None = None,
    losses: Any = None,
    heldout: Sequence[str | os.PathLike] | None = None,
    lpips_weights: str | os.PathLike | None = None,
    inception_weights: str | os.PathLike | None = None,
    convnext_weights: str | os.PathLike | None = None,
    on_start: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> FinetuneResult:
    """Fine-tune the tokenizer `model` (anything `load_tokenizer` reads) on `images` (folders,
    files or webdataset shards) with the losses `losses` (`tokenizer_losses.LossSettings`).

    `heldout` images are measured (PSNR, SSIM, LPIPS; rFID with `inception_weights`) at the start,
    every `eval_every` steps and at the end. `lpips_weights`: a folder holding the LPIPS files,
    `convnext_weights`: torchvision's ConvNeXt-S file (default: the cache); `losses.perceptual`
    "auto" is the model's official recipe. Resumes when `run_dir` holds a checkpoint of the same run. `on_start(info)`
    and `on_step(metrics)` are called on rank 0. Under torchrun every rank calls this alike.
    """
    from .tokenizer_losses import LossSettings, build_objective

    settings = settings or FinetuneSettings()
    settings.check()
    settings = settings.resolved()
    losses = losses if losses is not None else LossSettings()
    losses.check()
    run_dir = Path(run_dir)
    rank, world = dist_info()
    micro = micro_batch_size(settings.batch_size, settings.grad_accum, world)
    data = TrainImages(images)

    from ..devices import pick_device

    device = pick_device(rank_device(settings.device))
    set_deterministic(settings.deterministic)
    tok, doc, weights = _start(model, device)
    losses = losses.for_model(bool(tok.config.finetune_decoder))  # "auto" -> the official recipe
    parts = choose_parts(tok, settings.train)
    frozen = [p for p in parts_of(tok) if p not in parts]
    freeze_except(tok, parts)
    size = tok.config.image_size
    data.scan()
    held = (Heldout(heldout, run_dir, device, settings.eval_batch_size, lpips_weights, inception_weights)
            if heldout else None)  # fmt: skip

    ckpt_io.seed_everything(settings.seed)  # the same discriminator on every rank
    # a GAN that starts after the last step would only cost memory and checkpoint space: not built
    past_end = losses.discriminator_start >= settings.steps
    in_run = replace(losses, discriminator_weight=0.0) if past_end else losses
    objective = build_objective(in_run, device, lpips_weights=None if lpips_weights is None else str(lpips_weights),
                                seed=settings.seed, convnext_weights=convnext_weights)  # fmt: skip
    disc = objective.trainable_discriminator()
    betas = (settings.beta1, settings.beta2)
    optimizer = adamw(tok, settings.lr, betas, settings.weight_decay)
    disc_opt = adamw(disc, settings.discriminator_lr, betas, settings.weight_decay) if disc is not None else None
    ema = EMA(tok, settings.ema_decay)
    state = ckpt_io.TrainingState(tok, ema, optimizer, {"objective": objective},
                                  {"objective": disc_opt} if disc_opt is not None else {})  # fmt: skip
    schedule = WarmupCosine(settings.lr, settings.steps, settings.warmup_steps, settings.end_lr)
    disc_schedule = WarmupCosine(settings.discriminator_lr, settings.steps, settings.warmup_steps, settings.end_lr)
    sampler = EpochSampler(len(data), settings.batch_size, settings.seed)
    fingerprint = {"tokenizer": asdict(tok.config), "init": weights, "data": data.identity(),
                   "heldout": [os.path.abspath(p) for p in heldout or []],
                   "settings": {**settings.result_part(), "train": parts},
                   "losses": asdict(losses), "parts": parts}  # fmt: skip

    ckpt_dir = run_dir / CHECKPOINTS
    start = 0
    latest = ckpt_io.resumable(ckpt_dir, fingerprint, run_dir)
    if latest is not None:
        state.restore(latest, rank=rank, world=world)  # every random draw is a function of (seed, step)
        start = latest.step
    log = MetricsLog(run_dir / METRICS, start) if rank == 0 else None
    crop = (settings.crop_scale, 1.0) if settings.crop_scale is not None else None  # None: the official crop
    info = {"images": len(data), "steps": settings.steps, "resumed_from": start, "world_size": world,
            "device": str(device), "global_batch": settings.batch_size, "micro_batch": micro, "trained": parts,
            "frozen": frozen, "ids_change": any(p in ID_CHANGING for p in parts), "gan": disc is not None,
            "heldout": len(held.inputs) if held else 0, "perceptual": losses.perceptual if losses.uses_perceptual else None,
            "perceptual_weight": losses.perceptual_weight, "perceptual_files": objective.weights,
            "gan_start": losses.discriminator_start, "gan_past_end": losses.uses_gan and past_end,
            "crop": "official" if crop is None else f"random-resized {crop[0]:g}..1"}  # fmt: skip
    if rank == 0 and on_start is not None:
        on_start(info)

    trainable = [p for p in tok.parameters() if p.requires_grad]
    clip = settings.max_grad_norm if settings.max_grad_norm is not None else float("inf")

    def one_step(step: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        g = settings.batch_size
        lr = schedule.apply(optimizer, step)
        positions = np.arange(step * g, (step + 1) * g)  # (G,) places in the endless epoch sequence
        rows, epochs = sampler.global_batch_indices(step), positions // len(data)  # (G,), (G,)
        noise_seeds = (settings.seed % (1 << 31)) * (1 << 32) + positions  # (G,) one VAE noise seed per image
        mine = EpochSampler.shard(rows, rank, world)
        rows, epochs, noise_seeds = rows[mine], epochs[mine], noise_seeds[mine]
        logs: dict[str, float] = {}
        batches = []
        for m in range(settings.grad_accum):
            part = slice(m * micro, (m + 1) * micro)
            pixels = data.crops(rows[part], epochs[part], size, settings.seed, crop)  # (B, 3, S, S) uint8
            x = pixels.to(device).float() / 255.0  # (B, 3, S, S)
            with autocast(device, settings.precision):
                recon, extra = reconstruct(tok, x, parts, noise_seeds[part])  # (B, 3, S, S)
                loss, parts_log = objective.generator_loss(x, recon, extra, step)
            # a sum over micro-batches and ranks of (mean loss x share of the global batch) is the global mean
            (loss * (micro / g)).backward()
            for key, value in {"loss": float(loss.detach()), **parts_log}.items():
                logs[key] = logs.get(key, 0.0) + float(value) * micro / g
            if disc_opt is not None:
                batches.append((x, recon.detach()))  # the discriminator's step sees the same pairs
        sum_gradients(trainable)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, clip))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(tok)
        if disc_opt is not None and objective.gan_active(step):
            disc_schedule.apply(disc_opt, step)
            disc_opt.zero_grad(set_to_none=True)  # the generator loss's backward reached it too
            for x, recon in batches:
                with autocast(device, settings.precision):
                    d_loss, d_log = objective.discriminator_loss(x, recon, step, update_averages=False)
                (d_loss * (micro / g)).backward()
                for key, value in {"discriminator_loss": float(d_loss.detach()), **d_log}.items():
                    logs[key] = logs.get(key, 0.0) + float(value) * micro / g
            disc_params = [p for p in disc.parameters() if p.requires_grad]
            sum_gradients(disc_params)
            torch.nn.utils.clip_grad_norm_(disc_params, clip)
            disc_opt.step()
            disc_opt.zero_grad(set_to_none=True)
        keys = sorted(logs)
        sums = all_reduce_sum(torch.tensor([logs[k] for k in keys], dtype=torch.float64, device=device)).cpu()
        if "logits_real" in logs:  # LeCAM's averages move once per step, by the means over the global batch
            objective.update_lecam(float(sums[keys.index("logits_real")]), float(sums[keys.index("logits_fake")]))
        seconds = time.perf_counter() - t0
        return {"step": step + 1, **{k: float(v) for k, v in zip(keys, sums)}, "lr": lr, "grad_norm": grad_norm,
                "epoch": round(sampler.epoch_of(step + 1), 4), "images_per_s": round(g / seconds, 2),
                "steps_per_s": round(1.0 / seconds, 3), "memory_mb": round(memory_mb(device), 1)}  # fmt: skip

    def measure(done: int) -> None:
        if held is None:
            return
        record = held.measure(done, tok, ema)
        if log is not None:
            log.write({"step": done, "heldout": record})

    last: dict[str, Any] = {}
    try:
        if start == 0:
            measure(0)
        with train_mode(tok):
            frozen_modes(tok, parts)
            for step in range(start, settings.steps):
                last = one_step(step)
                done = report_step(last, settings, log, on_step, rank)
                checkpoint_if_due(state, ckpt_dir, done, settings, fingerprint, rank)
                if settings.eval_every is not None and done % settings.eval_every == 0 and done < settings.steps:
                    tok.eval()
                    measure(done)
                    tok.train()
                    frozen_modes(tok, parts)
        measure(settings.steps)
    finally:
        if log is not None:
            log.close()

    final = None
    if rank == 0:
        config = _official_config(doc, str(model), weights, parts, frozen, settings, losses)
        final = ckpt_io.publish(run_dir / FINAL, tok, ema, config)
    barrier()
    history = held.history(settings.steps) if held is not None else []
    return FinetuneResult(run_dir, final, settings.steps, start, len(data), world, parts, frozen, last, history, rank)
