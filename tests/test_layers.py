"""The CPU routes of models/layers.py: oneDNN for float32 / bfloat16 inference, F.linear otherwise."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from titok_cli import runtime
from titok_cli.models import layers

needs_onednn = pytest.mark.skipif(not runtime.onednn_linear(), reason="this torch build has no oneDNN linear op")


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 77, 256, generator=g)  # (B, N, W), a batch of token rows
    w = torch.randn(1024, 256, generator=g) * 256**-0.5
    return x, w, torch.randn(1024, generator=g)


@needs_onednn
def test_inference_takes_onednn_and_matches_aten():
    x, w, b = _data()
    with torch.inference_mode():
        assert layers._use_onednn(x, w)
        out, gelu = layers.linear(x, w, b), layers.linear_gelu(x, w, b)
    ref = F.linear(x, w, b)
    assert out.shape == ref.shape == (3, 77, 1024)
    # only the summation order differs: float32 rounding, far inside REFERENCE.md's 1e-4
    assert (out - ref).abs().max().item() < 1e-5 * ref.abs().max().item() + 1e-6
    assert (gelu - F.gelu(ref)).abs().max().item() < 1e-5 * ref.abs().max().item() + 1e-6
    with torch.no_grad():
        strided = x[:, 1:]  # (B, N-1, W), not contiguous: the generator's lm_head input
        assert (layers.linear(strided, w, None) - F.linear(strided, w)).abs().max().item() < 1e-4


def test_training_and_other_dtypes_keep_aten():
    x, w, b = _data()
    w.requires_grad_(True)
    assert not layers._use_onednn(x, w)  # gradients on: oneDNN's op has no backward
    layers.linear_gelu(x, w, b).sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    with torch.no_grad():
        assert not layers._use_onednn(x.half(), w.half())
        assert not layers._use_onednn(x.bfloat16(), w)  # mixed dtypes: F.linear raises its usual error


@needs_onednn
def test_bfloat16_linear_is_bit_identical_to_aten():
    x, w, b = (t.bfloat16() for t in _data())
    with torch.inference_mode():
        assert torch.equal(layers.linear(x, w, b), F.linear(x, w, b))  # both oneDNN: same kernel
        fused = layers.linear_gelu(x, w, b).float()
    ref = F.gelu(F.linear(x.float(), w.float(), b.float()))
    assert (fused - ref).abs().max().item() < 0.02 * ref.abs().max().item()  # bf16 rounding only


def test_linear_module_keeps_nn_linear_parameters():
    m = layers.Linear(8, 4)
    assert isinstance(m, torch.nn.Linear)
    assert sorted(m.state_dict()) == ["bias", "weight"]
    x = torch.randn(2, 8)
    with torch.no_grad():
        assert torch.allclose(m(x), F.linear(x, m.weight, m.bias), atol=1e-6)


@needs_onednn
def test_every_fully_connected_layer_of_the_models_takes_the_route(golden, monkeypatch):
    import titok_cli

    tok = titok_cli.load_tokenizer(golden / "tok_vq_legacy_tiny")
    gen = titok_cli.load_generator(golden / "gen_uvit_tiny")
    for model in (tok, gen):
        plain = [n for n, m in model.named_modules() if type(m) is torch.nn.Linear]
        assert not plain, f"nn.Linear outside the oneDNN route: {plain}"
    taken = []
    original = layers._use_onednn
    monkeypatch.setattr(layers, "_use_onednn", lambda x, w: taken.append(original(x, w)) or taken[-1])
    ids = tok.encode(torch.rand(2, 3, tok.image_size, tok.image_size))
    tok.decode(ids)
    gen.generate(torch.tensor([1, 2]), num_steps=2, generator=torch.Generator().manual_seed(0))
    assert taken and all(taken)  # inference: every call went to oneDNN


@needs_onednn
def test_aten_switch_turns_the_route_off():
    x, w, b = _data()
    with torch.inference_mode():
        with runtime.switches(TITOK_CPU_LINEAR="aten"):
            assert not layers._use_onednn(x, w)
            assert torch.equal(layers.linear(x, w, b), F.linear(x, w, b))  # ATen itself, bit for bit
        assert layers._use_onednn(x, w)  # restored on leaving the block
