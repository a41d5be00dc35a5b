"""Throughput of encode, decode and sample as a library function: `run_benchmark` returns a dict.

Nothing here prints; `titok bench` and `benchmarks/run.py` format the result. Models come from
the registry (real weights when they are already in the local Hugging Face cache, random
weights of the same architecture otherwise, never a download), a local folder or a Hub id.

Timing: `warmup` untimed calls, then `iters` timed calls; the median call is reported.
On the CPU each task also reports its process CPU time and "images_per_s_from_cpu_time"
(batch x threads / CPU seconds), which other processes' load does not distort.
Peak memory: on CUDA `torch.cuda.max_memory_allocated` (reset before each task); on the CPU
the process's resident-set high-water mark (VmHWM in /proc/self/status, reset before each task
through /proc/self/clear_refs), which includes the model weights. "peak_memory_kind" says which.
FLOPs are counted once per model and task with torch's FlopCounterMode on meta-device copies
(no real compute), so "gflops_per_s" is achieved multiply-add work (2 FLOPs each) per second.
They are nominal: the official algorithm's work. Where our inference path does less arithmetic for
the same result (the pixel decoder's sub-pixel upsampling convolutions) the rate is "effective".
With `measure_peak` the device's GEMM peak for the dtype is measured first (`matmul_peaks`: on
the CPU in float32 both ATen's mm and oneDNN, the faster counts) and each task reports its
"share_of_matmul_peak". With `agreement_images` (a tensor, or a folder of images) a half-precision
run also reports how its tokens and decodes agree with a float32 copy (`precision_agreement`).
CPU allocator: benchmarks/run.py and the `titok` command call `tune_cpu_allocator()`; `run_benchmark` only
when asked (`tune_allocator=True`); other processes get the same speed only when they call it too.
"""

from __future__ import annotations

import copy
import math
import os
import re
import statistics
import time
from dataclasses import replace
from typing import Any, Callable, Sequence

import torch

from . import registry
from .allocator import allocator_state, tune_cpu_allocator
from .devices import parse_dtype, pick_device
from .errors import UsageError
from .models.generator import TiTokGenerator
from .models.tokenizer import TiTokTokenizer

TASKS = ("encode", "decode", "sample")
EXTRA_TASKS = ("generate",)  # generator tokens only, no decoding (the official generator figures)
DEFAULT_MODELS = {256: "titok-l32", 512: "titok-l64-512"}


# -- models ------------------------------------------------------------------------------


def _in_hf_cache(repo: str, revision: str | None = None) -> bool:
    """True when config.json and the weights of `repo` are in the local Hub cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return False
    cfg = try_to_load_from_cache(repo, "config.json", revision=revision)
    weights = [try_to_load_from_cache(repo, f, revision=revision) for f in ("model.safetensors", "pytorch_model.bin")]
    return isinstance(cfg, str) and any(isinstance(w, str) for w in weights)


def _registry_tokenizer(entry: registry.ModelEntry) -> tuple[TiTokTokenizer, str]:
    if not entry.architecture_only and entry.repo and _in_hf_cache(entry.repo, entry.revision):
        from .loading import load_tokenizer

        return load_tokenizer(entry.name, device="cpu"), "pretrained"
    return TiTokTokenizer.from_config(entry.config), "random"


def _registry_generator(entry: registry.ModelEntry) -> tuple[TiTokGenerator, str]:
    if not entry.architecture_only and entry.repo and _in_hf_cache(entry.repo, entry.revision):
        from .loading import load_generator

        return load_generator(entry.name, device="cpu"), "pretrained"
    cfg = replace(entry.generator_config, **entry.sampling)  # the registry's sampling defaults
    return TiTokGenerator.from_config(cfg), "random"


def build_models(
    resolution: int = 256, model: str | None = None, generator: str | None = None, with_generator: bool = True
) -> tuple[TiTokTokenizer, TiTokGenerator | None, dict[str, Any]]:
    """(tokenizer, generator or None, info) on the CPU in float32, as `run_benchmark` uses them."""
    notes: list[str] = []
    name = model or DEFAULT_MODELS.get(resolution)
    if name is None:
        raise UsageError(f"no default model at resolution {resolution}; pass a model (defaults: {DEFAULT_MODELS})")
    entry = registry.find(name) if not os.path.exists(name) else None
    gen: TiTokGenerator | None = None
    gen_weights = None
    gen_name = None
    if entry is not None:
        tok_entry = entry if entry.kind == "tokenizer" else registry.find(entry.tokenizer or "")
        if tok_entry is None:
            raise UsageError(f"{entry.name} is a generator without a paired tokenizer")
        tok, tok_weights = _registry_tokenizer(tok_entry)
        tok_name = tok_entry.name
        if tok_entry.architecture_only:
            notes.append(f"{tok_name} is architecture only (no public weights): random weights")
        elif tok_weights == "random":
            notes.append(f"{tok_entry.repo} is not in the local Hugging Face cache: random weights")
        gen_entry = None
        if generator is None and with_generator:
            gen_entry = entry if entry.kind == "generator" else registry.find(tok_entry.generator or "")
        if gen_entry is not None:
            gen, gen_weights = _registry_generator(gen_entry)
            gen_name = gen_entry.name
            if gen_entry.architecture_only:
                notes.append(f"{gen_name} is architecture only: random weights")
            elif gen_weights == "random":
                notes.append(f"{gen_entry.repo} is not in the local Hugging Face cache: random weights")
    else:
        from .loading import load_tokenizer

        tok, tok_weights, tok_name = load_tokenizer(name, device="cpu"), "pretrained", name
    if generator is not None and with_generator:
        gen_entry = registry.find(generator) if not os.path.exists(generator) else None
        if gen_entry is not None:
            if gen_entry.kind != "generator":
                gen_entry = registry.get(gen_entry.generator or generator)
            gen, gen_weights = _registry_generator(gen_entry)
            gen_name = gen_entry.name
        else:
            from .loading import load_generator

            gen, gen_weights, gen_name = load_generator(generator, device="cpu"), "pretrained", generator
    if gen is not None and (gen.codebook_size != tok.codebook_size or gen.num_tokens != tok.num_tokens):
        notes.append(
            f"generator {gen_name} makes {gen.num_tokens} ids of {gen.codebook_size} codes but the tokenizer "
            f"takes {tok.num_tokens} of {tok.codebook_size}: sample not measured"
        )
        gen = None
    if with_generator and gen is None and not any("generator" in n for n in notes):
        notes.append(f"no generator paired with {tok_name}: sample not measured")
    if tok.image_size != resolution:
        notes.append(f"{tok_name} works at {tok.image_size}x{tok.image_size}, not the requested {resolution}")
    weights = "pretrained" if tok_weights == "pretrained" and gen_weights in (None, "pretrained") else "random"
    info = {
        "tokenizer": {"name": tok_name, "num_parameters": _count(tok), "weights": tok_weights},
        "generator": None if gen is None else {"name": gen_name, "num_parameters": _count(gen), "weights": gen_weights},
        "weights": weights,
        "notes": notes,
    }
    return tok, gen, info


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- measuring -----------------------------------------------------------------------------




def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _vm_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            m = re.search(rf"^{field}:\s+(\d+)\s+kB", fh.read(), re.MULTILINE)
        return int(m.group(1)) if m else None
    except OSError:
        return None


class _PeakMemory:
    """Peak memory of one task: CUDA allocator peak, or the process RSS high-water mark."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            self.kind = "cuda max_memory_allocated"
        elif _vm_kib("VmHWM") is not None:
            self.kind = "process peak RSS (VmHWM, reset per task; includes weights)"
        else:
            import resource  # noqa: F401 - only the availability matters

            self.kind = "process peak RSS (ru_maxrss since start; not resettable here)"

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
                fh.write("5")  # resets the resident-set high-water mark of this process
        except OSError:
            pass

    def peak_mb(self) -> float | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.device.type == "mps":
            return None
        hwm = _vm_kib("VmHWM")
        if hwm is not None:
            return hwm / 1024
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time(fn: Callable[[], Any], device: torch.device, warmup: int, iters: int) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds of each timed call."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times, cpu = [], []
    for _ in range(max(1, iters)):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return times, cpu


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    b, h, n, d = query_shape
    m = key_shape[-2]
    return 2 * b * h * n * m * d + 2 * b * h * n * m * value_shape[-1]


def _flop_mapping() -> dict:
    ops = torch.ops.aten
    mapping = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu",):
        op = getattr(ops, name, None)
        if op is not None:
            mapping[op] = _sdpa_flops
    return mapping


def count_flops(tok: TiTokTokenizer, gen: TiTokGenerator | None, tasks: Sequence[str]) -> dict[str, float | None]:
    """Nominal FLOPs per image of each task (the official algorithm's work), counted on meta-device
    copies (batch 1, no real compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    out: dict[str, float | None] = {}
    try:
        with torch.device("meta"):
            mtok = TiTokTokenizer(tok.config)
            mgen = type(gen)(gen.config) if gen is not None else None
        for m in (mtok, mgen):
            if m is not None:
                m.requires_grad_(False)  # FlopCounterMode's module hooks trip over inference tensors
    except Exception:  # noqa: BLE001 - FLOPs are optional extras
        return {t: None for t in tasks}
    s, k = tok.image_size, tok.num_tokens
    c = tok.config.token_size

    def latents() -> torch.Tensor:
        if tok.is_vae:
            return torch.zeros(1, c, 1, k, device="meta")
        return mtok.quantize.lookup(torch.zeros(1, k, dtype=torch.long, device="meta"))

    runs: dict[str, Callable[[], Any]] = {
        "encode": lambda: mtok.encode(torch.zeros(1, 3, s, s, device="meta")),
        "decode": lambda: mtok.decode_latents(latents()),
    }
    if mgen is not None:
        runs["generate"] = lambda: mgen.generate(torch.zeros(1, dtype=torch.long, device="meta"))
        runs["sample"] = lambda: (runs["generate"](), mtok.decode_latents(latents()))
    for task in tasks:
        if task not in runs:
            out[task] = None
            continue
        try:
            # Gradient mode on (parameters need none): layers then take their plain official form,
            # e.g. the pixel decoder's nearest x2 + 3x3 conv instead of the cheaper sub-pixel form,
            # so FLOPs are the official algorithm's work ("nominal"), comparable across versions.
            with torch.enable_grad(), FlopCounterMode(display=False, custom_mapping=_flop_mapping()) as fc:
                runs[task]()
            out[task] = float(fc.get_total_flops())
        except Exception:  # noqa: BLE001
            out[task] = None
    return out


def _compile(tok: TiTokTokenizer, gen: TiTokGenerator | None) -> None:
    """torch.compile the heavy submodules in place (state-dict keys unchanged)."""
    for module in (tok.encoder, tok.decoder, getattr(tok, "pixel_decoder", None)):
        if module is not None:
            module.compile()
    if gen is not None:
        for name in ("model",):
            if hasattr(gen, name):
                getattr(gen, name).compile()
        if not hasattr(gen, "model"):
            gen.compile()


def run_benchmark(
    resolution: int = 256,
    model: str | None = None,
    device: str = "auto",
    dtype: str = "float32",
    batch_size: int = 8,
    compile: bool = False,  # noqa: A002 - the CLI flag's name
    warmup: int = 1,
    iters: int = 3,
    tasks: Sequence[str] = TASKS,
    generator: str | None = None,
    seed: int = 0,
    tune_allocator: bool = False,
    measure_peak: bool = False,
    agreement_images: torch.Tensor | str | os.PathLike[str] | None = None,
    _models: tuple[TiTokTokenizer, TiTokGenerator | None, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Time encode / decode / sample for one configuration; returns a JSON-ready dict.

    `model`: registry name (default titok-l32 at 256, titok-l64-512 at 512), local folder or Hub
    id; `generator`: its generator when `model` is a folder or Hub id (registry tokenizers bring
    their paired generator). Registry models whose weights are not in the local Hugging Face
    cache, and the architecture-only presets, run with random weights ("weights": "random").
    Sample = generator tokens with the registry's sampling defaults + decoding to pixels.
    On the CPU `tune_allocator` applies `tune_cpu_allocator()` first (process-wide, so off by
    default; benchmarks/run.py applies it); "cpu_allocator" in the result says which was in effect.
    """
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in TASKS + EXTRA_TASKS]
    if unknown:
        raise UsageError(f"unknown task(s) {unknown}; choose from {TASKS + EXTRA_TASKS}")
    if batch_size < 1 or iters < 1 or warmup < 0:
        raise UsageError("batch_size and iters must be at least 1, warmup at least 0")
    dev = pick_device(device)
    torch_dtype = parse_dtype(dtype)
    if dev.type == "cpu" and tune_allocator:
        tune_cpu_allocator()
    cpu_allocator = allocator_state() if dev.type == "cpu" else "default"
    tok, gen, info = _models if _models is not None else build_models(
        resolution, model, generator, "sample" in tasks or "generate" in tasks
    )
    notes = list(info["notes"])
    flops = count_flops(tok, gen, tasks)
    tok32 = None
    if agreement_images is not None and not isinstance(agreement_images, torch.Tensor):
        agreement_images = _load_folder(agreement_images, tok.image_size)
    if agreement_images is not None and torch_dtype != torch.float32:
        tok32 = copy.deepcopy(tok).to(device=dev, dtype=torch.float32)  # before the conversion below
    tok.to(device=dev, dtype=torch_dtype)
    if gen is not None:
        gen.to(device=dev, dtype=torch_dtype)
    if compile:
        _compile(tok, gen)
        notes.append("torch.compile: compile time falls in the warmup calls")
        if dev.type == "cpu":
            notes.append("torch.compile on the CPU measured slower than eager here (its GEMMs skip the oneDNN "
                         "route; benchmarks/README.md)")  # fmt: skip
    b, s, k = batch_size, tok.image_size, tok.num_tokens
    rng = torch.Generator(device="cpu").manual_seed(seed)
    images = torch.rand(b, 3, s, s, generator=rng).to(dev)
    if tok.is_vae:
        codes = torch.randn(b, tok.config.token_size, k, generator=rng).to(dev)
    else:
        codes = torch.randint(0, int(tok.codebook_size or 1), (b, k), generator=rng).to(dev)
    num_classes = gen.config.condition_num_classes if gen is not None else 1
    classes = torch.randint(0, num_classes, (b,), generator=rng).to(dev)
    sample_rng = torch.Generator(device=dev)

    def generate() -> torch.Tensor:
        sample_rng.manual_seed(seed)
        return gen.generate(classes, generator=sample_rng)  # type: ignore[union-attr]

    def sample() -> torch.Tensor:
        return tok.decode(generate())

    runs: dict[str, Callable[[], Any]] = {"encode": lambda: tok.encode(images), "decode": lambda: tok.decode(codes)}
    if gen is not None:
        runs["sample"] = sample
        runs["generate"] = generate
    memory = _PeakMemory(dev)
    result: dict[str, Any] = {
        "device": str(dev),
        "device_name": _device_name(dev),
        "dtype": str(torch_dtype).replace("torch.", ""),
        "resolution": s,
        "batch_size": b,
        "compile": bool(compile),
        "weights": info["weights"],
        "note": "",
        "tokenizer": info["tokenizer"],
        "generator": info["generator"],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "timing": {"warmup": warmup, "iters": iters, "statistic": "median"},
        "peak_memory_kind": memory.kind,
        "cpu_allocator": cpu_allocator,
    }
    if gen is not None:
        c = gen.config
        result["sampling"] = {
            "num_steps": c.num_steps, "guidance_scale": c.guidance_scale, "guidance_decay": c.guidance_decay,
            "randomize_temperature": c.randomize_temperature,
            "softmax_temperature_annealing": c.softmax_temperature_annealing,
        }  # fmt: skip
    peak = None
    if measure_peak:
        routes = matmul_peaks(dev, torch_dtype, seconds=1.0)
        peak = max(routes.values())
        result["matmul_peak_gflops"] = peak
        result["matmul_peak_gflops_by_route"] = routes
    for task in tasks:
        if task not in runs:
            result[task] = None
            continue
        memory.reset()
        times, cpu_times = _time(runs[task], dev, warmup, iters)
        latency = statistics.median(times)
        per_s = b / latency
        entry: dict[str, Any] = {
            "images_per_s": per_s,
            "images_per_s_best": b / min(times),  # the fastest call: least disturbed by other load
            "tokens_per_s": per_s * k,
            "latency_ms": latency * 1e3,
            "latency_ms_all": [t * 1e3 for t in times],
            "peak_memory_mb": memory.peak_mb(),
            "cpu_time_ms": statistics.median(cpu_times) * 1e3,
        }
        if dev.type == "cpu":
            # Throughput had the process owned its threads' cores: immune to other processes' load,
            # pessimistic by any spin-waiting the thread pool does (counted as CPU time).
            entry["images_per_s_from_cpu_time"] = b * torch.get_num_threads() / max(statistics.median(cpu_times), 1e-9)
        f = flops.get(task)
        if f:
            entry["gflop_per_image"] = f / 1e9
            entry["gflops_per_s"] = f * per_s / 1e9
            if peak:
                entry["share_of_matmul_peak"] = entry["gflops_per_s"] / peak
        result[task] = entry
    if agreement_images is not None:
        if tok32 is None:
            notes.append("agreement with float32: not measured, this run is float32")
        else:
            result["agreement_with_float32"] = precision_agreement(tok32, tok, agreement_images.to(dev), b)
            del tok32
    if info["weights"] == "random":
        notes.append("random weights: speed is representative, outputs are not")
    result["note"] = "; ".join(notes)
    return result


def _load_folder(folder: str | os.PathLike[str], size: int) -> torch.Tensor:
    """Every image under `folder` (or one file), center-cropped to `size`, as float32 [N,3,S,S]."""
    from .preprocess import iter_image_files, load_image, to_tensor

    files = list(iter_image_files([folder]))
    if not files:
        raise UsageError(f"{folder}: no images to compare against float32")
    return to_tensor([load_image(path, size) for path, _ in files])


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB between two pixel tensors in [0, 1] (clamped first, as they are saved)."""
    mse = ((a.float().clamp(0, 1) - b.float().clamp(0, 1)) ** 2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def precision_agreement(
    tok32: TiTokTokenizer, tok_half: TiTokTokenizer, images: torch.Tensor, chunk: int = 8
) -> dict[str, Any]:
    """A half-precision tokenizer against its float32 copy on real images [N,3,S,S].

    VQ: share of identical token ids; VAE: max relative error of the latents. Both: PSNR between
    the two decodes of the float32 tokens (so only decoding differs), and NaN count.
    """
    a, b, pa, pb = [], [], [], []
    for i in range(0, images.shape[0], chunk):
        xi = images[i : i + chunk]
        ca, cb = tok32.encode(xi), tok_half.encode(xi)
        a.append(ca.cpu()), b.append(cb.cpu())
        pa.append(tok32.decode(ca).cpu()), pb.append(tok_half.decode(ca).cpu())
    ca, cb, xa, xb = torch.cat(a), torch.cat(b), torch.cat(pa), torch.cat(pb)
    out: dict[str, Any] = {"images": int(images.shape[0])}
    if tok32.is_vae:
        out["latent_max_rel_error"] = ((ca - cb).abs().max() / ca.abs().max()).item()
    else:
        out["token_agreement"] = (ca == cb).float().mean().item()
    out["decode_psnr_db"] = psnr(xb, xa)
    out["nan_count"] = int(xb.isnan().sum().item() + (cb.isnan().sum().item() if cb.is_floating_point() else 0))
    return out


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    if dev.type == "cpu":
        return cpu_model()
    return dev.type


def cpu_model() -> str:
    """The CPU model string from /proc/cpuinfo (or platform.processor())."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown cpu"


def gemm_backends(device: torch.device, dtype: torch.dtype, n: int) -> dict[str, Callable[[], Any]]:
    """n x n x n GEMMs by every route our models can take on this device, as zero-argument calls.

    On the CPU in float32 that is ATen's mm (MKL) and oneDNN (the route of our linear layers,
    models/layers.py); they differ by 2x on AMD CPUs, so a peak from `torch.mm` alone would be
    the slower library's, not the machine's. Elsewhere ATen's mm is the only route.
    """
    from .models import layers

    a = torch.randn(n, n, device=device, dtype=dtype)
    bmat = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    fns: dict[str, Callable[[], Any]] = {"aten_mm": lambda: torch.mm(a, bmat, out=out)}
    if device.type == "cpu" and dtype == torch.float32 and layers._ONEDNN_LINEAR:

        def onednn() -> torch.Tensor:
            with torch.no_grad():
                return layers.linear(a, bmat, None)  # a @ bmat.T: the same 2 n^3 FLOPs

        fns["onednn_linear"] = onednn
    return fns


def matmul_peaks(
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, n: int | None = None, seconds: float = 2.0
) -> dict[str, float]:
    """Best GFLOP/s (2*n^3 FLOPs per n x n matmul) of each GEMM route, over repeated runs."""
    dev = torch.device(device)
    n = n or (8192 if dev.type == "cuda" else 2048)
    peaks = {}
    for name, fn in gemm_backends(dev, dtype, n).items():
        fn()
        _sync(dev)
        best = math.inf
        deadline = time.perf_counter() + seconds
        runs = 0
        while runs < 3 or time.perf_counter() < deadline:
            start = time.perf_counter()
            fn()
            _sync(dev)
            best = min(best, time.perf_counter() - start)
            runs += 1
        peaks[name] = 2 * n**3 / best / 1e9
    return peaks


def matmul_peak_gflops(
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, n: int | None = None, seconds: float = 2.0
) -> float:
    """The device's measured GEMM peak: the fastest route of `matmul_peaks`."""
    return max(matmul_peaks(device, dtype, n, seconds).values())


__all__ = ["run_benchmark", "tune_cpu_allocator", "build_models", "count_flops", "matmul_peak_gflops", "matmul_peaks",
           "gemm_backends", "precision_agreement", "psnr", "cpu_model", "TASKS"]
