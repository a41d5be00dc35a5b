"""`titok bench`: images/s, tokens/s, latency, peak memory and share of the GEMM peak per task."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .common import BatchOpt, DeviceOpt, DtypeOpt, JsonOpt, QuietOpt, human_count, out_console, print_json, warn

TASK_NAMES = ("encode", "decode", "sample", "generate")  # table order; "generate" = tokens without decoding
DEFAULT_TASKS = ("encode", "decode", "sample")


def _fmt(value: float | None) -> str:
    """Three significant figures, thousands separated: 3,898 / 58.4 / 0.122."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def render(result: dict[str, Any]) -> None:
    """The benchmark dict as a rich table plus a header line for people."""
    from rich.table import Table

    console = out_console()
    tok, gen = result.get("tokenizer") or {}, result.get("generator") or {}
    models = f"tokenizer {tok.get('name')} ({human_count(tok.get('num_parameters'))} params)"
    if gen:
        models += f", generator {gen.get('name')} ({human_count(gen.get('num_parameters'))} params)"
    device = result.get("device_name") or result.get("device")
    console.print(models, markup=False, soft_wrap=True)
    console.print(
        f"{result.get('resolution')}x{result.get('resolution')} pixels, batch {result.get('batch_size')}, "
        f"{result.get('dtype')} on {result.get('device')} ({device}), {result.get('weights')} weights",
        markup=False, soft_wrap=True,
    )  # fmt: skip
    peak = result.get("matmul_peak_gflops")
    columns = ["task", "images/s", "tokens/s", "latency ms (batch)", "peak memory MB", "GFLOP/s"]
    if peak:
        columns.append("of GEMM peak")
    table = Table()
    for column in columns:
        table.add_column(column, justify="left" if column == "task" else "right")
    for task in TASK_NAMES:
        row = result.get(task)
        if not row:
            continue
        cells = [task, _fmt(row.get("images_per_s")), _fmt(row.get("tokens_per_s")), _fmt(row.get("latency_ms")),
                 _fmt(row.get("peak_memory_mb")), _fmt(row.get("gflops_per_s"))]  # fmt: skip
        if peak:
            share = row.get("share_of_matmul_peak")
            cells.append("-" if share is None else f"{share:.0%}")
        table.add_row(*cells)
    console.print(table)
    if peak:
        routes = result.get("matmul_peak_gflops_by_route") or {}
        detail = ", ".join(f"{name} {_fmt(v)}" for name, v in routes.items()) if len(routes) > 1 else ""
        console.print(f"GEMM peak {_fmt(peak)} GFLOP/s ({result.get('dtype')}, measured now"
                      + (f": {detail})" if detail else ")"), markup=False, soft_wrap=True)  # fmt: skip
    agree = result.get("agreement_with_float32")
    if agree:
        first = (f"token agreement {agree['token_agreement']:.2%}" if "token_agreement" in agree
                 else f"latent max relative error {agree['latent_max_rel_error']:.2g}")  # fmt: skip
        console.print(f"{result.get('dtype')} against float32 on {agree['images']} images: {first}, "
                      f"decode PSNR {agree['decode_psnr_db']:.1f} dB, {agree['nan_count']} NaN",
                      markup=False, soft_wrap=True)  # fmt: skip
    if result.get("weights") == "random":
        console.print(
            "RANDOM WEIGHTS (not in the local cache, or no public weights exist): timings are "
            "representative, outputs are not.",
            style="bold yellow", markup=False, soft_wrap=True,
        )  # fmt: skip


def bench(
    resolution: Annotated[
        int | None,
        typer.Option("--resolution", "-r", help="256 (official models) or 512 (paper architectures, random weights) "
                     "[default: 256, or the resolution of --model].", metavar="PIXELS"),
    ] = None,  # fmt: skip
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Tokenizer: registry name, Hub id or folder [default: titok-l32 at 256, "
                     "titok-l64-512 at 512].", metavar="NAME"),
    ] = None,  # fmt: skip
    generator: Annotated[
        str | None,
        typer.Option("--generator", metavar="NAME", help="Generator for `sample` when --model is a folder or Hub id."),
    ] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    batch_size: BatchOpt = 16,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the models first.")] = False,
    warmup: Annotated[int, typer.Option("--warmup", metavar="N", min=0, help="Untimed calls per task.")] = 1,
    iters: Annotated[
        int, typer.Option("--iters", metavar="N", min=1, help="Timed calls per task (the median is reported).")
    ] = 3,
    tasks: Annotated[
        list[str] | None,
        typer.Option("--task", help="encode, decode, sample (generate + decode) or generate (tokens only); "
                     "repeatable [default: encode, decode, sample].", metavar="TASK"),
    ] = None,
    peak: Annotated[
        bool, typer.Option("--peak/--no-peak", help="Measure the device's GEMM peak first (a few seconds) and "
                           "report each task's share of it.")
    ] = True,  # fmt: skip
    agreement: Annotated[
        Path | None,
        typer.Option("--agreement", help="With --dtype bfloat16/float16: a folder of images to compare against a "
                     "float32 copy (token agreement, decode PSNR, NaN count).", metavar="DIR"),
    ] = None,  # fmt: skip
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Time encode, decode and sample after warm-up: images/s, tokens/s, latency, peak memory.

    Downloads nothing: when the weights are not in the local Hugging Face cache (and for the
    512x512 architectures, which have no public weights) it uses random weights of the same
    architecture and says so.

    Example:  titok bench --resolution 512 --device cuda --dtype bfloat16 --json
    """
    from titok_cli.bench import run_benchmark
    from titok_cli.errors import UsageError

    resolution_given = resolution is not None
    if resolution is None:
        resolution = 256
    elif resolution not in (256, 512) and model is None:
        raise UsageError(f"--resolution must be 256 or 512 (got {resolution}); or pass --model")
    for task in tasks or ():
        if task not in TASK_NAMES:
            raise UsageError(f"--task {task!r}: choose from {', '.join(TASK_NAMES)}")
    kwargs: dict[str, Any] = {}
    if generator is not None:
        kwargs["generator"] = generator
    if agreement is not None:
        kwargs["agreement_images"] = agreement
    result = run_benchmark(
        resolution=resolution, model=model, device=device, dtype=dtype, batch_size=batch_size,
        compile=compile_, warmup=warmup, iters=iters, tasks=tuple(tasks or DEFAULT_TASKS), measure_peak=peak,
        **kwargs,
    )  # fmt: skip
    notes = [n for n in str(result.get("note") or "").split("; ") if n]
    if model is not None and not resolution_given:
        notes = [n for n in notes if "not the requested" not in n]  # the model's own size was wanted
    result["note"] = "; ".join(notes)
    if json_output:
        print_json(result)
        return
    render(result)
    notes = [n for n in notes if not n.startswith("random weights:")]  # the table says it already
    if notes and not quiet:
        warn("; ".join(notes))
