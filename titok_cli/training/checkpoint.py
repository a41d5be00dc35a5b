"""Training checkpoints: one safetensors file per save, written atomically, the last N kept.

`TrainingState` saves and restores a run (model, EMA, optimizer, RNG of every rank), `resumable`
finds the checkpoint to continue and refuses one of another run, `publish` writes the EMA weights
as a Hub-format folder. A checkpoint holds everything an exact resume needs:
  tensors  `model.<key>`, `ema.<key>`, `optim.<param name>.<field>` and `rng.<rank>.<source>`
           (torch CPU, CUDA, numpy's MT19937 words), all plain tensors in safetensors;
  metadata one JSON document (safetensors' string metadata): the step, the run's fingerprint and
           settings, optimizer hyper-parameters, the data position, the Python/numpy RNG
           scalars, and whatever the job adds.
Nothing is ever unpickled: the JSON part is parsed by `json`, the tensors by safetensors. The
file appears under its final name only when complete (temp file, fsync, rename), so a run killed
at any instant leaves either the previous checkpoint or the new one.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, UsageError
from ..atomic_files import atomic_path
from .ema import EMA

META_KEY = "titok_train"
FORMAT = 1
_NAME = re.compile(r"^checkpoint-(\d{8})\.safetensors$")


@dataclass
class Checkpoint:
    """What one checkpoint file holds (tensors by prefixed name, and the JSON metadata)."""

    step: int
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors under `prefix.` with the prefix removed (`group("model")` -> a state dict)."""
        cut = len(prefix) + 1
        return {k[cut:]: v for k, v in self.tensors.items() if k.startswith(prefix + ".")}


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:08d}.safetensors"


def list_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the complete checkpoints in `folder`, oldest first (temp files ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)) and p.is_file()]
    return sorted(found)


def remove_partials(folder: str | Path) -> None:
    """Delete temp files a killed run left mid-write (never a complete checkpoint)."""
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.glob(".checkpoint-*.partial*"):
            p.unlink(missing_ok=True)


def write_checkpoint(folder: str | Path, ckpt: Checkpoint, keep: int | None = None) -> Path:
    """Write `ckpt` atomically as folder/checkpoint-<step>.safetensors; keep only the newest `keep`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    meta = {**ckpt.meta, "format": FORMAT, "step": ckpt.step}
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in ckpt.tensors.items()}
    final = folder / checkpoint_name(ckpt.step)
    with atomic_path(final, ".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
    if keep is not None and keep > 0:
        for _, old in list_checkpoints(folder)[:-keep]:
            old.unlink(missing_ok=True)
    return final


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint written by `write_checkpoint` (CheckpointError when it is not one)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get(META_KEY)
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable training checkpoint ({exc})") from None
    if raw is None:
        raise CheckpointError(f"{path}: not a titok training checkpoint (no {META_KEY!r} metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: its training metadata is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("step"), int):
        raise CheckpointError(f"{path}: unknown training checkpoint format")
    return Checkpoint(step=meta["step"], tensors=tensors, meta=meta)


def latest_checkpoint(folder: str | Path) -> Checkpoint | None:
    """The newest checkpoint in `folder`, or None when there is none."""
    found = list_checkpoints(folder)
    return read_checkpoint(found[-1][1]) if found else None


# -- optimizer state, keyed by parameter name ------------------------------------------------------


def optimizer_state(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors `<param>.<field>`, JSON part) of an optimizer; `names` maps id(param) -> name."""
    order = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{order[index]}.{key}"] = value
            else:
                scalars.setdefault(order[index], {})[key] = value
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [order[i] for i in g["params"]]}
              for g in sd["param_groups"]]  # fmt: skip
    return tensors, {"param_groups": groups, "scalars": scalars}


def load_optimizer_state(optimizer: torch.optim.Optimizer, names: dict[int, str], tensors: dict[str, torch.Tensor],
                         meta: dict) -> None:  # fmt: skip
    """Inverse of `optimizer_state` for an optimizer built over the same named parameters."""
    order = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    index = {name: i for i, name in enumerate(order)}
    saved_groups = meta.get("param_groups", [])
    if [sorted(g["params"]) for g in saved_groups] != [sorted(names[id(p)] for p in g["params"])
                                                        for g in optimizer.param_groups]:  # fmt: skip
        raise CheckpointError("the checkpoint's optimizer covers other parameters than this model")
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        name, _, fld = key.rpartition(".")
        state.setdefault(index[name], {})[fld] = value
    for name, values in meta.get("scalars", {}).items():
        state.setdefault(index[name], {}).update(values)
    groups = []
    for saved, live in zip(saved_groups, optimizer.param_groups):
        group = {k: v for k, v in saved.items() if k != "params"}
        group["params"] = [index[names[id(p)]] for p in live["params"]]
        groups.append(group)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# -- random number generators ---------------------------------------------------------------------


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """This process's RNG states: torch CPU (and current CUDA device), numpy's legacy global, Python's."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["cuda"] = torch.cuda.get_rng_state()
    kind, words, pos, has_gauss, gauss = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(np.asarray(words, dtype=np.int64))
    version, internal, gauss_next = random.getstate()
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(gauss)],
            "python": [version, list(internal), gauss_next]}  # fmt: skip
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Inverse of `rng_state`."""
    torch.set_rng_state(tensors["torch"].to(torch.uint8))
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"].to(torch.uint8))
    kind, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's global RNG and Python's `random`."""
    torch.manual_seed(seed)
    np.random.seed(seed % (1 << 32))
    random.seed(seed)


# -- the state of a run ------------------------------------------------------------------------------


def differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """`section.key: old -> new` for every top-level or second-level value that differs."""
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            out.append(f"{key}: {json.dumps(a)[:80]} -> {json.dumps(b)[:80]}")
    return out


def resumable(folder: str | Path, fingerprint: dict[str, Any], run_dir: str | Path) -> Checkpoint | None:
    """The newest checkpoint of this run in `folder` (None: start fresh); UsageError when the
    checkpoint belongs to a run with another fingerprint. Stale temp files are removed first."""
    remove_partials(folder)
    latest = latest_checkpoint(folder)
    if latest is None:
        return None
    diff = differences(latest.meta.get("fingerprint", {}), fingerprint)
    if diff:
        raise UsageError(f"{run_dir} holds a run with other settings ({'; '.join(diff[:4])}); rerun with the "
                         "same arguments to resume it, or choose another output folder")  # fmt: skip
    return latest


def learned_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's buffers and trainable parameters (frozen parameters, e.g. a perceptual net, left out)."""
    params = dict(module.named_parameters())
    return {k: v for k, v in module.state_dict(keep_vars=True).items() if k not in params or params[k].requires_grad}


@dataclass
class TrainingState:
    """What a checkpoint captures and restores: model, EMA, optimizer, and every rank's RNG.

    `extras` are further modules of the run (a loss with a discriminator and running buffers),
    saved as `extra.<name>.<key>` without their frozen parameters; `extra_optimizers[name]`
    optimizes parameters of `extras[name]` and is saved as `extra_optim.<name>.<param>.<field>`."""

    model: torch.nn.Module
    ema: EMA
    optimizer: torch.optim.Optimizer
    extras: dict[str, torch.nn.Module] = field(default_factory=dict)
    extra_optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.names = {id(p): n for n, p in self.model.named_parameters()}
        self.extra_names = {k: {id(p): n for n, p in m.named_parameters()} for k, m in self.extras.items()}

    def save(self, folder: str | Path, step: int, meta: dict[str, Any], *, keep: int, rank: int = 0,
             gather=None) -> Path | None:  # fmt: skip
        """Collective under torchrun: every rank calls it (their RNG states go to rank 0, which
        writes). `gather(obj) -> [obj of each rank]`; None for a single process."""
        rng_all = gather(rng_state()) if gather is not None else [rng_state()]
        if rank != 0:
            return None
        tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in self.ema.state_tensors().items()})
        opt_tensors, opt_meta = optimizer_state(self.optimizer, self.names)
        tensors.update({f"optim.{k}": v for k, v in opt_tensors.items()})
        for r, (rng_t, _) in enumerate(rng_all):
            tensors.update({f"rng.{r}.{k}": v for k, v in rng_t.items()})
        extra_meta = {}
        for name, module in self.extras.items():
            tensors.update({f"extra.{name}.{k}": v for k, v in learned_state(module).items()})
        for name, opt in self.extra_optimizers.items():
            opt_tensors, extra_meta[name] = optimizer_state(opt, self.extra_names[name])
            tensors.update({f"extra_optim.{name}.{k}": v for k, v in opt_tensors.items()})
        full = {**meta, "ema_updates": self.ema.updates, "optimizer": opt_meta, "rng": [m for _, m in rng_all],
                "world_size": len(rng_all)}  # fmt: skip
        if extra_meta:
            full["extra_optimizers"] = extra_meta
        return write_checkpoint(folder, Checkpoint(step, tensors, full), keep=keep)

    def restore(self, ckpt: Checkpoint, *, rank: int = 0, world: int = 1) -> bool:
        """Load weights, EMA, optimizer and this rank's RNG; False when the RNG could not be
        restored (saved with another number of ranks: the caller reseeds)."""
        self.model.load_state_dict(ckpt.group("model"))
        self.ema.load(ckpt.group("ema"), ckpt.meta["ema_updates"])
        load_optimizer_state(self.optimizer, self.names, ckpt.group("optim"), ckpt.meta["optimizer"])
        for name, module in self.extras.items():
            saved = ckpt.group(f"extra.{name}")
            missing = sorted(set(learned_state(module)) - set(saved))
            if missing:
                raise CheckpointError(f"the checkpoint lacks {name} state: {', '.join(missing[:4])}")
            module.load_state_dict(saved, strict=False)
        for name, opt in self.extra_optimizers.items():
            load_optimizer_state(opt, self.extra_names[name], ckpt.group(f"extra_optim.{name}"),
                                 ckpt.meta["extra_optimizers"][name])  # fmt: skip
        rng = ckpt.group(f"rng.{rank}")
        if ckpt.meta.get("world_size") != world or not rng:
            return False
        set_rng_state(rng, ckpt.meta["rng"][rank])
        return True


def publish(final: str | Path, model: torch.nn.Module, ema: EMA, config: dict[str, Any]) -> Path:
    """A Hub-format folder (config.json + model.safetensors of the EMA weights) at `final`,
    replaced as a whole: built beside it, then renamed into place."""
    from safetensors.torch import save_file

    final = Path(final)
    partial, old = final.with_name(final.name + ".partial"), final.with_name(final.name + ".old")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    weights = {n: t.detach().clone() for n, t in model.state_dict().items()}
    for name, shadow in ema.shadow.items():
        weights[name] = shadow.to(weights[name].dtype).clone()
    save_file({k: v.cpu().contiguous() for k, v in weights.items()}, str(partial / "model.safetensors"),
              metadata={"format": "pt"})  # fmt: skip
    (partial / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    umask = os.umask(0)
    os.umask(umask)
    for item in partial.iterdir():  # safetensors writes 0600; a published model gets normal permissions
        os.chmod(item, 0o666 & ~umask)
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    partial.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final
