"""Half precision through `model.to(dtype)` / `load_*(dtype=...)`: what stays float32, and agreement.

The golden models are tiny and untrained, so their half-precision agreement with float32 is a
loose sanity bound (measured: bf16 token agreement 0.91-0.92, decode PSNR 18-30 dB; fp16
0.98 and 35-48 dB). The full-size check with random weights is indicative only.
"""

from __future__ import annotations

import math

import pytest
import torch

import titok_cli
from titok_cli import runtime
from titok_cli.preprocess import load_image, to_tensor

from .conftest import GENERATOR_CASES, TOKENIZER_CASES

BOUNDS = {  # dtype: (min token agreement, min decode PSNR dB, max VAE relative error)
    torch.bfloat16: (0.85, 15.0, 0.3),
    torch.float16: (0.95, 30.0, 0.05),
}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def photos(images_dir, size: int, limit: int | None = None) -> torch.Tensor:
    paths = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:limit]
    return to_tensor([load_image(p, size) for p in paths])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", TOKENIZER_CASES)
def test_tokenizer_half_precision_agrees_with_float32(golden, images_dir, case, dtype):
    ref = titok_cli.load_tokenizer(golden / case)
    half = titok_cli.load_tokenizer(golden / case, dtype=dtype)
    assert half.dtype == dtype
    x = photos(images_dir, ref.image_size)
    codes, codes_h = ref.encode(x), half.encode(x)
    pixels, pixels_h = ref.decode(codes), half.decode(codes)
    min_agree, min_psnr, max_rel = BOUNDS[dtype]
    assert pixels_h.dtype == torch.float32 and pixels_h.shape == pixels.shape
    assert not pixels_h.isnan().any() and pixels_h.isfinite().all()
    if ref.is_vae:
        assert codes_h.dtype == torch.float32
        assert ((codes_h - codes).abs().max() / codes.abs().max()).item() <= max_rel
    else:
        assert codes_h.dtype == torch.int64
        agree = (codes_h == codes).float().mean().item()
        assert agree >= min_agree, f"token agreement {agree:.3f}"
    assert psnr(pixels_h, pixels) >= min_psnr


def test_what_stays_float32(golden):
    tok = titok_cli.load_tokenizer(golden / "tok_vq_legacy_tiny")
    pix = {k: v.clone() for k, v in tok.pixel_decoder.state_dict().items()}
    tok.to(torch.float16)
    assert tok.encoder.patch_embed.weight.dtype == torch.float16
    assert tok.quantize.embedding.weight.dtype == torch.float32  # codebook: exact distances
    assert tok.encoder.ln_post.weight.dtype == tok.encoder.conv_out.weight.dtype == torch.float32  # head
    assert tok.pixel_quantize.embedding.weight.dtype == torch.float32
    assert all(torch.equal(v, pix[k]) for k, v in tok.pixel_decoder.state_dict().items())  # fp16 refused, untouched
    tok.to(torch.bfloat16)
    w = tok.pixel_decoder.conv_in.weight
    assert w.dtype == torch.bfloat16 and w.is_contiguous(memory_format=torch.channels_last)
    assert tok.quantize.embedding.weight.dtype == torch.float32
    tok.float()
    w = tok.pixel_decoder.conv_in.weight
    fmt = torch.channels_last if runtime.float32_channels_last() else torch.contiguous_format  # CPU float32
    assert w.dtype == torch.float32 and w.is_contiguous(memory_format=fmt)
    assert all(p.dtype == torch.float32 for p in tok.parameters())


def test_bfloat16_through_the_bfloat16_method(golden):
    tok = titok_cli.load_tokenizer(golden / "tok_vq_tiny").bfloat16()
    assert tok.dtype == torch.bfloat16 and tok.quantize.embedding.weight.dtype == torch.float32
    assert tok.decode(torch.zeros(1, tok.num_tokens, dtype=torch.long)).dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", GENERATOR_CASES)
def test_generator_half_precision(golden, case, dtype):
    ref = titok_cli.load_generator(golden / case)
    half = titok_cli.load_generator(golden / case, dtype=dtype)
    assert half.dtype == dtype
    classes = torch.arange(10)
    ids = torch.randint(0, ref.codebook_size + 1, (10, ref.num_tokens), generator=torch.Generator().manual_seed(0))
    a, b = ref.logits(ids, classes), half.logits(ids, classes)
    assert b.dtype == torch.float32 and b.isfinite().all()
    assert ((a - b).abs().max() / a.abs().max()).item() <= 0.03
    assert (a.argmax(-1) == b.argmax(-1)).float().mean().item() >= 0.9
    kw = dict(randomize_temperature=0.0, guidance_decay="constant", guidance_scale=2.0)
    out = half.generate(classes, **kw)
    assert out.dtype == torch.int64 and 0 <= out.min() and out.max() < ref.codebook_size
    assert (out == ref.generate(classes, **kw)).float().mean().item() >= 0.75


@pytest.mark.slow
def test_full_size_bfloat16_random_weights(images_dir):
    """S-128 architecture, random weights: indicative only (no checkpoints offline)."""
    from titok_cli import registry

    torch.manual_seed(0)
    ref = titok_cli.TiTokTokenizer.from_config(registry.get("titok-s128").config)
    x = photos(images_dir, 256, limit=2)
    ids, pixels = ref.encode(x), None
    pixels = ref.decode(ids)
    half = ref.to(torch.bfloat16)  # in place: the float32 results are already computed
    agree = (half.encode(x) == ids).float().mean().item()
    pixels_h = half.decode(ids)
    assert not pixels_h.isnan().any()
    assert agree >= 0.9, agree
    assert psnr(pixels_h, pixels) >= 33.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_pixel_decoder_fast_forms_match_the_plain_forms(dtype):
    """Inference (sub-pixel upsampling convs, in-place SiLU/adds) against the plain official forms."""
    from titok_cli.models.pixel_decoder import PixelDecoder

    torch.manual_seed(0)
    dec = PixelDecoder(32).to(dtype)
    codes = torch.randn(2, 256, 4, 4)
    with torch.no_grad():
        fast = dec(codes).float()
        fast_again = dec(codes).float()  # cached phase kernels
    with torch.enable_grad():
        plain = dec(codes).float()
    assert torch.equal(fast, fast_again)
    rel = ((fast - plain).abs().max() / plain.abs().max()).item()
    assert rel <= (1e-5 if dtype == torch.float32 else 0.05), rel
    if dtype == torch.bfloat16:
        assert fast.shape == plain.shape
