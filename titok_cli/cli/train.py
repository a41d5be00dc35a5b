"""`titok train`: token files from `titok encode` -> a trained class-conditional MaskGIT generator.

The work is the library's (`titok_cli.training.generator_job.train_generator`); this module parses
flags, shows progress and prints the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .common import DeviceOpt, HelpOpt, JsonOpt, QuietOpt, at_least, draws_progress, print_json, progress_bar, say

# An interrupted run resumes from its last checkpoint when the same command is repeated.

def train(
    tokens: Annotated[list[str], typer.Argument(metavar="TOKENS", help="Token files written by `titok encode` "
                                                 "(.npy/.npz/.tar with labels), all from one tokenizer.",
                                                 show_default=False)],  # fmt: skip
    output: Annotated[Path, typer.Option("--output", "-o", metavar="RUN_DIR", show_default=False,
                                         help="Run folder: checkpoints/, metrics.jsonl and final/.")],  # fmt: skip
    generator: Annotated[str, typer.Option("--generator", "-g", metavar="NAME|CONFIG|FOLDER", show_default=False,
                                           help="Architecture: a registry name (titok-l32-gen), an official "
                                           "config.json, or a folder (its weights start the run).")],  # fmt: skip
    init: Annotated[str | None, typer.Option("--init", metavar="CKPT", help="Start from these weights: a folder, "
                                             "weights file, registry name or training checkpoint.")] = None,  # fmt: skip
    steps: Annotated[int, typer.Option("--steps", metavar="N", callback=at_least(1), help="Optimizer steps.")] = 1000,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", metavar="N", callback=at_least(1),
                                            help="Global batch per step, split over ranks and --grad-accum.")] = 64,  # fmt: skip
    grad_accum: Annotated[int, typer.Option("--grad-accum", metavar="N", callback=at_least(1),
                                            help="Micro-batches accumulated per step.")] = 1,  # fmt: skip
    lr: Annotated[float, typer.Option("--lr", metavar="LR", help="Peak learning rate (AdamW).")] = 2e-4,
    end_lr: Annotated[float, typer.Option("--end-lr", metavar="LR", help="Learning rate at the last step.")] = 1e-5,
    warmup_steps: Annotated[int | None, typer.Option("--warmup-steps", metavar="N",
                                                     help="Linear warm-up [default: 2% of --steps].")] = None,  # fmt: skip
    weight_decay: Annotated[float, typer.Option("--weight-decay", metavar="W")] = 0.03,
    max_grad_norm: Annotated[float, typer.Option("--max-grad-norm", metavar="N",
                                                 help="Gradient clipping; 0 turns it off.")] = 1.0,  # fmt: skip
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Weights, data order, masks, dropout.")] = 42,
    precision: Annotated[str, typer.Option("--precision", metavar="P",
                                           help="float32, or bf16 (autocast on CPU and CUDA).")] = "float32",  # fmt: skip
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", metavar="N", callback=at_least(1))] = 500,
    keep: Annotated[int, typer.Option("--keep", metavar="N", callback=at_least(1), help="Checkpoints kept.")] = 2,
    deterministic: Annotated[bool, typer.Option("--deterministic", metavar="", help="Deterministic kernels only.")] = False,
    compile_model: Annotated[bool, typer.Option("--compile", metavar="", help="torch.compile the model (slow start, faster "
                                                "steps).")] = False,  # fmt: skip
    sample_every: Annotated[int | None, typer.Option("--sample-every", metavar="N", callback=at_least(1),
                                                     help="Write RUN_DIR/samples/step-N.png every N steps.")] = None,  # fmt: skip
    tokenizer: Annotated[str | None, typer.Option("--tokenizer", metavar="NAME", help="Decodes the sample grids "
                                                  "[default: the tokenizer the token files record].")] = None,  # fmt: skip
    no_hflip: Annotated[bool, typer.Option("--no-hflip", metavar="", help="Ignore the mirrored copies of "
                                           "`titok encode --hflip` (read by default, each row's original or "
                                           "mirror by a seeded coin per epoch).")] = False,  # fmt: skip
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    json_output: JsonOpt = False,
    _help: HelpOpt = False,
) -> None:
    """Train a class-conditional MaskGIT generator on tokens, with the official objective.

    Rerun the same command to resume from the last checkpoint; start it under torchrun for
    DistributedDataParallel. The result, RUN_DIR/final, loads like any generator:
    titok sample --model run/final --tokenizer titok-l32 --class 207.

    Example:  titok train tokens.npz -o run/ --generator titok-l32-gen --steps 20000
    """
    from titok_cli.training.generator_job import train_generator
    from titok_cli.training.generator_settings import TrainSettings

    settings = TrainSettings(steps=steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr, end_lr=end_lr,
                             warmup_steps=warmup_steps, weight_decay=weight_decay,
                             max_grad_norm=max_grad_norm or None, seed=seed, precision=precision,
                             device=device, checkpoint_every=checkpoint_every, keep_checkpoints=keep,
                             deterministic=deterministic, compile=compile_model,
                             sample_every=sample_every, hflip=not no_hflip)  # fmt: skip
    settings.check()
    quiet = quiet or json_output

    with progress_bar("training", steps, quiet) as bar:
        # while the bar is drawn, notes go through its console (above it); otherwise to stdout as before
        tell = bar.echo if draws_progress(quiet) else (lambda text: say(text, quiet))

        def started(info: dict[str, Any]) -> None:
            if info["resumed_from"] >= info["steps"]:
                tell(f"already trained ({info['steps']} steps); writing final/ again from the last checkpoint")
            elif info["resumed_from"]:
                tell(f"resuming at step {info['resumed_from']} of {info['steps']}")
            mirrored = " (each also mirrored)" if info["mirrored"] else ""
            tell(f"{info['rows']} rows{mirrored}, global batch {info['global_batch']} on {info['world_size']} x {info['device']}")

        def stepped(m: dict[str, Any]) -> None:
            bar.status(f"loss {m['loss']:.3f} acc {m['masked_accuracy']:.2f}")  # lr: in metrics.jsonl
            bar(m["step"])

        result = train_generator(tokens, output, generator, settings=settings, init=init, tokenizer=tokenizer,
                                 on_start=started, on_step=stepped)  # fmt: skip
    if result.rank != 0:
        return
    if json_output:
        print_json(result.as_json())
        return
    last = result.last
    if last:
        say(f"step {last['step']}: loss {last['loss']:.4f}, masked accuracy {last['masked_accuracy']:.3f}", quiet)
    say(f"generator -> {result.final}", quiet)
