"""What every command shares: option aliases, consoles and message helpers (errors: failures.py).

Nothing here imports torch or the model code at module level, so `titok --help` stays fast;
helpers that need them import inside their bodies.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from rich.console import Console

# -- option aliases, declared once ----------------------------------------------------------


def at_least(low: float) -> Callable[[Any], Any]:
    """An option callback that refuses values below `low` (`--batch-size must be >= 1`, exit 2).

    A callback rather than Typer's `min=`, whose help adds a raw `[x>=1]` beside the metavar.
    """

    def check(value: Any) -> Any:
        if value is not None and value < low:
            raise typer.BadParameter(f"must be >= {low} (got {value})")
        return value

    return check


def _show_help(ctx: typer.Context, value: bool) -> None:
    if value:
        typer.echo(ctx.get_help(), color=ctx.color)
        raise typer.Exit()


# Our own -h/--help (Typer's shows `<bool>` beside it); not passed to the command.
HelpOpt = Annotated[
    bool,
    typer.Option("--help", "-h", metavar="", is_eager=True, expose_value=False, callback=_show_help,
                 help="Show this message and exit."),
]  # fmt: skip
DeviceOpt = Annotated[
    str, typer.Option("--device", metavar="DEVICE", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")
]
DtypeOpt = Annotated[str, typer.Option("--dtype", metavar="DTYPE", help="float32, bfloat16 or float16.")]
BatchOpt = Annotated[
    int, typer.Option("--batch-size", "-b", metavar="N", callback=at_least(1), help="Images per forward pass.")
]
# For a command whose batch is chosen per device (bench): the same option, no fixed default.
DeviceBatchOpt = Annotated[
    int | None,
    typer.Option("--batch-size", "-b", metavar="N", callback=at_least(1), show_default=False,
                 help="Images per forward pass [default: per device: 8 on a GPU; on the CPU 2, or 1 above 256x256]."),
]  # fmt: skip
# timm's scripts default to 4 loader workers; fewer where this process may use fewer CPUs.
DEFAULT_WORKERS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
WorkersOpt = Annotated[
    int,
    typer.Option("--workers", "-j", metavar="N", callback=at_least(0), show_default=False,
                 help="Processes that decode and crop images (0: in this process) [default: min(4, CPUs)]."),
]  # fmt: skip
PresetOpt = Annotated[
    str | None,
    typer.Option("--preset", metavar="NAME", show_default=False,
                 help="Architecture of a lone weights file given as --model, e.g. titok-l32 [default: from the "
                 "official file name, such as tokenizer_titok_l32.bin]."),
]  # fmt: skip
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", metavar="", help="Print only what scripts need.")]
JsonOpt = Annotated[bool, typer.Option("--json", metavar="", help="Print the result as JSON on stdout.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", metavar="", help="Replace what is already in the output.")]
ExifOpt = Annotated[
    bool, typer.Option("--exif-transpose", metavar="", help="Apply EXIF orientation first (the official pipeline ignores it).")
]
GridOpt = Annotated[
    Path | None, typer.Option("--grid", metavar="FILE.png", help="Also write a contact sheet of all images (PNG).")
]


# -- consoles --------------------------------------------------------------------------------


def _console(stderr: bool) -> "Console":
    """A fresh rich console on the current stdout/stderr (rich itself honours NO_COLOR)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None
    if not stream.isatty() and "COLUMNS" not in os.environ:
        width = 160  # piped output: do not squeeze tables into 80 columns
    return Console(stderr=stderr, width=width, highlight=False, emoji=False)


def out_console() -> "Console":
    return _console(stderr=False)


def err_console() -> "Console":
    return _console(stderr=True)


def say(message: str, quiet: bool = False) -> None:
    """A line for people on stdout (skipped with --quiet). No rich markup is interpreted."""
    if not quiet:
        out_console().print(message, markup=False, soft_wrap=True)


def note(message: str, quiet: bool = False) -> None:
    """A status line for people on stderr (skipped with --quiet)."""
    if not quiet:
        err_console().print(message, markup=False, soft_wrap=True, style="dim")


def warn(message: str) -> None:
    """A problem that does not stop the command, on stderr (never silenced)."""
    from rich.text import Text

    err_console().print(Text.assemble(("warning: ", "bold yellow"), one_line(message)), soft_wrap=True)


def print_json(data: Any) -> None:
    """Machine output: plain JSON on stdout, no colour, no wrapping."""
    sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# -- messages --------------------------------------------------------------------------------


def one_line(text: str) -> str:
    return " ".join(str(text).split()) or "(no message)"


def usage_error(message: str) -> Exception:
    """A UsageError (exit 2) for a command body to raise: `raise usage_error("--num must be >= 1")`."""
    from titok_cli.errors import UsageError

    return UsageError(message)


# -- progress --------------------------------------------------------------------------------


def draws_progress(quiet: bool) -> bool:
    """Whether `progress_bar` would draw: not quiet, and stderr is a terminal."""
    return not quiet and err_console().is_terminal


class ProgressHandle:
    """What `progress_bar` yields: `handle(done, total)` moves the bar; `handle.status(text)` sets a
    short text shown in it (train's loss); `handle.echo(text)` prints a line above it (through the
    bar's own console, so the bar is redrawn below, not broken)."""

    def __init__(self, update: Callable[[int, int | None], None], console: "Console",
                 status: Callable[[str], None] = lambda text: None) -> None:  # fmt: skip
        self._update, self._console, self.status = update, console, status

    def __call__(self, done: int, total: int | None = None) -> None:
        self._update(done, total)

    def echo(self, text: str, style: str | None = None) -> None:
        self._console.print(text, markup=False, highlight=False, soft_wrap=True, style=style)


@contextmanager
def progress_bar(description: str, total: int | None, quiet: bool = False) -> Iterator[ProgressHandle]:
    """A bar on stderr with count, rate and ETA, drawn only when stderr is a terminal."""
    console = err_console()
    if not draws_progress(quiet):
        yield ProgressHandle(lambda done, total=None: None, console)
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)  # fmt: skip
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Items per second, as pip and tqdm show it."""

        def render(self, task) -> Text:  # type: ignore[no-untyped-def]
            return Text("" if task.speed is None else f"{task.speed:,.1f}/s", style="progress.data.speed")

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
        RateColumn(), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task(description, total=total, status="")

        def update(done: int, new_total: int | None = None) -> None:
            if new_total is not None:
                bar.update(task, total=new_total)
            bar.update(task, completed=done)

        yield ProgressHandle(update, bar.console, lambda text: bar.update(task, status=text))


@contextmanager
def rank_job_reporting(description: str, hide: bool) -> Iterator[dict[str, Any]]:
    """The bar and the notes of a resumable per-rank job (encode, eval recon), as the keyword
    arguments `on_resume`, `on_failure` and `progress` of its library call."""
    with progress_bar(description, None, hide) as update:

        def resuming(done: int, total: int | None) -> None:
            if not hide:
                update.echo(f"resuming: {done} of {total} done" if total is not None else f"resuming: {done} "
                            "inputs done", style="dim")  # fmt: skip

        yield {"on_resume": resuming, "on_failure": lambda path, reason: update.echo(f"{path}: {reason}"),
               "progress": update if draws_progress(hide) else None}  # no bar: no counting walk of the tree


# -- device, dtype ---------------------------------------------------------------------------


def device_and_dtype(device: str, dtype: str) -> tuple["torch.device", "torch.dtype"]:
    """Parse --device/--dtype (UsageError, exit 2, for bad values)."""
    from titok_cli.devices import parse_dtype, pick_device

    return pick_device(device), parse_dtype(dtype)


# -- words -----------------------------------------------------------------------------------


def plural(n: int, word: str, many: str | None = None) -> str:
    """`1 image`, `3 images` (`many` for irregular plurals)."""
    return f"{n} {word if n == 1 else many or word + 's'}"


def human_count(n: int | None) -> str:
    """641054735 -> '641.1M'."""
    if n is None:
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)
