"""Help pages in the style of pip and `hf`: `-b N`, `--strict`, `INPUT...`.

Typer (0.2x) prints its raw type labels in help: `<bool>` beside every flag, `<list[str]>`,
`<int range> [x>=1]`, and `{INPUT}...` for a required argument in the usage line. The
command classes below keep Typer's layout and drop those labels: flags show no value, an
option shows its metavar (or a plain word for its type), arguments show only their name,
and the usage line reads `titok encode [OPTIONS] INPUT...`. Ranges are still enforced; a
value out of range gets Typer's usage error.
"""

from __future__ import annotations

import re
from typing import Any

from typer.core import TyperCommand, TyperGroup

# Typer's type label (without <>) -> the word shown instead when an option has no metavar.
_TYPE_WORDS = {"int": "N", "int range": "N", "float": "X", "float range": "X", "str": "TEXT",
               "path": "PATH", "dir": "DIR", "file": "FILE"}  # fmt: skip


def _word_for_type(param: Any, ctx: Any) -> str:
    """A clean metavar from Typer's `<type>` label (`<int range>` -> `N`)."""
    display = getattr(param, "display_type", None)
    label = display(ctx) if callable(display) else ""
    label = str(label or "").strip("<>")
    inner = re.fullmatch(r"list\[(.*)\]", label)
    if inner:
        label = inner.group(1)
    return _TYPE_WORDS.get(label, label.upper() or "VALUE")


def tidy_params(params: list[Any], ctx: Any) -> None:
    """Give every parameter a clean help entry (idempotent; changes display only)."""
    for param in params:
        if getattr(param, "param_type_name", "") == "argument":
            param.display_type_rich = lambda ctx: None  # the name column says it already
        elif getattr(param, "is_flag", False) and not getattr(param, "count", False):
            param.metavar = ""  # a flag takes no value
        elif param.metavar is None:
            param.metavar = _word_for_type(param, ctx)
        if hasattr(param, "_get_number_range_help_str"):
            param._get_number_range_help_str = lambda: None  # no `[x>=1]`; still validated


def _plain_usage(pieces: list[str]) -> list[str]:
    """`{INPUT}...` -> `INPUT...` (optional ones keep their brackets: `[NAME]...`)."""
    return [re.sub(r"^\{(.*)\}", r"\1", piece) for piece in pieces]


class TitokCommand(TyperCommand):
    """A command whose help shows clean metavars (see the module docstring)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        tidy_params(self.get_params(ctx), ctx)
        return super().format_help(ctx, formatter)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return _plain_usage(super().collect_usage_pieces(ctx))


class TitokGroup(TyperGroup):
    """The `titok` group: the same clean help for its own options (--version, completion)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        tidy_params(self.get_params(ctx), ctx)
        return super().format_help(ctx, formatter)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return _plain_usage(super().collect_usage_pieces(ctx))
