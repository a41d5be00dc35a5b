"""`load_tokenizer` / `load_generator`: one call from a name or path to a model ready for inference."""

from __future__ import annotations

import os
from dataclasses import replace

import torch

from .config import generator_config_from_dict, tokenizer_config_from_dict
from .errors import ConfigError
from .hub import ResolvedSource, has_kind, load_into, read_state_dict, resolve
from .models.generator import TiTokGenerator
from .models.tokenizer import TiTokTokenizer


def _device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        from .devices import pick_device

        return pick_device("auto")
    return torch.device(device)


def _finish(model: torch.nn.Module, src: ResolvedSource, device, dtype) -> torch.nn.Module:
    where = str(src.weights)
    load_into(model, read_state_dict(src.weights), where)
    model.to(device=_device(device))
    if dtype is not None:
        model.to(dtype=dtype)
    model.eval()
    model.source = src  # type: ignore[attr-defined]  # how it was found, for manifests
    return model


def load_tokenizer(
    source: str | os.PathLike = "titok-l32",
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    preset: str | None = None,
) -> TiTokTokenizer:
    """A tokenizer ready for inference.

    `source`: a registry name (`titok-l32`), a Hub repo id (`owner/name`, optionally
    `@revision`), a local folder with config.json + model.safetensors (or
    pytorch_model.bin), or a single weights file (then `preset` names the architecture
    unless a config.json sits beside it).
    """
    src = resolve(source, "tokenizer", preset)
    if not has_kind(src.config, "tokenizer"):
        raise ConfigError(f"{source}: config.json describes no tokenizer (model.vq_model is missing)")
    cfg = tokenizer_config_from_dict(src.config)
    with torch.device("meta"):
        model = TiTokTokenizer(cfg)
    return _finish(model, src, device, dtype)  # type: ignore[return-value]


def load_generator(
    source: str | os.PathLike = "titok-l32",
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    preset: str | None = None,
) -> TiTokGenerator:
    """A generator ready for sampling; a tokenizer's name selects its paired generator.

    Registry entries carry the official sampling defaults, which replace the training
    values in config.json (those are the defaults of `generate`).
    """
    src = resolve(source, "generator", preset)
    if not has_kind(src.config, "generator"):
        raise ConfigError(f"{source}: config.json describes no generator (model.generator is missing)")
    cfg = generator_config_from_dict(src.config)
    if src.entry is not None and src.entry.sampling:
        cfg = replace(cfg, **src.entry.sampling)
    with torch.device("meta"):
        model = TiTokGenerator.from_config(cfg)
    return _finish(model, src, device, dtype)  # type: ignore[return-value]
