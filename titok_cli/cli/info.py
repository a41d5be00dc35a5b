"""`titok info`: what a token file or a checkpoint holds, without running a model."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Annotated

import typer

from .common import HelpOpt, JsonOpt, out_console, print_json, say


def info(
    path: Annotated[
        Path,
        typer.Argument(metavar="FILE", help="Token file (.npy, .npz, .tar), checkpoint folder, config.json or "
                       "weights file (.safetensors, .bin).", show_default=False),
    ],  # fmt: skip
    json_output: JsonOpt = False,
    _help: HelpOpt = False,
) -> None:
    """Describe a token file or a checkpoint without running a model.

    Token file: shape, dtype, model, rows, labels and failed inputs (read with its manifest).
    Checkpoint: architecture, parameter count (from the weights header; no tensor is loaded),
    sampling defaults of a generator, and provenance (registry name, Hub repo, revision).

    Example:  titok info tokens.npy
    """
    from titok_cli.describe import describe
    from titok_cli.describe_text import summary

    desc = describe(path)
    if json_output:
        print_json(desc)
        return
    lines = summary(desc)
    indent = max(len(label) for label, _ in lines) + 2
    width = max(40, out_console().width - indent)
    for label, value in lines:
        wrapped = textwrap.wrap(value, width, break_on_hyphens=False, break_long_words=False) or [""]
        say(label.ljust(indent) + ("\n" + " " * indent).join(wrapped))
