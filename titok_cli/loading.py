"""`load_tokenizer` / `load_generator`: one call from a name or path to a model ready for inference."""

from __future__ import annotations

import os
from dataclasses import replace

import torch

from .checkpoint import has_kind, load_into, read_state_dict
from .config import generator_config_from_dict, tokenizer_config_from_dict
from .errors import ConfigError
from .hub import Resolved, resolve
from .models.generator import TiTokGenerator
from .models.tokenizer import TiTokTokenizer


def _device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        from .devices import pick_device

        return pick_device("auto")
    return torch.device(device)


def _where(found: Resolved) -> str:
    src = found.source
    where = str(src.weights)
    if src.recognised_by in ("preset", "legacy-file"):
        where += f" (read as preset {src.preset})"
    return where


def _typed_config(found: Resolved, read):
    """The typed config; its errors name the file it came from."""
    try:
        return read(found.config)
    except ConfigError as exc:
        raise ConfigError(f"{found.config_where}: {str(exc).removeprefix('config.json: ')}") from None


def _finish(model: torch.nn.Module, found: Resolved, device, dtype) -> torch.nn.Module:
    assert found.source.weights is not None
    load_into(model, read_state_dict(found.source.weights, model), _where(found))
    model.to(device=_device(device))
    if dtype is not None:
        model.to(dtype=dtype)
    model.eval()
    return model


def load_tokenizer(
    source: str | os.PathLike = "titok-l32",
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    preset: str | None = None,
) -> TiTokTokenizer:
    """A tokenizer ready for inference; `model.source` says where its weights came from.

    `source`: a registry name (`titok-l32`), a Hub repo id (`owner/name`, optionally
    `@revision`), one file of a Hub repo (`fun-research/TiTok:tokenizer_titok_l32.bin`), a
    local folder with config.json + model.safetensors (or pytorch_model.bin), or a single
    weights file (its architecture from `preset`, a config.json beside it, or its official
    file name).
    """
    found = resolve(source, "tokenizer", preset)
    if not has_kind(found.config, "tokenizer"):
        raise ConfigError(f"{found.config_where}: describes no tokenizer (model.vq_model is missing)")
    cfg = _typed_config(found, tokenizer_config_from_dict)
    with torch.device("meta"):
        model = TiTokTokenizer(cfg, source=found.source)
    return _finish(model, found, device, dtype)  # type: ignore[return-value]


def load_generator(
    source: str | os.PathLike = "titok-l32",
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    preset: str | None = None,
) -> TiTokGenerator:
    """A generator ready for sampling; a tokenizer's name selects its paired generator.

    Weights recognised as a registry checkpoint (see `titok_cli.source`) sample with the
    official settings, which replace the training values in config.json; others use their
    config's values and the documented defaults (`model.source.sampling_origin == "config"`).
    """
    found = resolve(source, "generator", preset)
    if not has_kind(found.config, "generator"):
        raise ConfigError(f"{found.config_where}: describes no generator (model.generator is missing)")
    cfg = _typed_config(found, generator_config_from_dict)
    entry = found.source.entry
    if entry is not None:
        cfg = entry.with_sampling(cfg)
    source = replace(found.source, trained_for=_recorded_tokenizer(found.config))
    with torch.device("meta"):
        model = TiTokGenerator.from_config(cfg, source=source)
    return _finish(model, found, device, dtype)  # type: ignore[return-value]


def _recorded_tokenizer(config: dict) -> str | None:
    """The tokenizer a `titok train` output records (experiment.tokenizer: its Hub repo, else its name)."""
    tok = (config.get("experiment") or {}).get("tokenizer")
    if not isinstance(tok, dict):
        return None
    found = tok.get("repo") or tok.get("name")
    return found if isinstance(found, str) and found else None
