"""Conformance with the official implementation on every case in ../shared/golden (REFERENCE.md 9)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from safetensors.torch import load_file

import titok_cli
from titok_cli.config import read_config_file
from titok_cli import runtime

from .conftest import GENERATOR_CASES, TOKENIZER_CASES, load_meta

ATOL_LATENT = 1e-5
ATOL_OUT = 1e-4  # REFERENCE.md section 9, tiny models


# Every case runs on both CPU float32 routes: oneDNN linear layers + channels-last convolutions
# (our fast path; the conv layout is machine dependent by default, forced here) and ATen's
# F.linear + NCHW (TITOK_CPU_LINEAR=aten, TITOK_CHANNELS_LAST=0). Both must meet the tolerances.
ROUTES = ("onednn-channels-last", "aten-nchw")


@contextmanager
def cpu_route(route: str):
    fast = route == "onednn-channels-last"
    with runtime.switches(TITOK_CPU_LINEAR="onednn" if fast else "aten", TITOK_CHANNELS_LAST="1" if fast else "0"):
        yield


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    diff = (actual.float() - expected.float()).abs().max().item()
    assert diff <= atol, f"max |diff| {diff:.3g} > {atol}"


@pytest.fixture(scope="module", params=[(c, r) for c in TOKENIZER_CASES for r in ROUTES], ids="-".join)
def tok_case(request, golden):
    name, route = request.param
    case = golden / name
    with cpu_route(route):
        tok = titok_cli.TiTokTokenizer.from_config(read_config_file(case / "config.json"))
        tok.load_state_dict(load_file(case / "model.safetensors"), strict=True)
        yield name, tok, load_file(case / "io.safetensors")


def test_tokenizer_encoder_latents(tok_case):
    name, tok, io = tok_case
    with torch.no_grad():
        z = tok.encode_latents(io["images"])
    close(z, io["z"], ATOL_LATENT)


def test_tokenizer_encode(tok_case):
    name, tok, io = tok_case
    out = tok.encode(io["images"])
    if tok.is_vae:
        assert out.dtype == torch.float32
        close(out, io["mean"].squeeze(2), ATOL_LATENT)
    else:
        assert out.dtype == torch.int64
        assert torch.equal(out, io["tokens"].squeeze(1))


def test_tokenizer_quantizer_and_posterior(tok_case):
    name, tok, io = tok_case
    with torch.no_grad():
        z = tok.encode_latents(io["images"])
        if tok.is_vae:
            from titok_cli.models.quantizer import split_posterior

            mean, logvar = split_posterior(z)
            close(mean, io["mean"], ATOL_LATENT)
            close(logvar, io["logvar"], ATOL_LATENT)
        else:
            zq, ids = tok.quantize(z)
            close(zq, io["z_quantized"], ATOL_LATENT)
            assert torch.equal(ids, io["tokens"].squeeze(1))


def test_tokenizer_decode(tok_case):
    name, tok, io = tok_case
    with torch.no_grad():
        if tok.is_vae:
            close(tok.decode(io["mean"].squeeze(2)), io["decoded_mode"], ATOL_OUT)
        else:
            close(tok.decode_latents(io["z_quantized"]), io["decoded"], ATOL_OUT)
            close(tok.decode(io["tokens"].squeeze(1)), io["decoded_from_tokens"], ATOL_OUT)
            close(tok.decode(io["tokens"]), io["decoded_from_tokens"], ATOL_OUT)  # [B,1,K] accepted


def test_tokenizer_proxy_path(tok_case):
    name, tok, io = tok_case
    if "proxy_logits" not in io:
        pytest.skip(f"{name} is single-stage: no proxy codes")
    with torch.no_grad():
        close(tok.decoder(io["z_quantized"]), io["proxy_logits"], ATOL_OUT)
        close(tok.proxy_codes(io["proxy_logits"]), io["proxy_quantized_states"], ATOL_LATENT)


def test_tokenizer_uint8_reconstruction(tok_case):
    name, tok, io = tok_case
    source = io["mean"].squeeze(2) if tok.is_vae else io["tokens"].squeeze(1)
    recon = titok_cli.to_uint8(tok.decode(source))
    diff = (recon.int() - io["recon_uint8"].int()).abs()
    assert diff.max().item() <= 1  # truncation boundary, as the golden README observes
    assert (diff == 0).float().mean().item() > 0.99


def test_tokenizer_state_dict_keys_match_official(tok_case, golden):
    name, tok, io = tok_case
    official = load_file(golden / name / "model.safetensors")
    ours = tok.state_dict()
    assert list(sorted(ours)) == list(sorted(official))
    assert all(ours[k].shape == official[k].shape for k in ours)
    assert sum(v.numel() for v in ours.values()) == load_meta(golden / name)["num_parameters"]


def test_vae_sampling_is_reproducible(golden):
    case = golden / "tok_vae_tiny"
    tok = titok_cli.load_tokenizer(case)
    images = load_file(case / "io.safetensors")["images"]
    a = tok.encode(images, sample=True, generator=torch.Generator().manual_seed(7))
    b = tok.encode(images, sample=True, generator=torch.Generator().manual_seed(7))
    mean = tok.encode(images)
    assert torch.equal(a, b)
    assert not torch.equal(a, mean)


@pytest.fixture(scope="module", params=[(c, r) for c in GENERATOR_CASES for r in ROUTES], ids="-".join)
def gen_case(request, golden):
    name, route = request.param
    case = golden / name
    with cpu_route(route):
        gen = titok_cli.TiTokGenerator.from_config(read_config_file(case / "config.json"))
        gen.load_state_dict(load_file(case / "model.safetensors"), strict=True)
        yield name, gen, load_file(case / "io.safetensors"), load_meta(case)


def test_generator_logits(gen_case):
    name, gen, io, meta = gen_case
    cond = gen.logits(io["input_ids"], io["condition"], drop_class=False)
    uncond = gen.logits(io["input_ids"], io["condition"], drop_class=True)
    assert cond.dtype == torch.float32
    close(cond, io["logits_cond"], ATOL_OUT)
    close(uncond, io["logits_uncond"], ATOL_OUT)


@pytest.mark.parametrize("mode", ["gen_constant", "gen_linear", "gen_powercos", "gen_linear_anneal"])
def test_generator_sampling_matches_official(gen_case, mode):
    name, gen, io, meta = gen_case
    args = meta["sampling"][mode]["args"]
    fed = []
    original = gen.forward_tokens

    def spy(ids, cond_tokens):
        fed.append(ids[: io["condition"].shape[0]].clone())
        return original(ids, cond_tokens)

    gen.forward_tokens = spy
    try:
        out = gen.generate(
            io["condition"],
            num_steps=args["num_sample_steps"],
            guidance_scale=args["guidance_scale"],
            guidance_decay=args["guidance_decay"],
            guidance_scale_pow=args["guidance_scale_pow"],
            randomize_temperature=args["randomize_temperature"],
            softmax_temperature_annealing=args["softmax_temperature_annealing"],
        )
    finally:
        del gen.forward_tokens
    assert out.dtype == torch.int64
    assert torch.equal(out, io[mode])
    assert torch.equal(torch.stack(fed), io[f"{mode}_step_inputs"])


def test_generator_state_dict_keys_match_official(gen_case, golden):
    name, gen, io, meta = gen_case
    official = load_file(golden / name / "model.safetensors")
    assert sorted(gen.state_dict()) == sorted(official)
    assert sum(v.numel() for v in gen.state_dict().values()) == meta["num_parameters"]


def test_generate_with_seed_is_reproducible(golden):
    gen = titok_cli.load_generator(golden / "gen_vit_tiny")
    classes = torch.tensor([1, 2, 3, 4])
    kw = dict(num_steps=8, guidance_scale=3.0, guidance_decay="linear", randomize_temperature=4.5,
              softmax_temperature_annealing=True)  # fmt: skip
    a = gen.generate(classes, generator=torch.Generator().manual_seed(0), **kw)
    b = gen.generate(classes, generator=torch.Generator().manual_seed(0), **kw)
    c = gen.generate(classes, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.min() >= 0 and a.max() < gen.codebook_size


@pytest.mark.parametrize("case", GENERATOR_CASES)
def test_class_outside_the_generator_is_a_clear_error(golden, case):
    import titok_cli

    gen = titok_cli.load_generator(golden / case)
    n = gen.config.condition_num_classes
    for bad in (n, -1):
        with pytest.raises(ValueError, match=f"class id {bad} is outside this generator's classes 0..{n - 1}"):
            gen.generate(torch.tensor([0, bad]), seeds=[0, 1])
