"""`train_generator`: token files + a generator architecture -> a trained MaskGIT generator.

RUN_DIR layout:
  checkpoints/checkpoint-<step>.safetensors   the last `keep_checkpoints` saves (see checkpoint.py)
  metrics.jsonl                               one JSON line per logged step
  final/config.json + final/model.safetensors the EMA weights in Hub format (`load_generator` reads it)
Rerunning the same call resumes from the newest checkpoint and ends with the same weights as an
uninterrupted run (same device and thread count; `deterministic` for CUDA). A call whose settings
differ from the checkpoint's is refused instead of silently mixing two runs.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..config import GeneratorConfig, generator_config_from_dict, read_config_file
from ..distributed import barrier, dist_info, rank_device
from ..errors import CheckpointError, ConfigError, UsageError
from ..models.generator import TiTokGenerator
from . import checkpoint as ckpt_io
from .data import EpochSampler, TokenDataset
from .ema import EMA
from .generator_objective import MaskGITObjective, draw_step, loss_sums, model_inputs, weights_of
from .generator_settings import TrainResult, TrainSettings
from .loop import (MetricsLog, adamw, all_reduce_sum, autocast, checkpoint_if_due, memory_mb, micro_batch_size, no_sync,
                   report_step, set_deterministic, train_mode, wrap_ddp)  # fmt: skip
from .schedule import WarmupCosine

FINAL = "final"
CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"


# -- the generator to train ----------------------------------------------------------------------------


def generator_spec(spec: str | os.PathLike) -> tuple[dict[str, Any], Path | None]:
    """(official nested config, folder whose weights start the run or None) for --generator:
    a registry name (architecture only), a config.json file, a folder with config.json (+ weights), or a
    Hub repo id (its snapshot is such a folder)."""
    from .. import registry

    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"{path}: no config.json in this folder")
        has_weights = any((path / n).is_file() for n in ("model.safetensors", "pytorch_model.bin"))
        return read_config_file(path / "config.json"), path if has_weights else None
    if path.is_file():
        return read_config_file(path), None
    entry = registry.find(str(spec))
    if entry is None:
        if str(spec).endswith(".json") or str(spec).startswith((".", "/", "~")):
            raise ConfigError(f"{path}: no such file or folder")
        if "/" not in str(spec):
            raise registry.unknown_model(str(spec), "generator", "a registry name, a config.json or a folder")
        from ..hub import resolve  # a Hub repo id (owner/name[@rev], owner/name:file): like load_generator

        found = resolve(str(spec), "generator")
        weights = found.source.weights
        return found.config, weights.parent if weights is not None and weights.name == "model.safetensors" else None
    if entry.kind != "generator":
        entry = registry.get(entry.generator) if entry.generator else entry
    if entry.kind != "generator":
        raise UsageError(f"{entry.name} has no generator architecture")
    return entry.config, None


def _init_state(init: str | os.PathLike, model: TiTokGenerator) -> tuple[dict[str, torch.Tensor], str]:
    """Weights to start from: a training checkpoint (its model weights) or anything `load_generator` reads."""
    from ..checkpoint import read_state_dict
    from ..hub import resolve

    path = Path(init).expanduser()
    if path.is_file() and path.suffix == ".safetensors" and path.name.startswith("checkpoint-"):
        return ckpt_io.read_checkpoint(path).group("model"), str(path.resolve())
    found = resolve(init, "generator")
    weights = found.source.weights
    if weights is None:
        raise CheckpointError(f"{init}: names no weights")
    return read_state_dict(weights, model), str(weights)


def _fingerprint(cfg: GeneratorConfig, data: TokenDataset, settings: TrainSettings, objective: MaskGITObjective,
                 init: str | None) -> dict[str, Any]:  # fmt: skip
    return {"generator": asdict(cfg), "data": data.identity(), "settings": settings.result_part(),
            "objective": asdict(objective), "init": init}  # fmt: skip


# -- final Hub-format folder -------------------------------------------------------------------------


def _official_config(cfg: GeneratorConfig, settings: TrainSettings, tokenizer: dict[str, Any] | None,
                     hflip: bool) -> dict:  # fmt: skip
    """config.json: the generator in the official nested layout, plus what it was trained with and for."""
    from .. import __version__

    doc = cfg.to_official()
    doc["experiment"] = {"tokenizer": tokenizer, "trained_with": f"titok-cli {__version__}"}
    doc["optimizer"] = {"name": "adamw", "params": {"learning_rate": settings.lr, "beta1": settings.beta1,
                        "beta2": settings.beta2, "weight_decay": settings.weight_decay}}  # fmt: skip
    doc["lr_scheduler"] = {"scheduler": "cosine", "params": {"learning_rate": settings.lr,
                           "warmup_steps": settings.warmup_steps, "end_lr": settings.end_lr}}  # fmt: skip
    doc["losses"] = {"label_smoothing": settings.label_smoothing,
                     "loss_weight_unmasked_token": settings.unmasked_weight}  # fmt: skip
    doc["training"] = {"global_batch_size": settings.batch_size, "gradient_accumulation_steps": settings.grad_accum,
                       "mixed_precision": settings.precision, "use_ema": True, "seed": settings.seed,
                       "max_train_steps": settings.steps, "max_grad_norm": settings.max_grad_norm,
                       "hflip": hflip}  # fmt: skip
    return doc


# -- periodic sample grids ------------------------------------------------------------------------


class SampleGrid:
    """Every N steps: images of a few classes from the EMA weights, as one PNG grid.

    Each image draws its noise from its own seed (the `titok sample` rule), so sampling never
    touches the training RNG and a resumed run stays exact."""

    def __init__(self, folder: Path, tokenizer: str | os.PathLike, classes: list[int], device: torch.device) -> None:
        from ..loading import load_tokenizer

        self.folder, self.classes = folder, classes
        self.tokenizer = load_tokenizer(tokenizer, device=device)

    def write(self, step: int, model: TiTokGenerator, ema: EMA) -> Path:
        import copy

        from ..png import contact_sheet, save_png
        from ..sample_images import decode_images
        from ..seeds import image_seeds

        frozen = copy.deepcopy(model).eval()
        ema.copy_to(frozen)
        classes = torch.as_tensor(self.classes, device=frozen.device)
        ids = frozen.generate(classes, seeds=image_seeds(0, self.classes))  # (N, K)
        path = self.folder / f"step-{step:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_png(contact_sheet(decode_images(self.tokenizer, ids)), path)
        return path


def recorded_tokenizer(data: TokenDataset) -> str:
    """Where the token files' tokenizer can be loaded from: the folder it was read from, else its name."""
    model = data.files[0].header.get("model") or {}
    local = model.get("local_path")
    if local and Path(local).exists():
        return str(local)
    if model.get("repo") or model.get("name"):
        return str(model.get("repo") or model.get("name"))
    raise UsageError("the token files do not record their tokenizer; pass it for the sample grids")


# -- the job ---------------------------------------------------------------------------------------


def train_generator(
    tokens: Sequence[str | os.PathLike],
    run_dir: str | os.PathLike,
    generator: str | os.PathLike,
    *,
    settings: TrainSettings | None = None,
    init: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
    on_start: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train the generator `generator` (registry name, config.json or folder) on `tokens`.

    Starts from random weights, from the folder's weights, or from `init`; resumes when `run_dir`
    holds a checkpoint of the same run. `tokenizer` decodes the sample grids of `sample_every`
    (default: the one the token files record). `on_start(info)` and `on_step(metrics)` are called on rank 0.
    Under torchrun every rank calls this with the same arguments.
    """
    settings = (settings or TrainSettings())
    settings.check()
    settings = settings.resolved()
    run_dir = Path(run_dir)
    rank, world = dist_info()
    micro = micro_batch_size(settings.batch_size, settings.grad_accum, world)

    doc, folder = generator_spec(generator)
    try:
        cfg = generator_config_from_dict(doc)
    except ConfigError as exc:
        raise ConfigError(f"{generator}: {str(exc).removeprefix('config.json: ')}") from None
    data = TokenDataset(tokens, need_labels=True, hflip=settings.hflip)
    data.check_model(cfg.image_seq_len, cfg.codebook_size, cfg.condition_num_classes)
    objective = MaskGITObjective.for_config(cfg, label_smoothing=settings.label_smoothing,
                                            unmasked_weight=settings.unmasked_weight,
                                            **({} if settings.class_dropout is None else
                                               {"class_dropout": settings.class_dropout}))  # fmt: skip

    from ..devices import pick_device

    device = pick_device(rank_device(settings.device))
    set_deterministic(settings.deterministic)
    ckpt_io.seed_everything(settings.seed)  # the same initial weights on every rank
    model = TiTokGenerator.from_config(cfg).to(device)
    init_from = init if init is not None else folder
    init_id = None
    if init_from is not None:
        from ..checkpoint import load_into

        state, init_id = _init_state(init_from, model)
        load_into(model, state, init_id)
        model.to(device)
    fingerprint = _fingerprint(cfg, data, settings, objective, init_id)

    optimizer = adamw(model, settings.lr, (settings.beta1, settings.beta2), settings.weight_decay)
    ema = EMA(model, settings.ema_decay)
    state = ckpt_io.TrainingState(model, ema, optimizer)
    schedule = WarmupCosine(settings.lr, settings.steps, settings.warmup_steps, settings.end_lr)
    sampler = EpochSampler(len(data), settings.batch_size, settings.seed)
    ckpt_dir = run_dir / CHECKPOINTS

    start = 0
    latest = ckpt_io.resumable(ckpt_dir, fingerprint, run_dir)
    if latest is not None:
        if not state.restore(latest, rank=rank, world=world):  # another number of ranks: fresh dropout noise
            ckpt_io.seed_everything(settings.seed + 7919 * rank + latest.step)
        start = latest.step
    else:
        ckpt_io.seed_everything(settings.seed + 7919 * rank)  # each rank its own dropout noise

    grid = None
    if settings.sample_every is not None and rank == 0:
        seen = sorted({int(c) for tf in data.files for c in np.unique(tf.labels)})[:8]
        grid = SampleGrid(run_dir / "samples", tokenizer or recorded_tokenizer(data), seen, device)
    train_model = wrap_ddp(model, device, world)
    if settings.compile:
        train_model = torch.compile(train_model)
    log = MetricsLog(run_dir / METRICS, start) if rank == 0 else None
    info = {"rows": len(data), "mirrored": data.hflip, "steps": settings.steps, "resumed_from": start,
            "world_size": world, "device": str(device), "global_batch": settings.batch_size, "micro_batch": micro,
            "tokenizer": data.facts.tokenizer}  # fmt: skip
    if rank == 0 and on_start is not None:
        on_start(info)

    k = cfg.image_seq_len

    def micro_batch(rows: np.ndarray, flips: np.ndarray, draws, total_weight: float, sync: bool) -> torch.Tensor:
        """Forward and backward of one micro-batch; returns (weighted CE sum, hits, masked count)."""
        ids, labels = (torch.from_numpy(x) for x in data.rows(rows, flips))  # (B, K), (B,)
        masked, cond = model_inputs(ids, labels, draws, cfg)  # (B, K), (B,)
        masked, cond, ids, masks = (t.to(device) for t in (masked, cond, ids, draws.masks))
        with no_sync(train_model, not sync):
            with autocast(device, settings.precision):
                logits = train_model(masked, cond)  # (B, K, V)
                ce_sum, hits, count = loss_sums(logits, ids, masks, objective)
            # DDP averages gradients over ranks: scaling by `world` makes the sum over ranks and
            # micro-batches the weighted mean over the global batch.
            (ce_sum * (world / total_weight)).backward()
        return torch.stack([ce_sum.detach().double().cpu(), hits.double().cpu(), count.double().cpu()])

    def one_step(step: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        lr = schedule.apply(optimizer, step)
        rows, flips = sampler.step_rows(step)  # (G,), (G,) bool
        draws = draw_step(settings.seed, step, settings.batch_size, k, objective.class_dropout)
        total_weight = float(weights_of(draws.masks, objective.unmasked_weight).sum()) + 1e-8
        mine = EpochSampler.shard(rows, rank, world)
        rows, flips, draws = rows[mine], flips[mine], draws.rows(mine)
        sums = torch.zeros(3, dtype=torch.float64)  # weighted CE, masked hits, masked count
        for m in range(settings.grad_accum):
            part = slice(m * micro, (m + 1) * micro)
            sums += micro_batch(rows[part], flips[part], draws.rows(part), total_weight,
                                sync=m == settings.grad_accum - 1)  # fmt: skip
        clip = settings.max_grad_norm if settings.max_grad_norm is not None else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model)
        sums = all_reduce_sum(sums.to(device) if device.type == "cuda" else sums).cpu()
        seconds = time.perf_counter() - t0
        return {"step": step + 1, "loss": float(sums[0] / total_weight),
                "masked_accuracy": float(sums[1] / max(1.0, float(sums[2]))), "lr": lr, "grad_norm": grad_norm,
                "epoch": round(sampler.epoch_of(step + 1), 4),
                "tokens_per_s": round(settings.batch_size * k / seconds, 1), "steps_per_s": round(1.0 / seconds, 3),
                "memory_mb": round(memory_mb(device), 1)}  # fmt: skip

    last: dict[str, Any] = {}
    try:
        with train_mode(model):
            for step in range(start, settings.steps):
                last = one_step(step)
                done = report_step(last, settings, log, on_step, rank)
                if grid is not None and (done % settings.sample_every == 0 or done == settings.steps):
                    grid.write(done, model, ema)
                checkpoint_if_due(state, ckpt_dir, done, settings, fingerprint, rank)
    finally:
        if log is not None:
            log.close()

    final = None
    if rank == 0:
        doc = _official_config(cfg, settings, data.facts.tokenizer, data.hflip)
        final = ckpt_io.publish(run_dir / FINAL, model, ema, doc)
    barrier()
    return TrainResult(run_dir, final, settings.steps, start, len(data), world, last, rank)
