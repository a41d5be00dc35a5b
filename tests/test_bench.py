"""run_benchmark: the typed result, its notes, its time budget and its JSON form (fast, tiny models)."""

from __future__ import annotations

import json
from dataclasses import asdict, fields

import pytest
import torch

from titok_cli.bench import default_batch_size, run_benchmark, sampling_settings, task_notes
from titok_cli.bench_models import DEFAULT_MODELS, build_models
from titok_cli.bench_result import NOISY_SPREAD, TaskResult
from titok_cli.errors import UsageError
from titok_cli.perf import count_flops, flop_mapping, matmul_peak_gflops

TASK_KEYS = {"images_per_s", "tokens_per_s", "latency_ms", "latency_ms_min", "latency_ms_max", "peak_memory_mb"}


@pytest.fixture(scope="module")
def tiny(golden):
    return str(golden / "tok_vq_legacy_tiny"), str(golden / "gen_vit_tiny")


@pytest.mark.slow
def test_local_folders_load_real_weights(tiny):
    tok, gen = tiny
    r = run_benchmark(model=tok, generator=gen, device="cpu", batch_size=2, warmup=0, iters=1)
    d = r.to_dict()
    json.dumps(d)  # JSON-ready
    assert r.weights == "pretrained" == d["weights"]
    assert d["device"] == "cpu" and d["dtype"] == "float32" and d["batch_size"] == 2
    assert r.resolution == 64  # the model's own size; no resolution asked, so no note about it
    assert not r.notes_of("resolution-from-model")
    assert r.tokenizer.num_parameters > 0 and r.generator is not None and r.generator.num_parameters > 0
    for task in ("encode", "decode", "sample"):
        row = d[task]
        assert TASK_KEYS <= set(row), task
        assert row["images_per_s"] > 0
        assert row["tokens_per_s"] == pytest.approx(row["images_per_s"] * 8)
        assert row["gflops_per_s"] > 0
        assert row["latency_ms_min"] <= row["latency_ms"] <= row["latency_ms_max"]
        assert row["calls"] == len(row["latency_ms_all"]) == 1
    assert "VmHWM" in r.peak_memory_kind or "ru_maxrss" in r.peak_memory_kind


def test_requested_resolution_that_the_model_overrides_is_noted(tiny):
    r = run_benchmark(resolution=512, model=tiny[0], device="cpu", batch_size=1, warmup=0, iters=1, tasks=("encode",))
    assert r.resolution == 64
    (n,) = r.notes_of("resolution-from-model")
    assert "64x64" in n.message and "comes from the model" in n.message and "512" in n.message


def test_default_tasks_without_generator_skip_sample_with_a_note(tiny):
    r = run_benchmark(model=tiny[0], device="cpu", batch_size=1, warmup=0, iters=1)
    assert r.generator is None and set(r.tasks) == {"encode", "decode"}
    assert r.to_dict()["sample"] is None
    assert "sample not measured" in r.notes_of("no-generator")[0].message


def test_sample_asked_without_generator_is_a_usage_error(tiny):
    for task in ("sample", "generate"):
        with pytest.raises(UsageError, match="needs a generator"):
            run_benchmark(model=tiny[0], device="cpu", batch_size=1, warmup=0, iters=1, tasks=("encode", task))


def test_mismatched_generator_is_a_usage_error_when_sample_is_asked(golden):
    # gen_vit_tiny makes 8 ids of 256 codes; tok_vq_tiny takes 16 of 512
    models = build_models(model=str(golden / "tok_vq_tiny"), generator=str(golden / "gen_vit_tiny"))
    assert models.generator is None and [n.kind for n in models.notes] == ["generator-mismatch"]
    with pytest.raises(UsageError, match="needs a generator"):
        run_benchmark(device="cpu", batch_size=1, warmup=0, iters=1, tasks=("sample",), models=models)


@pytest.mark.slow
def test_bfloat16_runs(tiny):
    tok, gen = tiny
    r = run_benchmark(model=tok, generator=gen, device="cpu", dtype="bf16", batch_size=2, warmup=0, iters=1)
    assert r.dtype == "bfloat16"
    assert all(r.tasks[t].images_per_s > 0 for t in ("encode", "decode", "sample"))


@pytest.mark.slow
def test_registry_name_without_cache_uses_random_weights(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path), raising=False)
    r = run_benchmark(model="titok-s128", device="cpu", batch_size=1, warmup=0, iters=1, tasks=("encode",))
    assert r.weights == "random" and r.tokenizer.weights == "random"
    assert r.notes_of("not-cached") and r.notes_of("random-weights") and r.resolution == 256
    assert r.tokenizer.name == "titok-s128"


def test_defaults_and_flops(tiny):
    assert DEFAULT_MODELS == {256: "titok-l32", 512: "titok-l64-512"}
    m = build_models(model=tiny[0], generator=tiny[1])
    flops = count_flops(m.tokenizer, m.generator, ("encode", "decode", "sample"), sampling_settings(m.generator))
    assert 0 < flops["encode"] < flops["decode"] < flops["sample"]


def test_default_batch_fits_the_cpu_and_keeps_the_full_batch_elsewhere(tiny):
    assert default_batch_size(torch.device("cpu"), 512) == 1
    assert default_batch_size(torch.device("cpu"), 256) == 2
    assert default_batch_size(torch.device("cuda"), 512) == 8
    r = run_benchmark(model=tiny[0], device="cpu", warmup=0, iters=1, tasks=("encode",))
    assert r.batch_size == default_batch_size(torch.device("cpu"), 64) == 2


def test_generate_gets_every_sampling_setting_of_the_generator(tiny):
    models = build_models(model=tiny[0], generator=tiny[1])
    gen = models.generator
    expected = gen.sampling_params()  # what `titok sample` and its FID job use
    assert sampling_settings(gen) == expected
    assert {f.name for f in fields(expected)} == set(gen.config.sampling_defaults())  # guidance_scale_pow included
    seen = []
    real = gen.generate

    def recording(classes, **kwargs):
        seen.append(kwargs)
        return real(classes, **kwargs)

    gen.generate = recording
    r = run_benchmark(device="cpu", batch_size=1, warmup=0, iters=1, tasks=("generate",), models=models)
    assert seen and all(kw["params"] == expected and set(kw) == {"params", "generator"} for kw in seen)
    assert r.sampling == expected and r.to_dict()["sampling"] == asdict(expected)


def test_time_budget_chooses_the_number_of_calls(tiny):
    events = []
    short = run_benchmark(model=tiny[0], device="cpu", batch_size=1, warmup=1, iters=5, seconds=1e-6,
                          tasks=("encode", "decode"), on_progress=events.append)  # fmt: skip
    assert all(len(row.wall_s) == 1 for row in short.tasks.values())  # at least one call
    long = run_benchmark(model=tiny[0], device="cpu", batch_size=1, warmup=0, iters=3, seconds=1e6,
                         tasks=("encode",))  # fmt: skip
    assert len(long.tasks["encode"].wall_s) == 3  # at most --iters
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["start", "models"]
    assert kinds[2:] == ["plan", "task-done", "plan", "task-done"]
    assert "threads" in events[0].message and "OMP_NUM_THREADS" in events[0].message
    plan = events[2]
    assert plan.task == "encode" and plan.seconds == pytest.approx(short.tasks["encode"].first_call_s)
    assert "first call" in plan.message and "1 timed call" in plan.message


def test_threads_are_recorded(tiny, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    d = run_benchmark(model=tiny[0], device="cpu", batch_size=1, warmup=0, iters=1, tasks=("encode",)).to_dict()
    assert d["threads"] == torch.get_num_threads() and d["omp_num_threads"] == "2"


def test_noisy_and_over_peak_rows_are_flagged():
    def row(wall, peak=None):
        return TaskResult("decode", 2, 32, tuple(wall), tuple(wall), wall[0], 10.0, 2, True, 50.0, peak)

    quiet = row([1.0, 1.0 * NOISY_SPREAD * 0.99])
    assert task_notes(quiet) == []
    (noisy,) = task_notes(row([1.0, 1.0 * NOISY_SPREAD * 1.01]))
    assert noisy.kind == "noisy" and noisy.task == "decode" and "1.31x" in noisy.message
    over = row([1.0], peak=50.0)  # 50 GFLOP/image x 2 images/s = 100 GFLOP/s against a 50 GFLOP/s peak
    (n,) = task_notes(over)
    assert n.kind == "peak-over-100" and "200%" in n.message
    assert over.to_dict()["share_of_matmul_peak"] == pytest.approx(2.0)


def test_bad_arguments(tiny):
    with pytest.raises(UsageError):
        run_benchmark(model=tiny[0], device="cpu", tasks=("train",))
    with pytest.raises(UsageError):
        run_benchmark(model=tiny[0], device="cpu", dtype="int3")
    with pytest.raises(UsageError):
        run_benchmark(model=tiny[0], device="cpu", seconds=0)


def test_matmul_peak_is_positive():
    assert matmul_peak_gflops("cpu", torch.float32, n=256, seconds=0.05) > 0


def test_cpu_allocator_is_recorded(tiny):
    r = run_benchmark(model=tiny[0], device="cpu", batch_size=1, warmup=0, iters=1, tasks=("encode",))
    assert isinstance(r.cpu_allocator, str) and r.cpu_allocator


def test_flops_are_nominal(tiny):
    """The sub-pixel upsampling does less work; the FLOP count stays the official algorithm's."""
    from torch.utils.flop_counter import FlopCounterMode

    from titok_cli.models.pixel_decoder import PixelDecoder

    dec = PixelDecoder(32)
    codes = torch.randn(1, 256, 2, 2)
    with torch.enable_grad(), FlopCounterMode(display=False) as plain:
        dec(codes)
    with torch.inference_mode(), FlopCounterMode(display=False) as fast:
        dec(codes)
    assert fast.get_total_flops() < plain.get_total_flops()
    tok = build_models(model=tiny[0], with_generator=False).tokenizer
    with torch.enable_grad(), FlopCounterMode(display=False, custom_mapping=flop_mapping()) as whole:
        tok.decode_latents(tok.tokens_to_latents(torch.zeros(1, tok.num_tokens, dtype=torch.long)))
    assert count_flops(tok, None, ("decode",))["decode"] == whole.get_total_flops()
