"""`titok eval gen` and `titok eval sweep`: generation quality (gFID, IS, precision/recall).

The work is the library's (`titok_cli.eval_gen`, `titok_cli.eval_sweep`); this module parses,
calls and prints. `register(eval_app)` adds both commands to the `eval` sub-app.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .common import (
    BatchOpt,
    DeviceOpt,
    DtypeOpt,
    HelpOpt,
    JsonOpt,
    QuietOpt,
    at_least,
    note,
    out_console,
    print_json,
    progress_bar,
    say,
    usage_error,
)

if TYPE_CHECKING:  # pragma: no cover
    from titok_cli.eval_gen import GenEvalResult
    from titok_cli.eval_sweep import SweepResult

RefOpt = Annotated[
    Path,
    typer.Option("--ref", metavar="REF.npz", show_default=False,
                 help="Reference batch: ADM-format .npz with arr_0 uint8 images [N,H,W,3] and/or mu/sigma."),
]  # fmt: skip
InceptionOpt = Annotated[
    Path | None,
    typer.Option("--inception", metavar="PATH",
                 help="FID Inception weights (pytorch-fid's pt_inception-2015-12-05-6726825d.pth) "
                      "[default: the cache, or one download]."),
]  # fmt: skip


def eval_gen(
    samples: Annotated[
        Path, typer.Argument(metavar="SAMPLES.npz", show_default=False,
                             help="Sample archive: `titok sample --npz` output or any ADM-format arr_0.")
    ],  # fmt: skip
    ref: RefOpt,
    expect: Annotated[
        int | None,
        typer.Option("--expect", metavar="N", callback=at_least(1), help="Refuse an archive that does not hold exactly N images."),
    ] = None,
    inception: InceptionOpt = None,
    batch_size: BatchOpt = 64,
    device: DeviceOpt = "auto",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="FILE.json", help="Also write the results as JSON.")
    ] = None,
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
    _help: HelpOpt = False,
) -> None:
    """gFID, Inception Score and precision/recall of a sample archive against a reference batch.

    The ADM evaluator's definitions, on the FID Inception-v3 in float32: images resized to
    299x299 bilinearly; FID from float64 statistics (a reference's stored mu/sigma when it has
    them); IS over chunks of 5000 in file order; precision/recall with k=3 neighbours (they need
    reference images). Under torchrun the ranks share the images and rank 0 reports.

    Example:  titok eval gen samples.npz --ref VIRTUAL_imagenet256_labeled.npz --expect 50000
    """
    from titok_cli.distributed import dist_info, rank_device
    from titok_cli.eval_gen import evaluate_gen
    from titok_cli.outputs import check_output_file

    if output is not None:
        check_output_file(output, (".json",), "--output")

    from .common import device_and_dtype

    dev, _ = device_and_dtype(rank_device(device), "float32")
    rank, _ = dist_info()
    hide = quiet or json_output or rank != 0
    with progress_bar("inception features", None, hide) as update:
        result = evaluate_gen(samples, ref, expect=expect, inception=inception, batch_size=batch_size, device=dev,
                              progress=update)  # fmt: skip
    if rank != 0:
        return
    if output is not None:
        output.write_text(json.dumps(result.as_json(), indent=2) + "\n")
    if json_output:
        print_json(result.as_json())
        return
    _print_gen(result, quiet)
    if output is not None:
        say(f"results -> {output}", quiet)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _print_gen(result: GenEvalResult, quiet: bool) -> None:
    if quiet:
        say(f"gFID {result.fid:.4f}")
        return
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("gFID", _fmt(result.fid))
    table.add_row("Inception Score", f"{result.inception_score:.4f} ± {result.inception_score_std:.4f}")
    table.add_row("precision", _fmt(result.precision))
    table.add_row("recall", _fmt(result.recall))
    table.add_row("samples", f"{result.sample_count:,}")
    refs = "-" if result.reference_count is None else f"{result.reference_count:,}"
    table.add_row("reference images", refs)
    out_console().print(table)
    say(f"{result.samples} vs {result.reference} (reference {result.reference_holds}; "
        f"FID statistics from the {result.reference_stats_from})")  # fmt: skip
    for line in result.notes:
        note(line)


def _values(text: str | None) -> list[str] | None:
    """`2,3,4.5` -> ['2', '3', '4.5'] (None stays None: the setting is not swept)."""
    if text is None:
        return None
    values = [v.strip() for v in text.split(",")]
    if not all(values):
        raise usage_error(f"empty value in the list {text!r}")
    return values


def eval_sweep(
    ref: RefOpt,
    model: Annotated[
        str, typer.Option("--model", "-m", metavar="NAME", help="Generator: registry name, Hub repo id or folder.")
    ] = "titok-l32",
    tokenizer: Annotated[
        str | None,
        typer.Option("--tokenizer", metavar="NAME", help="Tokenizer that decodes the tokens [default: the generator's pair]."),
    ] = None,  # fmt: skip
    guidance_scale: Annotated[
        str | None, typer.Option("--guidance-scale", metavar="S,S,..", help="Guidance scales to sweep, e.g. 2,3,4.5.")
    ] = None,
    temperature: Annotated[
        str | None, typer.Option("--temperature", metavar="T,T,..", help="Gumbel temperatures to sweep, e.g. 6,9.5.")
    ] = None,
    steps: Annotated[str | None, typer.Option("--steps", metavar="N,N,..", help="Sampling step counts to sweep.")] = None,
    guidance_decay: Annotated[
        str | None, typer.Option("--guidance-decay", metavar="D,D,..", help="Guidance decays (constant, linear, power-cosine).")
    ] = None,  # fmt: skip
    guidance_scale_pow: Annotated[
        str | None, typer.Option("--guidance-scale-pow", metavar="P,P,..", help="Powers of power-cosine to sweep.")
    ] = None,
    annealing: Annotated[
        str | None, typer.Option("--annealing", metavar="B,B,..", help="Softmax temperature annealing: true, false or both.")
    ] = None,  # fmt: skip
    num: Annotated[int, typer.Option("--num", "-n", metavar="N", callback=at_least(1), help="Images per class at every grid point.")] = 50,
    classes: Annotated[
        list[str] | None,
        typer.Option("--class", "-c", metavar="CLASS",
                     help="Class ids or ImageNet names (repeat, or separate with commas).", show_default=False),
    ] = None,  # fmt: skip
    all_classes: Annotated[bool, typer.Option("--all-classes", metavar="", help="Every class of the generator.")] = False,
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="RUN_DIR", help="Run folder: samples, results.jsonl, tables, plot.")
    ] = Path("sweep"),
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Seed of every grid point's samples.")] = 0,
    inception: InceptionOpt = None,
    batch_size: BatchOpt = 32,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
    _help: HelpOpt = False,
) -> None:
    """Sample and measure gFID over a grid of sampling settings (every combination of the lists).

    Each grid point samples -n images per class with the resumable FID sampler, then measures
    gFID/IS/precision/recall against --ref. A finished point is recorded in RUN_DIR/results.jsonl
    and skipped when the command is repeated; an interrupted one resumes. Writes results.csv,
    results.json and gfid.png (gFID against the first swept setting, one line per value of the
    others). Under torchrun the ranks share every point.

    Example:  titok eval sweep --model titok-l32 --ref REF.npz --guidance-scale 2,3,4.5 --temperature 6,9.5 --all-classes -n 50 -o sweep/
    """
    from titok_cli.eval_sweep import SweepRequest, run_sweep

    axes = {"num_steps": _values(steps), "guidance_scale": _values(guidance_scale),
            "guidance_decay": _values(guidance_decay), "guidance_scale_pow": _values(guidance_scale_pow),
            "randomize_temperature": _values(temperature), "softmax_temperature_annealing": _values(annealing)}  # fmt: skip
    wanted = [c.strip() for text in classes or () for c in text.split(",") if c.strip()]
    request = SweepRequest(model=model, tokenizer=tokenizer, reference=ref, axes={k: v for k, v in axes.items() if v},
                           classes=tuple(wanted), all_classes=all_classes, per_class=num, run_dir=output, seed=seed,
                           inception=inception, batch_size=batch_size, device=device, dtype=dtype)  # fmt: skip
    request.check()
    from titok_cli.distributed import dist_info

    hide = quiet or json_output or dist_info()[0] != 0

    def point_started(index: int, total: int, label: str, reused: bool) -> None:
        note(f"[{index + 1}/{total}] {label}" + (": measured before, skipped" if reused else ""), hide)

    with progress_bar("sampling, features", None, hide) as update:
        result = run_sweep(request, on_point=point_started, progress=lambda _phase, done, total: update(done, total))
    if result.rank != 0:
        return
    if json_output:
        print_json(result.as_json())
        return
    _print_sweep(result, quiet)


def _print_sweep(result: SweepResult, quiet: bool) -> None:
    if not quiet:
        from rich import box
        from rich.table import Table

        table = Table(box=box.SIMPLE_HEAD, show_edge=False)
        for name in result.axis_names:
            table.add_column(result.axis_titles[name], justify="right")
        for name in ("gFID", "IS", "precision", "recall", ""):
            table.add_column(name, justify="right" if name else "left")
        for row in result.rows:
            r = row.result
            table.add_row(*[str(row.settings[n]) for n in result.axis_names], _fmt(r.fid), _fmt(r.inception_score, 2),
                          _fmt(r.precision), _fmt(r.recall), "reused" if row.reused else "")  # fmt: skip
        out_console().print(table)
    reused = sum(row.reused for row in result.rows)
    say(f"{len(result.rows)} grid points ({reused} from an earlier run) -> {result.csv}, {result.json}, {result.plot}",
        quiet)  # fmt: skip


def register(eval_app: typer.Typer) -> None:
    """Add `gen` and `sweep` to the `eval` sub-app."""
    from .failures import guarded

    eval_app.command("gen")(guarded(eval_gen))
    eval_app.command("sweep")(guarded(eval_sweep))
