"""`titok eval`: the sub-app of the evaluation commands (TEMPORARY stand-in for h-gen's tests)."""

from __future__ import annotations

import typer

from . import eval_gen
from .help_format import TitokGroup

eval_app = typer.Typer(name="eval", cls=TitokGroup, no_args_is_help=True, rich_markup_mode="markdown",
                       help="Measure a tokenizer or a generator the way the papers do.")  # fmt: skip
eval_gen.register(eval_app)
