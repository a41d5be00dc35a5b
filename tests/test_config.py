"""Reading the official nested config.json into typed configs."""

from __future__ import annotations

import pytest

from titok_cli.config import (
    generator_config_from_dict,
    read_config_file,
    resolve_interpolations,
    tokenizer_config_from_dict,
)
from titok_cli.errors import ConfigError


def test_interpolation_resolves_against_document():
    doc = {"model": {"vq_model": {"num_latent_tokens": 32}, "generator": {"image_seq_len": "${model.vq_model.num_latent_tokens}", "name": "k=${model.vq_model.num_latent_tokens}"}}}
    out = resolve_interpolations(doc)
    assert out["model"]["generator"]["image_seq_len"] == 32
    assert out["model"]["generator"]["name"] == "k=32"
    with pytest.raises(ConfigError, match="points to nothing"):
        resolve_interpolations({"a": "${b.c}"})
    with pytest.raises(ConfigError, match="circular"):
        resolve_interpolations({"a": "${b}", "b": "${a}"})


def test_golden_configs_read_with_official_defaults(golden):
    legacy = tokenizer_config_from_dict(read_config_file(golden / "tok_vq_legacy_tiny" / "config.json"))
    assert legacy.is_legacy and legacy.quantize_mode == "vq" and legacy.finetune_decoder  # defaults
    assert legacy.image_size == 64 and legacy.pixel_hidden_channels == 32
    vae = tokenizer_config_from_dict(read_config_file(golden / "tok_vae_tiny" / "config.json"))
    assert vae.is_vae and vae.codebook_size is None and not vae.is_legacy
    gen = generator_config_from_dict(read_config_file(golden / "gen_vit_tiny" / "config.json"))
    assert gen.image_seq_len == 8 and gen.codebook_size == 256 and gen.vocab_size == 268 and gen.drop_label_id == 267


def test_bad_values_are_rejected():
    with pytest.raises(ConfigError, match="vit_enc_model_size"):
        tokenizer_config_from_dict({"model": {"vq_model": {"vit_enc_model_size": "huge", "codebook_size": 8}}})
    with pytest.raises(ConfigError, match="wrong type"):
        tokenizer_config_from_dict({"model": {"vq_model": {"num_latent_tokens": "many", "token_size": 4}}})
    with pytest.raises(ConfigError, match="no model.vq_model"):
        tokenizer_config_from_dict({"model": {}})
    with pytest.raises(ConfigError, match="model_type"):
        generator_config_from_dict({"model": {"generator": {"model_type": "GPT"}}})


def test_round_trip_through_official_layout():
    from titok_cli.registry import get

    for name in ("titok-l32", "titok-bl64-vae", "titok-l32-gen", "titok-s128-gen"):
        e = get(name)
        if e.kind == "tokenizer":
            c = e.tokenizer_config
            assert tokenizer_config_from_dict(c.to_official()) == c
        else:
            c = e.generator_config
            assert generator_config_from_dict(c.to_official()).model_type == c.model_type
