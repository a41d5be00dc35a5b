"""Performance measuring helpers: timing with a budget, peak memory, FLOP counts, GEMM peak, CPU facts.

Nothing here knows about tasks or tables; `titok_cli.bench` combines these into a benchmark.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

if TYPE_CHECKING:  # pragma: no cover
    from .models.generator import TiTokGenerator
    from .models.tokenizer import TiTokTokenizer
    from .sampling_params import SamplingParams


# -- timing ------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    """Wait for queued device work, so a wall-clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@dataclass(frozen=True)
class CallTimes:
    """Wall-clock and process CPU seconds of each timed call, and the first call's wall time."""

    wall: tuple[float, ...]
    cpu: tuple[float, ...]
    first_call_s: float  # the first call of all (warm-up if any): what the plan was made from


def plan_calls(first_call_s: float, seconds: float | None, max_calls: int) -> int:
    """How many timed calls fit `seconds` when one takes `first_call_s` (timeit's autorange idea).

    At least 1 and at most `max_calls`; without a budget, `max_calls`.
    """
    if seconds is None:
        return max(1, max_calls)
    return max(1, min(max_calls, int(seconds / max(first_call_s, 1e-9))))


def time_calls(
    fn: Callable[[], Any],
    device: torch.device,
    warmup: int = 1,
    iters: int = 3,
    seconds: float | None = None,
    on_plan: Callable[[float, int], None] | None = None,
) -> CallTimes:
    """Run `fn` `warmup` times untimed, then time up to `iters` calls that fit `seconds`.

    The number of timed calls is chosen from the first call (the last warm-up, or the first timed
    call when `warmup` is 0, which then counts): see `plan_calls`. `on_plan(first_s, calls)`
    hears the plan before the timed calls start, so a caller can say how long it will take.
    """

    def one() -> tuple[float, float]:
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        return time.perf_counter() - start, time.process_time() - start_cpu

    wall: list[float] = []
    cpu: list[float] = []
    first = math.nan
    for _ in range(warmup):
        first = one()[0]
    if warmup == 0:
        w, c = one()
        first = w
        wall.append(w)
        cpu.append(c)
    calls = plan_calls(first, seconds, iters)
    if on_plan is not None:
        on_plan(first, calls)
    while len(wall) < calls:
        w, c = one()
        wall.append(w)
        cpu.append(c)
    return CallTimes(tuple(wall), tuple(cpu), first)


# -- peak memory ---------------------------------------------------------------------------------


def _vm_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            m = re.search(rf"^{field}:\s+(\d+)\s+kB", fh.read(), re.MULTILINE)
        return int(m.group(1)) if m else None
    except OSError:
        return None


class PeakMemory:
    """Peak memory of one task: CUDA allocator peak, or the process RSS high-water mark."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            self.kind = "cuda max_memory_allocated"
        elif _vm_kib("VmHWM") is not None:
            self.kind = "process peak RSS (VmHWM, reset per task; includes weights)"
        else:
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


# -- FLOPs -----------------------------------------------------------------------------------------


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    b, h, n, d = query_shape
    m = key_shape[-2]
    return 2 * b * h * n * m * d + 2 * b * h * n * m * value_shape[-1]


def flop_mapping() -> dict:
    """FlopCounterMode formulas for the attention kernels it does not count by itself."""
    ops = torch.ops.aten
    mapping = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu",):
        op = getattr(ops, name, None)
        if op is not None:
            mapping[op] = _sdpa_flops
    return mapping


def count_flops(
    tok: "TiTokTokenizer",
    gen: "TiTokGenerator | None",
    tasks: Sequence[str],
    sampling: "SamplingParams | None" = None,
) -> dict[str, float | None]:
    """Nominal FLOPs per image of each task (the official algorithm's work), counted on meta-device
    copies (batch 1, no real compute). `sampling`: the settings `generate` runs with (steps count)."""
    from torch.utils.flop_counter import FlopCounterMode

    from .models.tokenizer import TiTokTokenizer

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
    s, k, c = tok.image_size, tok.num_tokens, tok.config.token_size

    def latents() -> torch.Tensor:
        if tok.is_vae:
            return torch.zeros(1, c, 1, k, device="meta")  # (1, C, 1, K)
        return mtok.quantize.lookup(torch.zeros(1, k, dtype=torch.long, device="meta"))

    runs: dict[str, Callable[[], Any]] = {
        "encode": lambda: mtok.encode(torch.zeros(1, 3, s, s, device="meta")),
        "decode": lambda: mtok.decode_latents(latents()),
    }
    if mgen is not None:
        runs["generate"] = lambda: mgen.generate(torch.zeros(1, dtype=torch.long, device="meta"), params=sampling)
        runs["sample"] = lambda: (runs["generate"](), mtok.decode_latents(latents()))
    for task in tasks:
        if task not in runs:
            out[task] = None
            continue
        try:
            # Gradient mode on (parameters need none): layers then take their plain official form,
            # e.g. the pixel decoder's nearest x2 + 3x3 conv instead of the cheaper sub-pixel form,
            # so FLOPs are the official algorithm's work ("nominal"), comparable across versions.
            with torch.enable_grad(), FlopCounterMode(display=False, custom_mapping=flop_mapping()) as fc:
                runs[task]()
            out[task] = float(fc.get_total_flops())
        except Exception:  # noqa: BLE001
            out[task] = None
    return out


# -- GEMM peak -------------------------------------------------------------------------------------


def gemm_backends(device: torch.device, dtype: torch.dtype, n: int) -> dict[str, Callable[[], Any]]:
    """n x n x n GEMMs by every route our models can take on this device, as zero-argument calls.

    On the CPU in float32 that is ATen's mm (MKL) and oneDNN (the route of our linear layers,
    models/layers.py); they differ by 2x on AMD CPUs, so a peak from `torch.mm` alone would be
    the slower library's, not the machine's. Elsewhere ATen's mm is the only route.
    """
    from . import runtime
    from .models import layers

    a = torch.randn(n, n, device=device, dtype=dtype)
    bmat = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    fns: dict[str, Callable[[], Any]] = {"aten_mm": lambda: torch.mm(a, bmat, out=out)}
    if device.type == "cpu" and dtype == torch.float32 and runtime.onednn_linear():

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
        sync(dev)
        best = math.inf
        deadline = time.perf_counter() + seconds
        runs = 0
        while runs < 3 or time.perf_counter() < deadline:
            start = time.perf_counter()
            fn()
            sync(dev)
            best = min(best, time.perf_counter() - start)
            runs += 1
        peaks[name] = 2 * n**3 / best / 1e9
    return peaks


def matmul_peak_gflops(
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, n: int | None = None, seconds: float = 2.0
) -> float:
    """The device's measured GEMM peak: the fastest route of `matmul_peaks`."""
    return max(matmul_peaks(device, dtype, n, seconds).values())


# -- the machine -----------------------------------------------------------------------------------


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


def device_name(dev: torch.device) -> str:
    """What a person calls the device: the GPU's name, the CPU's model, else the device type."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    if dev.type == "cpu":
        return cpu_model()
    return dev.type


def thread_settings() -> tuple[int, str | None]:
    """(torch's intra-op thread count, the OMP_NUM_THREADS environment value or None)."""
    return torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")


__all__ = ["CallTimes", "PeakMemory", "count_flops", "cpu_model", "device_name", "flop_mapping", "gemm_backends",
           "matmul_peak_gflops", "matmul_peaks", "plan_calls", "sync", "thread_settings", "time_calls"]
