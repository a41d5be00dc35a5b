"""run_benchmark: the JSON contract the CLI and benchmarks/run.py rely on (fast, tiny models)."""

from __future__ import annotations

import json

import pytest
import torch

from titok_cli.bench import DEFAULT_MODELS, count_flops, build_models, matmul_peak_gflops, run_benchmark

TASK_KEYS = {"images_per_s", "tokens_per_s", "latency_ms", "peak_memory_mb"}


@pytest.fixture(scope="module")
def tiny(golden):
    return str(golden / "tok_vq_legacy_tiny"), str(golden / "gen_vit_tiny")


@pytest.mark.slow
def test_local_folders_load_real_weights(tiny):
    tok, gen = tiny
    r = run_benchmark(model=tok, generator=gen, device="cpu", batch_size=2, warmup=0, iters=1)
    json.dumps(r)  # JSON-ready
    assert r["weights"] == "pretrained"
    assert r["device"] == "cpu" and r["dtype"] == "float32" and r["batch_size"] == 2
    assert r["resolution"] == 64  # the model's own size wins; the note says so
    assert "64x64" in r["note"]
    assert r["tokenizer"]["num_parameters"] > 0 and r["generator"]["num_parameters"] > 0
    for task in ("encode", "decode", "sample"):
        assert TASK_KEYS <= set(r[task]), task
        assert r[task]["images_per_s"] > 0
        assert r[task]["tokens_per_s"] == pytest.approx(r[task]["images_per_s"] * 8)
        assert r[task]["gflops_per_s"] > 0
    assert "VmHWM" in r["peak_memory_kind"] or "ru_maxrss" in r["peak_memory_kind"]


def test_without_generator_sample_is_none(tiny):
    tok, _ = tiny
    r = run_benchmark(model=tok, device="cpu", batch_size=1, warmup=0, iters=1, tasks=("encode", "sample"))
    assert r["generator"] is None and r["sample"] is None and "decode" not in r
    assert "sample not measured" in r["note"]


@pytest.mark.slow
def test_bfloat16_runs(tiny):
    tok, gen = tiny
    r = run_benchmark(model=tok, generator=gen, device="cpu", dtype="bf16", batch_size=2, warmup=0, iters=1)
    assert r["dtype"] == "bfloat16"
    assert all(r[t]["images_per_s"] > 0 for t in ("encode", "decode", "sample"))


@pytest.mark.slow
def test_registry_name_without_cache_uses_random_weights(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path), raising=False)
    r = run_benchmark(model="titok-s128", device="cpu", batch_size=1, warmup=0, iters=1, tasks=("encode",))
    assert r["weights"] == "random" and r["tokenizer"]["weights"] == "random"
    assert "random weights" in r["note"] and r["resolution"] == 256
    assert r["tokenizer"]["name"] == "titok-s128"


def test_defaults_and_flops(tiny):
    assert DEFAULT_MODELS == {256: "titok-l32", 512: "titok-l64-512"}
    tok, gen, _ = build_models(model=tiny[0], generator=tiny[1])
    flops = count_flops(tok, gen, ("encode", "decode", "sample"))
    assert 0 < flops["encode"] < flops["decode"] < flops["sample"]


def test_bad_arguments(tiny):
    from titok_cli.errors import UsageError

    with pytest.raises(UsageError):
        run_benchmark(model=tiny[0], device="cpu", tasks=("train",))
    with pytest.raises(UsageError):
        run_benchmark(model=tiny[0], device="cpu", dtype="int3")


def test_matmul_peak_is_positive():
    assert matmul_peak_gflops("cpu", torch.float32, n=256, seconds=0.05) > 0


def test_cpu_allocator_is_recorded(tiny):
    tok, _ = tiny
    r = run_benchmark(model=tok, device="cpu", batch_size=1, warmup=0, iters=1, tasks=("encode",))
    assert isinstance(r["cpu_allocator"], str) and r["cpu_allocator"]


def test_flops_are_nominal(tiny):
    """The sub-pixel upsampling does less work; the FLOP count stays the official algorithm's."""
    from titok_cli.models.pixel_decoder import PixelDecoder

    dec = PixelDecoder(32)
    from torch.utils.flop_counter import FlopCounterMode

    codes = torch.randn(1, 256, 2, 2)
    with torch.enable_grad(), FlopCounterMode(display=False) as plain:
        dec(codes)
    with torch.inference_mode(), FlopCounterMode(display=False) as fast:
        dec(codes)
    assert fast.get_total_flops() < plain.get_total_flops()
    tok, _, _ = build_models(model=tiny[0], with_generator=False)
    from titok_cli.bench import _flop_mapping

    with torch.enable_grad(), FlopCounterMode(display=False, custom_mapping=_flop_mapping()) as whole:
        tok.decode_latents(tok.tokens_to_latents(torch.zeros(1, tok.num_tokens, dtype=torch.long)))
    assert count_flops(tok, None, ("decode",))["decode"] == whole.get_total_flops()
