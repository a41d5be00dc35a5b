"""`titok eval`: the sub-app of the evaluation commands (one module per command family)."""

from __future__ import annotations

import typer

from . import eval_gen

eval_app = typer.Typer(name="eval", no_args_is_help=True, rich_markup_mode="markdown",
                       context_settings={"help_option_names": ["-h", "--help"]},
                       help="Measure a tokenizer or a generator the way the papers do.")  # fmt: skip
eval_gen.register(eval_app)
