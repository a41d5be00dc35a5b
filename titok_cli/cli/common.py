"""What every command shares: option aliases, consoles, the one error handler, file helpers.

Nothing here imports torch or the model code at module level, so `titok --help` stays fast;
helpers that need them import inside their bodies.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    from rich.console import Console

DEBUG_ENV = "TITOK_DEBUG"

# -- option aliases, declared once ----------------------------------------------------------

DeviceOpt = Annotated[
    str, typer.Option("--device", metavar="DEVICE", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")
]
DtypeOpt = Annotated[str, typer.Option("--dtype", metavar="DTYPE", help="float32, bfloat16 or float16.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", "-b", metavar="N", min=1, help="Images per forward pass.")]
# timm's scripts default to 4 loader workers; fewer where this process may use fewer CPUs.
DEFAULT_WORKERS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
WorkersOpt = Annotated[
    int,
    typer.Option("--workers", "-j", metavar="N", min=0, show_default=False,
                 help="Processes that decode and crop images (0: in this process) [default: min(4, CPUs)]."),
]  # fmt: skip
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only what scripts need.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
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


# -- errors: the one place where exceptions become messages and exit codes -----------------


def one_line(text: str) -> str:
    return " ".join(str(text).split()) or "(no message)"


def describe_error(exc: BaseException) -> tuple[int, str]:
    """Exit code and one-line message for an exception that reached the command line."""
    from titok_cli.errors import TitokError

    if isinstance(exc, TitokError):
        return exc.exit_code, one_line(str(exc))
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return 1, "out of memory; try a smaller --batch-size, or --dtype bfloat16"
    if isinstance(exc, OSError):
        if exc.filename is not None and exc.strerror:
            return 1, one_line(f"{exc.filename}: {exc.strerror}")
        return 1, one_line(str(exc) or type(exc).__name__)
    detail = f": {exc}" if str(exc) else ""
    return 1, one_line(f"unexpected {type(exc).__name__}{detail} (set {DEBUG_ENV}=1 to see the traceback)")


def print_error(message: str) -> None:
    from rich.text import Text

    err_console().print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)


F = TypeVar("F", bound=Callable[..., Any])


def guarded(command: F) -> F:
    """Wrap a command body: library errors become `error: ...` on stderr and an exit code.

    Exit 1 for failures, 2 for usage errors; Typer's own exits and usage errors pass through.
    With TITOK_DEBUG=1 the exception propagates and Python prints the traceback.
    """

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except KeyboardInterrupt:
            if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
                raise
            print_error("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:  # noqa: BLE001 - this is the single mapping point
            if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
                raise
            code, message = describe_error(exc)
            print_error(message)
            raise typer.Exit(code) from None

    return run  # type: ignore[return-value]


def usage_error(message: str) -> Exception:
    from titok_cli.errors import UsageError

    return UsageError(message)


# -- progress --------------------------------------------------------------------------------


def draws_progress(quiet: bool) -> bool:
    """Whether `progress_bar` would draw: not quiet, and stderr is a terminal."""
    return not quiet and err_console().is_terminal


@contextmanager
def progress_bar(
    description: str, total: int | None, quiet: bool = False
) -> Iterator[Callable[[int, int | None], None]]:
    """Yield `update(done, total)`; draws a bar on stderr only when stderr is a terminal."""
    console = err_console()
    if not draws_progress(quiet):
        yield lambda done, total=None: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task(description, total=total)

        def update(done: int, new_total: int | None = None) -> None:
            if new_total is not None:
                bar.update(task, total=new_total)
            bar.update(task, completed=done)

        yield update


# -- device, dtype ---------------------------------------------------------------------------


def device_and_dtype(device: str, dtype: str) -> tuple["torch.device", "torch.dtype"]:
    """Parse --device/--dtype (UsageError, exit 2, for bad values)."""
    from titok_cli.devices import parse_dtype, pick_device

    return pick_device(device), parse_dtype(dtype)


# -- writing images --------------------------------------------------------------------------


def atomic_write(path: Path, write: Callable[[Any], None], suffix: str = ".tmp") -> None:
    """Call write(binary file) on a temporary file beside `path`, then rename it into place."""
    from titok_cli.token_file import atomic_path

    with atomic_path(path, suffix, durable=False) as tmp, open(tmp, "wb") as fh:
        write(fh)


def save_png(array: "np.ndarray", path: Path) -> None:
    """uint8 [H,W,3] -> PNG at `path`, written atomically."""
    from PIL import Image

    image = Image.fromarray(array, mode="RGB") if array.ndim == 3 else Image.fromarray(array)
    atomic_write(path, lambda fh: image.save(fh, format="PNG"))


class PngWriter:
    """Write PNGs on background threads while the model works on the next batch.

    PNG compression releases the GIL, so a couple of threads keep up with the device. At most
    `max_pending` images wait in memory; the first failed write is raised on exit.
    """

    def __init__(self, threads: int = 2, max_pending: int = 64) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="png")
        self._pending: list[Any] = []
        self._max = max_pending

    def submit(self, array: "np.ndarray", path: Path) -> None:
        self._pending.append(self._pool.submit(save_png, array.copy(), path))
        while len(self._pending) > self._max:
            self._pending.pop(0).result()

    def __enter__(self) -> "PngWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def contact_sheet(images: "np.ndarray", columns: int | None = None, gap: int = 2) -> "np.ndarray":
    """uint8 [N,H,W,3] -> one uint8 image, a near-square grid with `gap`-pixel white borders."""
    import math

    import numpy as np

    n, h, w, c = images.shape
    cols = columns or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    sheet = np.full((rows * h + (rows + 1) * gap, cols * w + (cols + 1) * gap, c), 255, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        top, left = gap + r * (h + gap), gap + q * (w + gap)
        sheet[top : top + h, left : left + w] = images[i]
    return sheet


def check_output_file(path: Path, suffixes: tuple[str, ...], what: str) -> None:
    """Refuse (exit 2) an output file name with the wrong suffix, or one that is a folder."""
    if path.suffix.lower() not in suffixes:
        choices = ", ".join(suffixes[:-1]) + " or " + suffixes[-1] if len(suffixes) > 1 else suffixes[0]
        raise usage_error(f"{what} {path} must end with {choices}")
    if path.is_dir():
        raise usage_error(f"{what} {path} is a folder")


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
