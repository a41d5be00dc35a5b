"""`titok sample`: class-conditional images from a MaskGIT generator and its paired tokenizer."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .common import (
    BatchOpt,
    DeviceOpt,
    DtypeOpt,
    GridOpt,
    JsonOpt,
    PngWriter,
    QuietOpt,
    check_output_file,
    contact_sheet,
    device_and_dtype,
    plural,
    print_json,
    progress_bar,
    save_png,
    say,
    usage_error,
)

if TYPE_CHECKING:  # pragma: no cover
    from titok_cli import TiTokGenerator, TiTokTokenizer

IMAGENET_CLASSES = 1000


def resolve_classes(values: list[str], num_classes: int) -> list[int]:
    """--class values (ids or ImageNet names) -> ids checked against the generator's class count."""
    from titok_cli.imagenet import resolve_class

    ids = []
    for value in values:
        text = value.strip()
        if re.fullmatch(r"[+-]?\d+", text):
            class_id = int(text)
        elif num_classes != IMAGENET_CLASSES:
            raise usage_error(
                f"class {value!r}: names are ImageNet-1k class names, but this generator has "
                f"{num_classes} classes; give a class id 0..{num_classes - 1}"
            )
        else:
            class_id = resolve_class(text)
        if not 0 <= class_id < num_classes:
            raise usage_error(f"class id {class_id} is out of range: this generator has classes 0..{num_classes - 1}")
        ids.append(class_id)
    return ids


def _slug(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")


def file_stem(class_id: int, index: int, num_classes: int) -> str:
    """`class207_golden_retriever_000` (ImageNet generators) or `class3_000`."""
    stem = f"class{class_id}"
    if num_classes == IMAGENET_CLASSES:
        from titok_cli.imagenet import class_name

        stem += "_" + _slug(class_name(class_id))
    return f"{stem}_{index:03d}"


def paired_tokenizer_source(gen: "TiTokGenerator", tokenizer: str | None, model: str) -> str:
    """Which tokenizer decodes this generator's tokens: --tokenizer, else the registry pairing."""
    if tokenizer:
        return tokenizer
    entry = getattr(gen, "source", None) and gen.source.entry  # type: ignore[attr-defined]
    if entry is not None:
        if entry.kind == "generator" and entry.tokenizer:
            return entry.tokenizer
    raise usage_error(
        f"{model} is not a registry generator, so its tokenizer is unknown; "
        "pass --tokenizer (a registry name, Hub repo id or folder)"
    )


def check_pair(gen: "TiTokGenerator", tok: "TiTokTokenizer") -> None:
    from titok_cli.errors import ConfigError

    if tok.is_vae:
        raise ConfigError("the tokenizer is a VAE (continuous latents); generators produce VQ token ids")
    if (gen.num_tokens, gen.codebook_size) != (tok.num_tokens, tok.codebook_size):
        raise ConfigError(
            f"generator makes {gen.num_tokens} tokens from a codebook of {gen.codebook_size}, "
            f"but the tokenizer has {tok.num_tokens} tokens and a codebook of {tok.codebook_size}"
        )


def _write_npz(gen, tok, npz: Path, class_ids: list[int], num: int, params: dict[str, Any], batch_size: int,
               seed: int, quiet: bool, json_output: bool) -> None:  # fmt: skip
    """The FID archive through the library's resumable, rank-sharded sample job."""
    from titok_cli.encode_job import dist_info
    from titok_cli.sample_job import sample_to_npz
    from titok_cli.sampling import SamplingParams

    rank, world = dist_info()
    with progress_bar("sampling batches", None, quiet or json_output or rank != 0) as update:
        result = sample_to_npz(gen, tok, npz, class_ids, num, SamplingParams(**params), batch_size=batch_size,
                               seed=seed, progress=update)  # fmt: skip
    if rank != 0:
        return
    if json_output:
        print_json({
            "generator": gen.source.describe(), "tokenizer": tok.source.describe(),  # type: ignore[attr-defined]
            "output": str(result.output), "count": result.count, "classes": len(class_ids), "per_class": num,
            "seed": seed, "sampling": params, "ranks": world, "batches_done_before": result.batches_done_before,
        })  # fmt: skip
        return
    if result.batches_done_before:
        say(f"resumed: {result.batches_done_before} batches were already rendered", quiet)
    say(f"{result.count} images ({len(class_ids)} classes x {num}, seed {seed}) -> {result.output}", quiet)


def sample(
    classes: Annotated[
        list[str] | None,
        typer.Option("--class", "-c", metavar="CLASS", help="Class id or ImageNet name; repeat for several classes.",
                     show_default=False),
    ] = None,  # fmt: skip
    all_classes: Annotated[
        bool, typer.Option("--all-classes", help="Every class of the generator (1000 for ImageNet).")
    ] = False,
    num: Annotated[int, typer.Option("--n-per-class", "-n", metavar="N", min=1, help="Images per class.")] = 4,
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="DIR", help="Folder for the PNG files.", file_okay=False)
    ] = Path("samples"),
    model: Annotated[
        str, typer.Option("--model", "-m", metavar="NAME", help="Generator: registry name (a tokenizer name picks "
                          "its generator), Hub repo id or folder.")
    ] = "titok-l32",  # fmt: skip
    tokenizer: Annotated[
        str | None,
        typer.Option("--tokenizer", metavar="NAME",
                     help="Tokenizer that decodes the tokens [default: the generator's pair]."),
    ] = None,  # fmt: skip
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Same seed, same images on the same device.")] = 0,
    steps: Annotated[
        int | None, typer.Option("--steps", metavar="N", min=1, help="Sampling steps [default: the model's].")
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
        typer.Option("--annealing/--no-annealing", help="Softmax temperature annealing [default: the model's].",
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
) -> None:
    """Generate images of ImageNet classes with a TiTok MaskGIT generator.

    Sampling flags default to the official values of the chosen generator. Files are named
    like class207_golden_retriever_000.png.

    For FID, `--all-classes -n 50 --npz samples.npz` writes the 50,000-image archive of the
    official protocol; rerun the same command to resume, or start it under torchrun.

    Example:  titok sample --class 207 --class "tabby cat" -n 8 -o samples/ --grid grid.png
    """
    from titok_cli.config import GUIDANCE_DECAYS

    if guidance_decay is not None and guidance_decay not in GUIDANCE_DECAYS:
        raise usage_error(f"--guidance-decay must be one of {', '.join(GUIDANCE_DECAYS)}, not {guidance_decay!r}")
    if bool(classes) == all_classes:
        raise usage_error("give --class (repeatable) or --all-classes")
    if grid is not None:
        check_output_file(grid, (".png",), "--grid")
    if save_tokens is not None:
        check_output_file(save_tokens, (".npy",), "--save-tokens")
    if npz is not None:
        check_output_file(npz, (".npz",), "--npz")
        if grid is not None or save_tokens is not None:
            raise usage_error("--npz writes only the archive; drop --grid and --save-tokens")
    from titok_cli.encode_job import rank_device

    dev, dt = device_and_dtype(rank_device(device) if npz is not None else device, dtype)

    import numpy as np
    import torch

    from titok_cli import load_generator, load_tokenizer, to_uint8

    gen = load_generator(model, device=dev, dtype=dt)
    num_classes = gen.config.condition_num_classes
    class_ids = list(range(num_classes)) if all_classes else resolve_classes(classes or [], num_classes)
    tok = load_tokenizer(paired_tokenizer_source(gen, tokenizer, model), device=dev, dtype=dt)
    check_pair(gen, tok)

    c = gen.config
    params: dict[str, Any] = {
        "num_steps": c.num_steps if steps is None else steps,
        "guidance_scale": c.guidance_scale if guidance_scale is None else guidance_scale,
        "guidance_decay": c.guidance_decay if guidance_decay is None else guidance_decay,
        "guidance_scale_pow": c.guidance_scale_pow if guidance_scale_pow is None else guidance_scale_pow,
        "randomize_temperature": c.randomize_temperature if temperature is None else temperature,
        "softmax_temperature_annealing": c.softmax_temperature_annealing if annealing is None else annealing,
    }

    if npz is not None:
        _write_npz(gen, tok, npz, class_ids, num, params, batch_size, seed, quiet, json_output)
        return

    labels = [cid for cid in class_ids for _ in range(num)]
    counters: dict[int, int] = {}
    stems = []
    for cid in labels:
        stems.append(file_stem(cid, counters.get(cid, 0), num_classes))
        counters[cid] = counters.get(cid, 0) + 1

    rng = torch.Generator(device=dev).manual_seed(seed)
    all_ids, all_pixels, written = [], [], []
    output.mkdir(parents=True, exist_ok=True)
    with PngWriter() as pngs, progress_bar("sampling", len(labels), quiet or json_output) as update:
        for start in range(0, len(labels), batch_size):
            batch = torch.tensor(labels[start : start + batch_size], device=dev)
            ids = gen.generate(batch, generator=rng, **params)  # (B, K)
            pixels = to_uint8(tok.decode(ids)).cpu().numpy()  # (B, S, S, 3)
            for i, image in enumerate(pixels):
                path = output / f"{stems[start + i]}.png"
                pngs.submit(image, path)
                written.append(path)
            all_ids.append(ids.cpu().numpy())
            if grid is not None:
                all_pixels.append(pixels)
            update(min(start + batch_size, len(labels)), None)

    tokens = np.concatenate(all_ids)
    if save_tokens is not None:
        # A regular token file with its manifest, so `titok decode` finds the tokenizer by itself.
        from titok_cli import __version__
        from titok_cli.token_file import model_header, save_tokens as write_tokens, token_dtype

        header = {"tool": f"titok-cli {__version__}", "model": model_header(tok), "sampling": {**params, "seed": seed},
                  "generator": gen.source.describe()}  # type: ignore[attr-defined]  # fmt: skip
        header["generator"].pop("weights", None)
        write_tokens(save_tokens, tokens.astype(token_dtype(tok.codebook_size)), header,
                     [f"{stem}.png" for stem in stems], labels=labels)  # fmt: skip
    if grid is not None:
        save_png(contact_sheet(np.concatenate(all_pixels), columns=num if len(class_ids) > 1 else None), grid)

    if json_output:
        print_json({
            "generator": gen.source.describe(),  # type: ignore[attr-defined]
            "tokenizer": tok.source.describe(),  # type: ignore[attr-defined]
            "device": str(dev), "dtype": str(dt).removeprefix("torch."), "seed": seed,
            "classes": class_ids, "per_class": num, "sampling": params,
            "images": [str(p) for p in written], "grid": str(grid) if grid else None,
            "tokens": str(save_tokens) if save_tokens else None,
        })  # fmt: skip
        return
    say(f"{plural(len(written), 'image')} ({plural(len(class_ids), 'class', 'classes')} x {num}, "
        f"seed {seed}) -> {output}/", quiet)  # fmt: skip
    if grid is not None:
        say(f"grid -> {grid}", quiet)
    if save_tokens is not None:
        say(f"tokens -> {save_tokens}", quiet)
