"""`titok sample`: class-conditional images from a MaskGIT generator and its paired tokenizer.

The work is the library's (`titok_cli.sample_request.run_sample`); this module parses and prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import (
    BatchOpt,
    DeviceOpt,
    DtypeOpt,
    GridOpt,
    HelpOpt,
    JsonOpt,
    PresetOpt,
    QuietOpt,
    note,
    plural,
    print_json,
    progress_bar,
    say,
)


def sample(
    classes: Annotated[
        list[str] | None,
        typer.Option("--class", "-c", metavar="CLASS", help="Class id or ImageNet name; repeat for several classes.",
                     show_default=False),
    ] = None,  # fmt: skip
    all_classes: Annotated[
        bool, typer.Option("--all-classes", metavar="", help="Every class of the generator (1000 for ImageNet).")
    ] = False,
    num: Annotated[int, typer.Option("--num", "-n", metavar="N", help="Images per class.")] = 4,
    output: Annotated[Path, typer.Option("--output", "-o", metavar="DIR", help="Folder for the PNG files.")] = Path(
        "samples"
    ),
    model: Annotated[
        str, typer.Option("--model", "-m", metavar="NAME", help="Generator: registry name (a tokenizer name picks "
                          "its generator), Hub repo id or folder.")
    ] = "titok-l32",  # fmt: skip
    preset: PresetOpt = None,
    tokenizer: Annotated[
        str | None,
        typer.Option("--tokenizer", metavar="NAME",
                     help="Tokenizer that decodes the tokens [default: the generator's pair]."),
    ] = None,  # fmt: skip
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Image j of class c depends only on (seed, c, j) and the settings.")] = 0,
    steps: Annotated[
        int | None, typer.Option("--steps", metavar="N", help="Sampling steps [default: the model's].")
    ] = None,
    guidance_scale: Annotated[
        float | None,
        typer.Option("--guidance-scale", metavar="SCALE", help="Classifier-free guidance [default: the model's]."),
    ] = None,
    guidance_decay: Annotated[
        str | None,
        typer.Option("--guidance-decay", metavar="DECAY",
                     help="constant, linear or power-cosine [default: the model's]."),  # fmt: skip
    ] = None,
    guidance_scale_pow: Annotated[
        float | None,
        typer.Option("--guidance-scale-pow", metavar="POW", help="Power of power-cosine [default: the model's]."),
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option("--temperature", metavar="T",
                     help="Temperature of the Gumbel noise [default: the model's]."),  # fmt: skip
    ] = None,
    annealing: Annotated[
        bool | None,
        typer.Option("--annealing/--no-annealing", metavar="", help="Softmax temperature annealing [default: the model's].",
                     show_default=False),
    ] = None,  # fmt: skip
    npz: Annotated[
        Path | None,
        typer.Option("--npz", metavar="FILE.npz", help="Write only an ADM-evaluator archive (arr_0 uint8 [N,S,S,3], "
                     "labels) instead of PNGs: resumable, shared over torchrun ranks."),
    ] = None,  # fmt: skip
    grid: GridOpt = None,
    save_tokens: Annotated[
        Path | None, typer.Option("--save-tokens", metavar="FILE.npy", help="Also save the token ids [N,K].")
    ] = None,
    batch_size: BatchOpt = 16,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
    _help: HelpOpt = False,
) -> None:
    """Generate images of ImageNet classes with a TiTok MaskGIT generator.

    Sampling flags default to the official values of the chosen generator. Files are named
    like class207_golden_retriever_000.png. Every image has its own noise, drawn from
    (seed, class, number within the class): the same picture with PNGs or --npz, any
    --batch-size, any number of torchrun ranks, and when -n grows.

    For FID, `--all-classes -n 50 --npz samples.npz` writes the 50,000-image archive of the
    official protocol; rerun the same command to resume, or start it under torchrun.

    Example:  titok sample --class 207 --class "tabby cat" -n 8 -o samples/ --grid grid.png
    """
    from titok_cli.sample_request import SampleRequest, run_sample

    overrides = {"num_steps": steps, "guidance_scale": guidance_scale, "guidance_decay": guidance_decay,
                 "guidance_scale_pow": guidance_scale_pow, "randomize_temperature": temperature,
                 "softmax_temperature_annealing": annealing}  # fmt: skip
    request = SampleRequest(classes=tuple(classes or ()), all_classes=all_classes, per_class=num, folder=output,
                            model=model, preset=preset, tokenizer=tokenizer, seed=seed, overrides=overrides, npz=npz, grid=grid,
                            save_tokens=save_tokens, batch_size=batch_size, device=device, dtype=dtype)  # fmt: skip
    request.check()  # usage errors before the progress display starts
    what = "sampling batches" if npz is not None else "sampling"
    with progress_bar(what, None, quiet or json_output) as update:
        report = run_sample(request, progress=update, notify=lambda line: note(line, quiet))
    if report.rank != 0:
        return
    if json_output:
        print_json(report.as_json())
        return
    n_classes = len(report.classes)
    if npz is not None:
        if report.batches_done_before:
            say(f"resumed: {report.batches_done_before} batches were already rendered", quiet)
        say(f"{report.count} images ({n_classes} classes x {num}, seed {seed}) -> {npz}", quiet)
        return
    say(f"{plural(len(report.images), 'image')} ({plural(n_classes, 'class', 'classes')} x {num}, "
        f"seed {seed}) -> {output}/", quiet)  # fmt: skip
    if grid is not None:
        say(f"grid -> {grid}", quiet)
    if save_tokens is not None:
        say(f"tokens -> {save_tokens}", quiet)
