"""What `run_benchmark` returns and reports while it runs: typed rows, typed notes, progress events.

Callers choose by field, never by message text: a note's `kind` says what it is about (the CLI,
for example, leaves out `random-weights` because its table says so already). `to_dict()` gives
the JSON form that `titok bench --json` prints and benchmarks/ record.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    from .sampling import SamplingParams

NoteKind = Literal[
    "architecture-only",  # the preset has no public weights: random weights of its architecture
    "not-cached",  # the weights are not in the local Hugging Face cache: random weights (no download)
    "random-weights",  # summary: speed is representative, outputs are not
    "no-generator",  # nothing to sample with: sample / generate not measured
    "generator-mismatch",  # the generator's ids do not fit the tokenizer: sample / generate not measured
    "resolution-from-model",  # --resolution differs from the model's own size, which wins
    "compile-warmup",  # torch.compile time falls in the warm-up calls
    "compile-slow-on-cpu",  # torch.compile measured slower than eager on the CPU
    "agreement-skipped",  # --agreement on a float32 run: nothing to compare
    "peak-over-100",  # a task's GFLOP/s above the measured GEMM peak
    "noisy",  # the timed calls of a task spread by more than NOISY_SPREAD (max / min)
]
NOISY_SPREAD = 1.3  # max / min call time above which a task's figures are flagged as disturbed

EventKind = Literal["start", "models", "gemm-peak", "plan", "task-done"]


@dataclass(frozen=True)
class Note:
    """Something the reader of a benchmark must know; `task` when it concerns one task."""

    kind: NoteKind
    message: str
    task: str | None = None


@dataclass(frozen=True)
class BenchEvent:
    """Progress while a benchmark runs (for a caller's callback): what happened, in one line."""

    kind: EventKind
    message: str
    task: str | None = None
    seconds: float | None = None  # "plan": the expected time of the timed calls; "task-done": elapsed


@dataclass(frozen=True)
class ModelInfo:
    """A benchmarked model: its name, size and whether its weights are real."""

    name: str
    num_parameters: int
    weights: Literal["pretrained", "random"]


@dataclass(frozen=True)
class TaskResult:
    """One task's timed calls (seconds per call of the whole batch) and what follows from them."""

    task: str
    batch_size: int
    num_tokens: int
    wall_s: tuple[float, ...]
    cpu_s: tuple[float, ...]
    first_call_s: float
    peak_memory_mb: float | None
    threads: int
    on_cpu: bool
    gflop_per_image: float | None = None
    matmul_peak_gflops: float | None = None

    @property
    def latency_s(self) -> float:
        return statistics.median(self.wall_s)

    @property
    def images_per_s(self) -> float:
        return self.batch_size / self.latency_s

    @property
    def spread(self) -> float:
        """Slowest call over fastest; 1.0 with a single call."""
        return max(self.wall_s) / max(min(self.wall_s), 1e-12)

    @property
    def gflops_per_s(self) -> float | None:
        return None if not self.gflop_per_image else self.gflop_per_image * self.images_per_s

    @property
    def share_of_matmul_peak(self) -> float | None:
        g = self.gflops_per_s
        return None if g is None or not self.matmul_peak_gflops else g / self.matmul_peak_gflops

    def to_dict(self) -> dict[str, Any]:
        b, cpu_median = self.batch_size, statistics.median(self.cpu_s)
        out: dict[str, Any] = {
            "images_per_s": self.images_per_s,  # from the median call
            "images_per_s_best": b / min(self.wall_s),  # the fastest call: least disturbed by other load
            "images_per_s_worst": b / max(self.wall_s),
            "tokens_per_s": self.images_per_s * self.num_tokens,
            "latency_ms": self.latency_s * 1e3,
            "latency_ms_min": min(self.wall_s) * 1e3,
            "latency_ms_max": max(self.wall_s) * 1e3,
            "latency_ms_all": [t * 1e3 for t in self.wall_s],
            "spread": self.spread,
            "calls": len(self.wall_s),
            "first_call_ms": self.first_call_s * 1e3,
            "peak_memory_mb": self.peak_memory_mb,
            "cpu_time_ms": cpu_median * 1e3,
        }
        if self.on_cpu:
            # Throughput had the process owned its threads' cores: immune to other processes' load,
            # pessimistic by any spin-waiting the thread pool does (counted as CPU time).
            out["images_per_s_from_cpu_time"] = b * self.threads / max(cpu_median, 1e-9)
        if self.gflop_per_image:
            out["gflop_per_image"] = self.gflop_per_image
            out["gflops_per_s"] = self.gflops_per_s
            if self.matmul_peak_gflops:
                out["share_of_matmul_peak"] = self.share_of_matmul_peak
        return out


@dataclass
class BenchResult:
    """One benchmark configuration: the setting, the models, a row per measured task, notes."""

    device: str
    device_name: str
    dtype: str
    resolution: int
    batch_size: int
    compile: bool
    tokenizer: ModelInfo
    generator: ModelInfo | None
    torch_version: str
    threads: int
    omp_num_threads: str | None
    warmup: int
    max_iters: int
    seconds: float | None  # time budget of each task's timed calls; None: always max_iters calls
    peak_memory_kind: str
    cpu_allocator: str
    requested_tasks: tuple[str, ...]
    sampling: "SamplingParams | None" = None
    matmul_peak_gflops: float | None = None
    matmul_peak_gflops_by_route: dict[str, float] = field(default_factory=dict)
    tasks: dict[str, TaskResult] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)
    agreement_with_float32: dict[str, Any] | None = None

    @property
    def weights(self) -> Literal["pretrained", "random"]:
        models = [self.tokenizer] + ([self.generator] if self.generator else [])
        return "pretrained" if all(m.weights == "pretrained" for m in models) else "random"

    def notes_of(self, *kinds: NoteKind) -> list[Note]:
        return [n for n in self.notes if n.kind in kinds]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: settings at the top, one key per requested task (None if not measured)."""
        out: dict[str, Any] = {
            "device": self.device, "device_name": self.device_name, "dtype": self.dtype,
            "resolution": self.resolution, "batch_size": self.batch_size, "compile": self.compile,
            "weights": self.weights, "tokenizer": asdict(self.tokenizer),
            "generator": None if self.generator is None else asdict(self.generator),
            "torch": self.torch_version, "threads": self.threads, "omp_num_threads": self.omp_num_threads,
            "timing": {"warmup": self.warmup, "max_iters": self.max_iters, "seconds_per_task": self.seconds,
                       "statistic": "median, with min and max"},
            "peak_memory_kind": self.peak_memory_kind, "cpu_allocator": self.cpu_allocator,
            "notes": [asdict(n) for n in self.notes],
        }  # fmt: skip
        if self.sampling is not None:
            out["sampling"] = asdict(self.sampling)
        if self.matmul_peak_gflops is not None:
            out["matmul_peak_gflops"] = self.matmul_peak_gflops
            out["matmul_peak_gflops_by_route"] = dict(self.matmul_peak_gflops_by_route)
        for task in self.requested_tasks:
            row = self.tasks.get(task)
            out[task] = None if row is None else row.to_dict()
        if self.agreement_with_float32 is not None:
            out["agreement_with_float32"] = self.agreement_with_float32
        return out


__all__ = ["BenchEvent", "BenchResult", "EventKind", "ModelInfo", "NOISY_SPREAD", "Note", "NoteKind", "TaskResult"]
