"""`titok finetune`: images -> a released tokenizer adapted to them (by default its decoder side).

The work is the library's (`titok_cli.training.tokenizer_job.finetune_tokenizer`); this module parses
flags, shows progress and prints the before/after table of the held-out metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .common import (DeviceOpt, HelpOpt, JsonOpt, QuietOpt, at_least, draws_progress, out_console, print_json,
                     progress_bar, say, warn)  # fmt: skip

# An interrupted run resumes from its last checkpoint when the same command is repeated.
_PARTS_HELP = ("Parts that learn, comma-separated: encoder, quantizer, decoder, pixel_decoder "
               "[default: decoder and pixel_decoder, so existing token ids stay valid].")  # fmt: skip


def finetune(
    images: Annotated[list[str], typer.Argument(metavar="IMAGES", help="Training images: folders, files or "
                                                "webdataset .tar shards.", show_default=False)],  # fmt: skip
    output: Annotated[Path, typer.Option("--output", "-o", metavar="RUN_DIR", show_default=False,
                                         help="Run folder: checkpoints/, metrics.jsonl, heldout/ and final/.")],  # fmt: skip
    model: Annotated[str, typer.Option("--model", "-m", metavar="NAME", help="Tokenizer to start from: registry "
                                       "name, Hub repo id or folder.")] = "titok-l32",  # fmt: skip
    train_parts: Annotated[list[str] | None, typer.Option("--train", metavar="PARTS", help=_PARTS_HELP,
                                                          show_default=False)] = None,  # fmt: skip
    heldout: Annotated[list[str] | None, typer.Option("--heldout", metavar="DIR", show_default=False,
                                                      help="Held-out images, measured at the start, every "
                                                      "--eval-every steps and at the end.")] = None,  # fmt: skip
    steps: Annotated[int, typer.Option("--steps", metavar="N", callback=at_least(1), help="Optimizer steps.")] = 2000,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", metavar="N", callback=at_least(1),
                                            help="Global batch per step, split over ranks and --grad-accum.")] = 32,  # fmt: skip
    grad_accum: Annotated[int, typer.Option("--grad-accum", metavar="N", callback=at_least(1),
                                            help="Micro-batches accumulated per step.")] = 1,  # fmt: skip
    lr: Annotated[float, typer.Option("--lr", metavar="LR", help="Peak learning rate (AdamW).")] = 1e-4,
    end_lr: Annotated[float, typer.Option("--end-lr", metavar="LR", help="Learning rate at the last step.")] = 1e-5,
    warmup_steps: Annotated[int | None, typer.Option("--warmup-steps", metavar="N",
                                                     help="Linear warm-up [default: 1% of --steps].")] = None,  # fmt: skip
    weight_decay: Annotated[float, typer.Option("--weight-decay", metavar="W")] = 1e-4,
    max_grad_norm: Annotated[float, typer.Option("--max-grad-norm", metavar="N",
                                                 help="Gradient clipping; 0 turns it off.")] = 1.0,  # fmt: skip
    reconstruction: Annotated[str, typer.Option("--reconstruction", metavar="L", help="Pixel loss: l1 or l2.")] = "l2",
    perceptual: Annotated[str, typer.Option("--perceptual", metavar="NAME", help="Perceptual loss: lpips, convnext_s or "
                                            "lpips-convnext_s (official names); auto: the model's official recipe "
                                            "(convnext_s for two-stage models, lpips-convnext_s for single-stage).")] = "auto",
    perceptual_weight: Annotated[float | None, typer.Option("--perceptual-weight", metavar="W", show_default=False,
                                                            help="Perceptual loss weight; 0 turns it off [default: the "
                                                            "official 0.1 for convnext_s, 1.1 for lpips-convnext_s, "
                                                            "1.0 for lpips].")] = None,  # fmt: skip
    gan_weight: Annotated[float | None, typer.Option("--gan-weight", metavar="W", show_default=False,
                                                     help="Discriminator loss weight; 0: no GAN [default: the "
                                                     "official 0.01 for two-stage models, 0.1 for single-stage].")] = None,
    gan_start: Annotated[int | None, typer.Option("--gan-start", metavar="N", callback=at_least(0), show_default=False,
                                                  help="Step at which the GAN loss starts [default: the official "
                                                  "20000 for two-stage models, 200000 for single-stage].")] = None,
    lpips: Annotated[str | None, typer.Option("--lpips", metavar="DIR", help="Folder holding the LPIPS weights "
                                              "[default: the cache].")] = None,  # fmt: skip
    convnext: Annotated[str | None, typer.Option("--convnext", metavar="PTH", help="torchvision's ConvNeXt-S weights "
                                                 "(convnext_small-0c510722.pth) [default: the cache].")] = None,
    inception: Annotated[str | None, typer.Option("--inception", metavar="PTH", help="FID Inception weights: "
                                                  "adds rFID to the held-out metrics.")] = None,  # fmt: skip
    eval_every: Annotated[int | None, typer.Option("--eval-every", metavar="N", callback=at_least(1),
                                                   help="Measure the held-out images every N steps.")] = None,  # fmt: skip
    crop_scale: Annotated[float | None, typer.Option("--crop-scale", metavar="S", help="Random-resized crops of "
                                                     "S..1 of each image's area (aspect 3/4..4/3) instead of the "
                                                     "official resize-and-crop; both flip half the time.")] = None,  # fmt: skip
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Data order, crops, discriminator.")] = 42,
    precision: Annotated[str, typer.Option("--precision", metavar="P",
                                           help="float32, or bf16 (autocast on CPU and CUDA).")] = "float32",  # fmt: skip
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", metavar="N", callback=at_least(1))] = 500,
    keep: Annotated[int, typer.Option("--keep", metavar="N", callback=at_least(1), help="Checkpoints kept.")] = 2,
    deterministic: Annotated[bool, typer.Option("--deterministic", metavar="", help="Deterministic kernels only.")] = False,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
    _help: HelpOpt = False,
) -> None:
    """Fine-tune a tokenizer on your own images (official stage-2 losses), keeping its token format.

    By default only the decoder side learns, so token files written before still decode. Rerun
    the same command to resume; start it under torchrun for several processes. The result,
    RUN_DIR/final, loads like any tokenizer: titok encode photos/ --model run/final -o t.npy.

    Example:  titok finetune faces/ --heldout faces-val/ -o run/ --model titok-l32 --steps 5000
    """
    from titok_cli.training.tokenizer_job import finetune_tokenizer
    from titok_cli.training.tokenizer_losses import LossSettings
    from titok_cli.training.tokenizer_settings import FinetuneSettings

    settings = FinetuneSettings(steps=steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr, end_lr=end_lr,
                                warmup_steps=warmup_steps, weight_decay=weight_decay, max_grad_norm=max_grad_norm or None,
                                seed=seed, precision=precision, train=tuple(train_parts) if train_parts else None,
                                device=device, checkpoint_every=checkpoint_every, keep_checkpoints=keep,
                                eval_every=eval_every, deterministic=deterministic, crop_scale=crop_scale)  # fmt: skip
    losses = LossSettings(reconstruction=reconstruction, perceptual=perceptual, perceptual_weight=perceptual_weight,
                          discriminator_weight=gan_weight, discriminator_start=gan_start)  # fmt: skip
    settings.check()
    losses.check()
    quiet = quiet or json_output

    with progress_bar("fine-tuning", steps, quiet) as bar:
        tell = bar.echo if draws_progress(quiet) else (lambda text: say(text, quiet))

        def started(info: dict[str, Any]) -> None:
            if info["ids_change"]:
                warn("the encoder side learns: images get other token ids than before, so token files written "
                     "with the starting model no longer match the fine-tuned one")  # fmt: skip
            if info["resumed_from"]:
                tell(f"resuming at step {info['resumed_from']} of {info['steps']}")
            tell(f"{info['images']} images, global batch {info['global_batch']} on {info['world_size']} x "
                 f"{info['device']}; training {', '.join(info['trained'])}")  # fmt: skip
            tell(f"crops {info['crop']}; {_perceptual_line(info, lpips, convnext)}"
                 f"; discriminator {'new, from step ' + str(info['gan_start']) if info['gan'] else 'off'}"
                 + (f" (--gan-start {info['gan_start']} is past the last step)" if info["gan_past_end"] else ""))

        def stepped(m: dict[str, Any]) -> None:
            bar.status(f"loss {m['loss']:.4f}")  # the loss parts: in metrics.jsonl
            bar(m["step"])

        result = finetune_tokenizer(images, output, model, settings=settings, losses=losses, heldout=heldout,
                                    lpips_weights=lpips, inception_weights=inception, convnext_weights=convnext,
                                    on_start=started,
                                    on_step=stepped)  # fmt: skip
    if result.rank != 0:
        return
    if json_output:
        print_json(result.as_json())
        return
    if result.before is not None and result.after is not None:
        _print_table(result.before, result.after, quiet)
    say(f"tokenizer -> {result.final}", quiet)


def _perceptual_line(info: dict[str, Any], lpips: str | None, convnext: str | None) -> str:
    """'perceptual convnext_s x 0.1 (convnext_small-0c510722.pth from DIR)': the loss and its files."""
    from titok_cli.quality.weights import cache_dir

    if info["perceptual"] is None:
        return "perceptual loss off"
    found = info["perceptual_files"]
    where = {"lpips": lpips if lpips is not None else str(cache_dir()),
             "convnext": str(Path(convnext).parent) if convnext is not None else str(cache_dir())}  # fmt: skip
    files = "; ".join(f"{' + '.join(w['file'] for w in found[k])} from {where[k]}" for k in ("lpips", "convnext") if k in found)
    return f"perceptual {info['perceptual']} x {info['perceptual_weight']:g} ({files})"


def _print_table(before: dict[str, Any], after: dict[str, Any], quiet: bool) -> None:
    """Held-out metrics of the starting checkpoint and the fine-tuned weights, side by side."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, title=f"held-out images ({before['images']})")
    for name, justify in (("metric", "left"), ("before", "right"), (f"after {after['step']} steps", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for key, label, digits in (("psnr", "PSNR (dB)", 3), ("ssim", "SSIM", 4), ("lpips", "LPIPS (VGG)", 4),
                               ("rfid", "rFID", 3)):  # fmt: skip
        if before.get(key) is not None and after.get(key) is not None:
            table.add_row(label, f"{before[key]:.{digits}f}", f"{after[key]:.{digits}f}")
    if not quiet:
        out_console().print(table)
