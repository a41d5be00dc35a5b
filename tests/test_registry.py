"""Every registry preset builds with the official key layout and its recorded parameter count."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import load_file

from titok_cli import registry
from titok_cli.models.generator import TiTokGenerator
from titok_cli.models.tokenizer import TiTokTokenizer

from .conftest import GOLDEN

# which golden case has the same head layout as a preset
GOLDEN_TWIN = {
    ("tokenizer", "vq", True): "tok_vq_legacy_tiny",
    ("tokenizer", "vq", False): "tok_vq_tiny",
    ("tokenizer", "vae", False): "tok_vae_tiny",
    ("generator", "ViT"): "gen_vit_tiny",
    ("generator", "UViT"): "gen_uvit_tiny",
}


def _pattern(keys) -> set[str]:
    """Key names with layer indices of repeated blocks replaced, so depths can differ."""
    return {re.sub(r"\.(transformer|layer|in_blocks|out_blocks)\.\d+\.", r".\1.N.", "." + k) for k in keys}


def _build(entry: registry.ModelEntry) -> torch.nn.Module:
    with torch.device("meta"):
        if entry.kind == "tokenizer":
            return TiTokTokenizer.from_config(entry.config)
        return TiTokGenerator.from_config(entry.config)


def _twin(entry: registry.ModelEntry) -> str:
    if entry.kind == "tokenizer":
        c = entry.tokenizer_config
        return GOLDEN_TWIN[("tokenizer", c.quantize_mode, c.is_legacy)]
    return GOLDEN_TWIN[("generator", entry.generator_config.model_type)]


@pytest.mark.parametrize("name", registry.available_models())
def test_preset_builds_with_recorded_size(name):
    entry = registry.get(name)
    sd = _build(entry).state_dict()
    assert sum(t.numel() for t in sd.values()) == entry.num_parameters
    assert len(sd) == entry.num_state_dict_keys


@pytest.mark.parametrize("name", registry.available_models())
def test_preset_keys_follow_official_layout(name):
    if not GOLDEN.exists():
        pytest.skip("../shared/golden is absent: needed for the official key layouts")
    entry = registry.get(name)
    official = load_file(GOLDEN / _twin(entry) / "model.safetensors")
    assert _pattern(_build(entry).state_dict()) == _pattern(official)


def test_registry_facts():
    names = registry.available_models()
    assert len(registry.available_models("tokenizer")) == 11 and len(registry.available_models("generator")) == 5
    for entry in registry.all_entries():
        if entry.kind == "tokenizer" and entry.generator:
            assert registry.get(entry.generator).tokenizer == entry.name
        if not entry.architecture_only:
            assert entry.repo.startswith("yucornetto/")
    l32 = registry.get("titok-l32")
    assert l32.tokenizer_config.num_latent_tokens == 32 and l32.tokenizer_config.is_legacy
    gen = registry.get("titok-l32-gen")
    assert gen.sampling == {
        "num_steps": 8, "guidance_scale": 4.5, "guidance_decay": "linear", "guidance_scale_pow": 3.0,
        "randomize_temperature": 9.5, "softmax_temperature_annealing": True,
    }  # fmt: skip
    assert registry.get("titok-s128-gen").generator_config.model_type == "UViT"
    assert registry.get("yucornetto/tokenizer_titok_b64_imagenet").name == "titok-b64"
    assert registry.get("titok-l64-512").architecture_only and registry.get("titok-l64-512").image_size == 512
    assert "titok-bl64-vae" in names


def test_official_generator_sizes_match_paper():
    # the paper reports a 177M-parameter BERT-style generator
    assert round(registry.get("titok-l32-gen").num_parameters / 1e6) == 177
