"""Throughput of encode, decode and sample as a library function: `run_benchmark` returns a `BenchResult`.

Nothing here prints; `titok bench` and `benchmarks/run.py` format the result, and a caller's
`on_progress` callback hears each step as it happens (`BenchEvent`). Models: `bench_models`
(real weights when already local, random weights of the same architecture otherwise, never a
download). Measuring helpers: `perf`; quality figures: `metrics`.

Timing: `warmup` untimed calls, then up to `iters` timed calls, as many as fit `seconds` judged
from the first call (timeit's autorange idea; see `perf.time_calls`); min, median and max are
reported, and a spread above `NOISY_SPREAD` is flagged. On the CPU each task also reports
"images_per_s_from_cpu_time" (batch x threads / CPU seconds), which other processes' load does
not distort. Peak memory: on CUDA `torch.cuda.max_memory_allocated` (reset per task); on the CPU
the process's resident-set high-water mark (reset per task), which includes the model weights.
FLOPs are nominal (the official algorithm's work, `perf.count_flops`); where our path does less
arithmetic for the same result (the pixel decoder's sub-pixel convolutions) the rate is
"effective" and may exceed the measured GEMM peak (flagged "peak-over-100").
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any, Callable, Sequence

import torch

from .allocator import allocator_state, tune_cpu_allocator
from .bench_models import BenchModels, build_models, default_model
from .bench_result import NOISY_SPREAD, BenchEvent, BenchResult, Note, TaskResult
from .devices import parse_dtype, pick_device
from .errors import UsageError
from .metrics import precision_agreement
from .models.generator import TiTokGenerator
from .models.tokenizer import TiTokTokenizer
from .perf import PeakMemory, count_flops, device_name, matmul_peaks, thread_settings, time_calls
from .sampling_params import SamplingParams

TASKS = ("encode", "decode", "sample", "generate")  # "generate": generator tokens only, no decoding
DEFAULT_TASKS = ("encode", "decode", "sample")
GENERATOR_TASKS = ("sample", "generate")


def default_batch_size(device: torch.device, image_size: int) -> int:
    """Full batch (8) on accelerators; on the CPU one that a laptop finishes in a few minutes.

    At 512x512 a CPU call of batch 8 takes minutes and 12 GB (issue 9): 1 there, 2 below.
    """
    if device.type != "cpu":
        return 8
    return 2 if image_size <= 256 else 1


def sampling_settings(gen: TiTokGenerator) -> SamplingParams:
    """The settings `titok sample` and its FID job use for `gen` with no flags (`gen.sampling_params()`)."""
    return gen.sampling_params()


def task_notes(row: TaskResult) -> list[Note]:
    """What one task's figures call for: a noisy spread of calls, a share of the GEMM peak above 100%."""
    notes = []
    if row.spread > NOISY_SPREAD:
        notes.append(Note("noisy", f"{row.task}: the slowest call took {row.spread:.2f}x the fastest (a busy "
                          "machine?): compare the best calls, or rerun", row.task))  # fmt: skip
    share = row.share_of_matmul_peak
    if share is not None and share > 1.0:
        notes.append(Note("peak-over-100", f"{row.task} reaches {share:.0%} of the measured GEMM peak: its FLOPs "
                          "are nominal (our path may do less work), or the peak run was disturbed", row.task))
    return notes


def _compile(tok: TiTokTokenizer, gen: TiTokGenerator | None) -> None:
    """torch.compile the heavy submodules in place (state-dict keys unchanged)."""
    for module in (tok.encoder, tok.decoder, getattr(tok, "pixel_decoder", None)):
        if module is not None:
            module.compile()
    if gen is not None:
        (gen.model if hasattr(gen, "model") else gen).compile()


def _load_folder(folder: str | os.PathLike[str], size: int) -> torch.Tensor:
    """Every image under `folder` (or one file), center-cropped to `size`, as float32 (N, 3, S, S)."""
    from .preprocess import iter_image_files, load_image, to_tensor

    files = list(iter_image_files([folder]))
    if not files:
        raise UsageError(f"{folder}: no images to compare against float32")
    return to_tensor([load_image(path, size) for path, _ in files])


def _check(
    tasks: Sequence[str] | None, batch_size: int | None, warmup: int, iters: int, seconds: float | None
) -> tuple[str, ...]:
    chosen = tuple(tasks) if tasks is not None else DEFAULT_TASKS
    unknown = [t for t in chosen if t not in TASKS]
    if unknown or not chosen:
        raise UsageError(f"unknown task(s) {unknown}; choose from {', '.join(TASKS)}")
    if (batch_size is not None and batch_size < 1) or iters < 1 or warmup < 0:
        raise UsageError("batch_size and iters must be at least 1, warmup at least 0")
    if seconds is not None and not seconds > 0:
        raise UsageError(f"the time budget must be above 0 seconds (got {seconds})")
    return chosen


def _runs(tok: TiTokTokenizer, gen: TiTokGenerator | None, sampling: SamplingParams | None, b: int,
          dev: torch.device, seed: int) -> dict[str, Callable[[], Any]]:  # fmt: skip
    """Zero-argument calls per task on fixed random inputs of batch `b`."""
    s, k = tok.image_size, tok.num_tokens
    rng = torch.Generator(device="cpu").manual_seed(seed)
    images = torch.rand(b, 3, s, s, generator=rng).to(dev)  # (B, 3, S, S)
    if tok.is_vae:
        codes = torch.randn(b, tok.config.token_size, k, generator=rng).to(dev)  # (B, C, K)
    else:
        codes = torch.randint(0, int(tok.codebook_size or 1), (b, k), generator=rng).to(dev)  # (B, K)
    runs: dict[str, Callable[[], Any]] = {"encode": lambda: tok.encode(images), "decode": lambda: tok.decode(codes)}
    if gen is not None and sampling is not None:
        classes = torch.randint(0, gen.config.condition_num_classes, (b,), generator=rng).to(dev)  # (B,)
        sample_rng = torch.Generator(device=dev)

        def generate() -> torch.Tensor:
            sample_rng.manual_seed(seed)
            return gen.generate(classes, params=sampling, generator=sample_rng)  # (B, K)

        runs["generate"] = generate
        runs["sample"] = lambda: tok.decode(generate())
    return runs


def run_benchmark(
    resolution: int | None = None,
    model: str | None = None,
    device: str = "auto",
    dtype: str = "float32",
    batch_size: int | None = None,
    compile: bool = False,  # noqa: A002 - the CLI flag's name
    warmup: int = 1,
    iters: int = 3,
    seconds: float | None = None,
    tasks: Sequence[str] | None = None,
    generator: str | None = None,
    seed: int = 0,
    tune_allocator: bool = False,
    measure_peak: bool = False,
    agreement_images: torch.Tensor | str | os.PathLike[str] | None = None,
    models: BenchModels | None = None,
    on_progress: Callable[[BenchEvent], None] | None = None,
) -> BenchResult:
    """Time encode / decode / sample (/ generate) for one configuration.

    `model`: registry name (default titok-l32 at 256, titok-l64-512 at 512), local folder or Hub
    id; a `resolution` that differs from the model's own size gets a "resolution-from-model"
    note. `tasks`: default encode, decode and sample (sample skipped with a note when there is
    no generator); asked for explicitly, sample or generate without a generator is a UsageError.
    `batch_size`: default `default_batch_size`. `seconds`: time budget of each task's timed calls
    (None: always `iters`). `models`: prebuilt by `build_models` (benchmarks reuse them across
    runs). On the CPU `tune_allocator` applies `tune_cpu_allocator()` first (process-wide, so
    off by default); "cpu_allocator" says which allocator was in effect.
    """
    chosen = _check(tasks, batch_size, warmup, iters, seconds)
    dev = pick_device(device)
    torch_dtype = parse_dtype(dtype)
    threads, omp = thread_settings()
    emit = on_progress or (lambda event: None)
    budget = f"up to {iters} timed calls" + (f" within {seconds:g} s" if seconds else "")
    emit(BenchEvent("start", f"bench {model or default_model(resolution)}: {str(torch_dtype)[6:]} on {dev} "
                    f"({device_name(dev)}), {threads} threads (OMP_NUM_THREADS={omp or 'unset'}); "
                    f"per task {warmup} warm-up, {budget}"))  # fmt: skip
    if dev.type == "cpu" and tune_allocator:
        tune_cpu_allocator()
    needs_gen = any(t in GENERATOR_TASKS for t in chosen)
    if models is None:
        models = build_models(resolution, model, generator, with_generator=needs_gen)
    tok, gen = models.tokenizer, models.generator
    if gen is None and tasks is not None and needs_gen:
        reason = next((n.message for n in models.notes if n.kind in ("generator-mismatch", "no-generator")), "")
        asked = "/".join(t for t in chosen if t in GENERATOR_TASKS)
        raise UsageError(f"task {asked} needs a generator ({reason.rsplit(':', 1)[0]}); pass one with --generator")
    notes = [n for n in models.notes if not (n.kind == "no-generator" and not needs_gen)]
    b = batch_size or default_batch_size(dev, tok.image_size)
    sampling = sampling_settings(gen) if gen is not None else None
    flops = count_flops(tok, gen, chosen, sampling)
    if agreement_images is not None and not isinstance(agreement_images, torch.Tensor):
        agreement_images = _load_folder(agreement_images, tok.image_size)
    tok32 = None
    if agreement_images is not None and torch_dtype != torch.float32:
        tok32 = copy.deepcopy(tok).to(device=dev, dtype=torch.float32)  # before the conversion below
    tok.to(device=dev, dtype=torch_dtype)
    if gen is not None:
        gen.to(device=dev, dtype=torch_dtype)
    if compile:
        _compile(tok, gen)
        notes.append(Note("compile-warmup", "torch.compile: compile time falls in the warm-up calls"))
        if dev.type == "cpu":
            notes.append(Note("compile-slow-on-cpu", "torch.compile on the CPU measured slower than eager here "
                              "(its GEMMs skip the oneDNN route; benchmarks/README.md)"))  # fmt: skip
    memory = PeakMemory(dev)
    result = BenchResult(
        device=str(dev), device_name=device_name(dev), dtype=str(torch_dtype).replace("torch.", ""),
        resolution=tok.image_size, batch_size=b, compile=bool(compile), tokenizer=models.tokenizer_info,
        generator=models.generator_info, torch_version=torch.__version__, threads=threads, omp_num_threads=omp,
        warmup=warmup, max_iters=iters, seconds=seconds, peak_memory_kind=memory.kind,
        cpu_allocator=allocator_state() if dev.type == "cpu" else "default", requested_tasks=chosen,
        sampling=sampling, notes=notes,
    )  # fmt: skip
    described = [f"{role} {i.name} ({i.num_parameters / 1e6:.3g}M parameters, {i.weights} weights)"
                 for role, i in (("tokenizer", models.tokenizer_info), ("generator", models.generator_info)) if i]
    emit(BenchEvent("models", f"{', '.join(described)}; {tok.image_size}x{tok.image_size} pixels, batch {b}"))
    if measure_peak:
        routes = matmul_peaks(dev, torch_dtype, seconds=1.0)
        result.matmul_peak_gflops, result.matmul_peak_gflops_by_route = max(routes.values()), routes
        emit(BenchEvent("gemm-peak", f"GEMM peak {result.matmul_peak_gflops:,.0f} GFLOP/s ({result.dtype})"))
    runs = _runs(tok, gen, sampling, b, dev, seed)
    for task in chosen:
        if task not in runs:
            continue
        _measure(task, runs[task], result, tok.num_tokens, memory, dev, flops.get(task), emit)
    if agreement_images is not None:
        if tok32 is None:
            result.notes.append(Note("agreement-skipped", "agreement with float32: not measured, this run is float32"))
        else:
            result.agreement_with_float32 = precision_agreement(tok32, tok, agreement_images.to(dev), b)
            del tok32
    if result.weights == "random":
        result.notes.append(Note("random-weights", "random weights: speed is representative, outputs are not"))
    return result


def _secs(seconds: float) -> str:
    return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"


def _measure(task: str, fn: Callable[[], Any], result: BenchResult, num_tokens: int, memory: PeakMemory,
             dev: torch.device, flops: float | None, emit: Callable[[BenchEvent], None]) -> None:  # fmt: skip
    """Time one task into `result.tasks[task]`, telling `emit` the plan and the outcome."""

    def on_plan(first: float, calls: int) -> None:
        emit(BenchEvent("plan", f"{task}: first call {_secs(first)}; {calls} timed call{'s' * (calls > 1)}, "
                        f"about {_secs(first * calls)}", task, first * calls))  # fmt: skip

    started = time.perf_counter()
    memory.reset()
    times = time_calls(fn, dev, result.warmup, result.max_iters, result.seconds, on_plan)
    row = TaskResult(
        task=task, batch_size=result.batch_size, num_tokens=num_tokens, wall_s=times.wall,
        cpu_s=times.cpu, first_call_s=times.first_call_s, peak_memory_mb=memory.peak_mb(),
        threads=result.threads, on_cpu=dev.type == "cpu", gflop_per_image=flops / 1e9 if flops else None,
        matmul_peak_gflops=result.matmul_peak_gflops,
    )  # fmt: skip
    result.tasks[task] = row
    result.notes += task_notes(row)
    emit(BenchEvent("task-done", f"{task}: {row.images_per_s:.3g} images/s (median of {len(row.wall_s)})",
                    task, time.perf_counter() - started))  # fmt: skip


__all__ = ["DEFAULT_TASKS", "TASKS", "default_batch_size", "run_benchmark", "sampling_settings",
           "task_notes"]
