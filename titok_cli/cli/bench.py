"""`titok bench`: images/s, tokens/s, latency spread, peak memory and share of the GEMM peak per task."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .common import DeviceBatchOpt, DeviceOpt, DtypeOpt, HelpOpt, JsonOpt, QuietOpt, at_least, human_count, note, out_console, print_json, warn

if TYPE_CHECKING:  # pragma: no cover
    from titok_cli.bench_result import BenchEvent, BenchResult


class Task(str, Enum):
    encode = "encode"
    decode = "decode"
    sample = "sample"  # generate + decode
    generate = "generate"  # generator tokens only


class Resolution(str, Enum):
    r256 = "256"
    r512 = "512"


ResolutionOpt = Annotated[Resolution | None, typer.Option(
    "--resolution", "-r", metavar="256|512", help="256 (official models) or 512 (paper architectures, random "
    "weights) [default: 256, or the resolution of --model].")]  # fmt: skip
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", metavar="NAME", help="Tokenizer: registry name, Hub id or folder "
                                              "[default: titok-l32 at 256, titok-l64-512 at 512].")]  # fmt: skip
GeneratorOpt = Annotated[str | None, typer.Option("--generator", metavar="NAME", help="Generator for `sample` when --model is a "
                                                  "folder or Hub id.")]  # fmt: skip
BenchBatchOpt = DeviceBatchOpt
SecondsOpt = Annotated[float, typer.Option("--seconds", "-s", metavar="SECONDS", callback=at_least(0.001), help="Time budget of each task's timed "
                                           "calls; the number of calls is chosen from the first one.")]  # fmt: skip
CompileOpt = Annotated[bool, typer.Option("--compile", metavar="", help="torch.compile the models first.")]
WarmupOpt = Annotated[int, typer.Option("--warmup", metavar="N", callback=at_least(0), help="Untimed calls per task.")]
ItersOpt = Annotated[int, typer.Option("--iters", metavar="N", callback=at_least(1), help="At most this many timed calls per task.")]
TaskOpt = Annotated[list[Task] | None, typer.Option("--task", metavar="TASK", help="encode, decode, sample "
                    "(generate + decode) or generate (tokens only); repeatable [default: encode, decode, sample].")]
PeakOpt = Annotated[bool, typer.Option("--peak/--no-peak", metavar="", help="Measure the device's GEMM peak first (a few "
                                       "seconds) and report each task's share of it.")]  # fmt: skip
AgreementOpt = Annotated[Path | None, typer.Option("--agreement", metavar="DIR", help="With --dtype bfloat16/"
                         "float16: images to compare against a float32 copy (token agreement, decode PSNR, NaN).")]


def _fmt(value: float | None) -> str:
    """Three significant figures, thousands separated: 3,898 / 58.4 / 0.122."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def render(result: "BenchResult") -> None:
    """The benchmark as a rich table plus header lines for people."""
    from rich import box
    from rich.table import Table

    console = out_console()
    tok, gen = result.tokenizer, result.generator
    models = f"tokenizer {tok.name} ({human_count(tok.num_parameters)} params)"
    if gen:
        models += f", generator {gen.name} ({human_count(gen.num_parameters)} params)"
    console.print(models, markup=False, soft_wrap=True)
    console.print(
        f"{result.resolution}x{result.resolution} pixels, batch {result.batch_size}, {result.dtype} on "
        f"{result.device} ({result.device_name}), {result.weights} weights, {result.threads} threads",
        markup=False, soft_wrap=True,
    )  # fmt: skip
    peak = result.matmul_peak_gflops
    # ms per call of the whole batch: the median, then the fastest and slowest call (the spread)
    columns = ["task", "images/s", "tokens/s", "ms/batch", "min-max ms", "calls", "peak MB", "GFLOP/s"]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=0, caption_justify="left",
                  caption="ms/batch: the median call; min-max: the fastest and slowest call")  # fits 80 columns
    for column in columns + (["of peak"] if peak else []):
        table.add_column(column, justify="left" if column == "task" else "right", no_wrap=True)
    for name, row in result.tasks.items():
        d = row.to_dict()
        spread = f"{_fmt(d['latency_ms_min'])}-{_fmt(d['latency_ms_max'])}"
        cells = [name, _fmt(d["images_per_s"]), _fmt(d["tokens_per_s"]), _fmt(d["latency_ms"]), spread, str(d["calls"]),
                 _fmt(d["peak_memory_mb"]), _fmt(d.get("gflops_per_s"))]  # fmt: skip
        if peak:
            share = row.share_of_matmul_peak
            cells.append("-" if share is None else f"{share:.0%}")
        table.add_row(*cells)
    console.print(table)
    if peak:
        routes = result.matmul_peak_gflops_by_route
        detail = ", ".join(f"{name} {_fmt(v)}" for name, v in routes.items()) if len(routes) > 1 else ""
        console.print(f"GEMM peak {_fmt(peak)} GFLOP/s ({result.dtype}, measured now"
                      + (f": {detail})" if detail else ")"), markup=False, soft_wrap=True)  # fmt: skip
    agree = result.agreement_with_float32
    if agree:
        first = (f"token agreement {agree['token_agreement']:.2%}" if "token_agreement" in agree
                 else f"latent max relative error {agree['latent_max_rel_error']:.2g}")  # fmt: skip
        console.print(f"{result.dtype} against float32 on {agree['images']} images: {first}, "
                      f"decode PSNR {agree['decode_psnr_db']:.1f} dB, {agree['nan_count']} NaN",
                      markup=False, soft_wrap=True)  # fmt: skip
    if result.weights == "random":
        console.print(
            "RANDOM WEIGHTS (not in the local cache, or no public weights exist): timings are "
            "representative, outputs are not.",
            style="bold yellow", markup=False, soft_wrap=True,
        )  # fmt: skip


def bench(
    resolution: ResolutionOpt = None,
    model: ModelOpt = None,
    generator: GeneratorOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    batch_size: BenchBatchOpt = None,
    seconds: SecondsOpt = 10.0,
    compile_: CompileOpt = False,
    warmup: WarmupOpt = 1,
    iters: ItersOpt = 3,
    tasks: TaskOpt = None,
    peak: PeakOpt = True,
    agreement: AgreementOpt = None,
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
    _help: HelpOpt = False,
) -> None:
    """Time encode, decode and sample after warm-up: images/s, tokens/s, latency, peak memory.

    Each task gets a time budget (--seconds): after one warm-up call, as many timed calls as fit
    it (at least 1, at most --iters). Downloads nothing: when the weights are not in the local
    Hugging Face cache (and for the 512x512 architectures, which have no public weights) it uses
    random weights of the same architecture and says so.

    Example:  titok bench --resolution 512 --device cuda --dtype bfloat16 --json
    """
    from titok_cli.bench import run_benchmark

    def progress(event: "BenchEvent") -> None:
        note(event.message, quiet)

    result = run_benchmark(
        resolution=None if resolution is None else int(resolution.value), model=model, generator=generator,
        device=device, dtype=dtype, batch_size=batch_size, compile=compile_, warmup=warmup, iters=iters,
        seconds=seconds, tasks=None if not tasks else tuple(t.value for t in tasks), measure_peak=peak,
        agreement_images=agreement, on_progress=progress,
    )  # fmt: skip
    if json_output:
        print_json(result.to_dict())
        return
    render(result)
    if not quiet:
        for n in result.notes:
            if n.kind != "random-weights":  # the table says so already
                warn(n.message)
