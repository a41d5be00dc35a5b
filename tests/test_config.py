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


def _golden_doc(golden, case):
    import json

    return json.loads((golden / case / "config.json").read_text())


def test_dangling_reference_in_an_unread_key_is_harmless(golden):
    """The official loader resolves a value only when it is read; so do we (issue 9.3)."""
    doc = _golden_doc(golden, "gen_vit_tiny")
    plain = generator_config_from_dict(doc)
    doc["experiment"]["output_dir"] = "${oops.missing}"
    doc["model"]["generator"]["training_only"] = "runs/${experiment.nope}"  # an unknown key in a read section
    assert generator_config_from_dict(doc) == plain
    with pytest.raises(ConfigError, match=r"\$\{oops.missing\} points to nothing"):
        resolve_interpolations(doc)  # the strict whole-document form still reports it
    doc["model"]["generator"]["hidden_size"] = "${oops.missing}"  # a key that is read
    with pytest.raises(ConfigError, match="points to nothing"):
        generator_config_from_dict(doc)


def test_relative_references_resolve_as_in_omegaconf(golden):
    doc = _golden_doc(golden, "tok_vq_legacy_tiny")
    plain_tok, plain_gen = tokenizer_config_from_dict(doc), generator_config_from_dict(doc)
    vq = doc["model"]["vq_model"]
    vq["vit_dec_model_size"] = "${.vit_enc_model_size}"  # one dot: a sibling in the same node
    vq["vit_dec_patch_size"] = "${.vit_enc_patch_size}"
    doc["model"]["generator"]["image_seq_len"] = "${..vq_model.num_latent_tokens}"  # two dots: from the parent
    doc["model"]["generator"]["intermediate_size"] = "${...model.generator.intermediate_size_x}"
    doc["model"]["generator"]["intermediate_size_x"] = 128
    assert tokenizer_config_from_dict(doc) == plain_tok
    assert generator_config_from_dict(doc) == plain_gen
    doc["model"]["generator"]["image_seq_len"] = "${.....too.far}"
    with pytest.raises(ConfigError, match="above the document root"):
        generator_config_from_dict(doc)
    doc["model"]["generator"]["image_seq_len"] = "${oc.env:HOME}"
    with pytest.raises(ConfigError, match="resolver"):
        generator_config_from_dict(doc)


@pytest.mark.parametrize(
    "key,value",
    [("vit_enc_patch_size", 48), ("num_latent_tokens", -8), ("codebook_size", 0), ("token_size", 10**9),
     ("pixel_hidden_channels", 10**6)],
)  # fmt: skip
def test_absurd_sizes_are_refused_before_building(golden, key, value):
    doc = _golden_doc(golden, "tok_vq_legacy_tiny")
    doc["model"]["vq_model"][key] = value
    with pytest.raises(ConfigError, match=key):
        tokenizer_config_from_dict(doc)


def test_absurd_generator_sizes_are_refused(golden):
    doc = _golden_doc(golden, "gen_vit_tiny")
    doc["model"]["generator"]["hidden_size"] = 10**9
    with pytest.raises(ConfigError, match=r"hidden_size = 1000000000 is out of range"):
        generator_config_from_dict(doc)
