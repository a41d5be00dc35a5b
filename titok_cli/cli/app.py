"""The `titok` command: this file only registers the commands (one module per command)."""

from __future__ import annotations

from typing import Annotated

import typer

from . import bench, decode, download, encode, finetune, info, models, sample, train
from . import eval as eval_cli
from .common import HelpOpt
from .failures import guarded, run_app

app = typer.Typer(
    name="titok",
    help=(
        "TiTok, the 1-D image tokenizer: a 256x256 image in 32 tokens and back, and class-conditional "
        "generation.\n\n"
        "Example:  titok encode photos/ -o tokens.npy && titok decode tokens.npy -o decoded/"
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    add_completion=True,  # titok --install-completion / --show-completion
    pretty_exceptions_enable=False,  # TITOK_DEBUG=1 shows a plain Python traceback
    context_settings={"help_option_names": ["-h", "--help"]},
)

for name, command in (
    ("models", models.models),
    ("download", download.download),
    ("encode", encode.encode),
    ("decode", decode.decode),
    ("sample", sample.sample),
    ("bench", bench.bench),
    ("info", info.info),
    ("train", train.train),
    ("finetune", finetune.finetune),
):
    app.command(name)(guarded(command))
app.add_typer(eval_cli.eval_app, name="eval")


def _show_version(value: bool) -> None:
    if value:
        from titok_cli import __version__

        typer.echo(f"titok-cli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", metavar="", callback=_show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    _help: HelpOpt = False,
) -> None:
    # The app's help text is set on typer.Typer above; this callback only adds --version.
    return None


def main() -> None:
    """Console-script entry point."""
    # Reuse freed tensor memory instead of re-faulting it on every batch; the benchmarks in
    # benchmarks/ are measured with it. TITOK_DEFAULT_MALLOC=1 opts out (titok_cli/runtime.py).
    from titok_cli.allocator import tune_unless_disabled

    tune_unless_disabled()
    run_app(app, prog_name="titok")
