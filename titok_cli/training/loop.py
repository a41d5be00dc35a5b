"""The generic parts of a training loop: optimizer groups, precision, DDP, reductions, metrics,
and what every step ends with (its metrics line, its progress report, a checkpoint when due).

Nothing here knows what is being trained; `generator_job` and `tokenizer_job` compose these.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import sys
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from ..distributed import barrier
from ..errors import UsageError

PRECISIONS = ("float32", "bf16")
_COUNTS = ("steps", "batch_size", "grad_accum", "checkpoint_every", "keep_checkpoints", "log_every")


def check_run_settings(s: Any, counts: tuple[str, ...] = (), unit_range: tuple[str, ...] = ()) -> None:
    """The checks both training jobs' settings share (UsageError naming the flag): counts >= 1, a batch
    that splits into --grad-accum micro-batches, decay, clipping, warm-up, precision, and values
    in [0, 1] (`unit_range`, besides ema_decay and the betas)."""
    for name in _COUNTS + counts:
        if getattr(s, name) < 1:
            raise UsageError(f"{name.replace('_', '-')} must be >= 1, got {getattr(s, name)}")
    if s.batch_size % s.grad_accum:
        raise UsageError(f"batch size {s.batch_size} is not a multiple of --grad-accum {s.grad_accum}")
    if not (math.isfinite(s.weight_decay) and s.weight_decay >= 0):
        raise UsageError(f"weight decay must be a finite number >= 0, got {s.weight_decay}")
    if s.max_grad_norm is not None and not (math.isfinite(s.max_grad_norm) and s.max_grad_norm > 0):
        raise UsageError(f"max grad norm must be a finite number > 0 (or off), got {s.max_grad_norm}")
    if s.warmup_steps is not None and not 0 <= s.warmup_steps <= s.steps:
        raise UsageError(f"warm-up steps must be in 0..{s.steps}, got {s.warmup_steps}")
    if s.precision not in PRECISIONS:
        raise UsageError(f"precision {s.precision!r} is not one of {', '.join(PRECISIONS)}")
    for name in unit_range + ("ema_decay", "beta1", "beta2"):
        if not 0.0 <= getattr(s, name) <= 1.0:
            raise UsageError(f"{name.replace('_', '-')} must be in [0, 1], got {getattr(s, name)}")


def micro_batch_size(batch_size: int, grad_accum: int, world: int) -> int:
    """Images (rows) per micro-batch on each rank; UsageError when the global batch does not split evenly."""
    per_rank = batch_size // world
    if batch_size % world or per_rank % grad_accum:
        raise UsageError(f"batch size {batch_size} does not split evenly over {world} ranks x "
                         f"{grad_accum} accumulation steps")  # fmt: skip
    return per_rank // grad_accum

# Parameter names the official trainer keeps out of weight decay (besides every tensor of rank < 2).
_NO_DECAY_PARTS = ("ln", "bias", "latent_tokens", "mask_token", "embedding", "norm", "gamma", "embed")


def decays(name: str, param: torch.Tensor) -> bool:
    """The official rule: weight decay only for matrices whose name has none of _NO_DECAY_PARTS."""
    return param.ndim >= 2 and not any(part in name for part in _NO_DECAY_PARTS)


def adamw(model: nn.Module, lr: float, betas: tuple[float, float], weight_decay: float) -> torch.optim.AdamW:
    """AdamW over two groups (no decay, decay) as the official trainer builds it."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in named if decays(n, p)], "weight_decay": weight_decay},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def param_names(model: nn.Module) -> dict[int, str]:
    """id(parameter) -> its name (how checkpoints key optimizer state)."""
    return {id(p): n for n, p in model.named_parameters()}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU or CUDA (weights and optimizer stay float32); float32: nothing."""
    if precision == "float32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")


def set_deterministic(on: bool) -> None:
    """Deterministic kernels (CUDA needs a fixed cuBLAS workspace, set before its first use)."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on)


def wrap_ddp(model: nn.Module, device: torch.device, world: int) -> nn.Module:
    """DistributedDataParallel under torchrun (rank 0's weights are broadcast); the model itself otherwise."""
    if world <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def no_sync(model: nn.Module, skip: bool) -> contextlib.AbstractContextManager:
    """DDP's no_sync for the accumulation micro-batches before the last (no all-reduce yet)."""
    if skip and hasattr(model, "no_sync"):
        return model.no_sync()
    return contextlib.nullcontext()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a no-op without a process group)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.all_reduce(values)
    return values


def sum_gradients(params: list[nn.Parameter]) -> None:
    """Sum every parameter's gradient over ranks in place (a no-op without a process group).

    For modules a loss function calls itself (a discriminator inside the objective), where DDP's
    forward hooks cannot see the call; a missing gradient counts as zeros."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj` in rank order (in-process objects only; nothing read from disk)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's `flag` on every rank."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return flag
    box = [flag]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA allocator peak on GPUs, the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


class MetricsLog:
    """JSON lines, one per logged step; a resumed run first drops lines past its checkpoint."""

    def __init__(self, path: str | os.PathLike, resume_step: int) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step > 0 and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", 0) <= resume_step:
                        kept.append(line)
                except (json.JSONDecodeError, AttributeError):
                    break  # a line cut short by a crash ends the usable log
        self.path.write_text("".join(x + "\n" for x in kept), encoding="utf-8")
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    @staticmethod
    def read(path: str | os.PathLike) -> list[dict[str, Any]]:
        return [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines() if x.strip()]


def report_step(last: dict[str, Any], s: Any, log: MetricsLog | None, on_step: Any, rank: int) -> int:
    """Log a finished step (every `s.log_every` steps and the last) and hand it to rank 0's
    progress callback; returns the number of steps done."""
    done = int(last["step"])
    if log is not None and (done % s.log_every == 0 or done == s.steps):
        log.write(last)
    if rank == 0 and on_step is not None:
        on_step(last)
    return done


def checkpoint_if_due(state: Any, folder: Path, done: int, s: Any, fingerprint: dict[str, Any], rank: int) -> None:
    """Every `s.checkpoint_every` steps and after the last: an atomic checkpoint with the data
    position. A collective under torchrun (every rank calls it; rank 0 writes)."""
    if done % s.checkpoint_every and done != s.steps:
        return
    position = {"samples_seen": done * s.batch_size, "seed": s.seed}
    state.save(folder, done, {"fingerprint": fingerprint, "data_position": position},
               keep=s.keep_checkpoints, rank=rank, gather=gather_objects)  # fmt: skip
    barrier()


@contextlib.contextmanager
def train_mode(model: nn.Module) -> Iterator[nn.Module]:
    """model.train() inside, model.eval() after (our models are built in eval mode)."""
    model.train()
    try:
        yield model
    finally:
        model.eval()
