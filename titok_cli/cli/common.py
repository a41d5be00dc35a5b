"""What every command shares: option aliases, consoles, the one error handler, file helpers.

Nothing here imports torch or the model code at module level, so `titok --help` stays fast;
helpers that need them import inside their bodies.
"""

from __future__ import annotations

import functools
import json
import os
import re
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

EXIT_FAILURE = 1  # a library error: bad file, missing weights, out of memory
EXIT_USAGE = 2  # a flag, name or combination the user can fix (ours and Typer's parser errors)
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report a SIGINT death (128 + 2)

# Commands whose interrupted run picks up where it stopped when repeated (their jobs commit
# scratch state as they go), keyed by command function name, given the command's arguments.
RESUMABLE: dict[str, Callable[[dict[str, Any]], bool]] = {
    "encode": lambda kwargs: True,
    "sample": lambda kwargs: kwargs.get("npz") is not None,
    "recon": lambda kwargs: True,  # titok eval recon
}


def one_line(text: str) -> str:
    return " ".join(str(text).split()) or "(no message)"


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def describe_error(exc: BaseException) -> tuple[int, str]:
    """Exit code and one-line message for an exception that reached the command line."""
    from titok_cli.errors import TitokError

    if isinstance(exc, TitokError):
        return exc.exit_code, one_line(str(exc))
    if is_parser_error(exc):
        return int(getattr(exc, "exit_code", EXIT_USAGE)), parser_error_message(exc)
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return EXIT_FAILURE, "out of memory; try a smaller --batch-size, or --dtype bfloat16"
    if isinstance(exc, OSError):
        if exc.filename is not None and exc.strerror:
            return EXIT_FAILURE, one_line(f"{exc.filename}: {exc.strerror}")
        return EXIT_FAILURE, one_line(str(exc) or type(exc).__name__)
    detail = f": {exc}" if str(exc) else ""
    return EXIT_FAILURE, one_line(f"unexpected {type(exc).__name__}{detail} (set {DEBUG_ENV}=1 to see the traceback)")


def is_parser_error(exc: BaseException) -> bool:
    """Typer's own command-line errors (bad value, unknown option, missing argument, ...).

    Typer >= 0.26 vendors Click privately and its exceptions derive from `typer.TyperException`;
    older Typer raises Click's. Neither is imported: we recognise the class by name.
    """
    return any(cls.__name__ == "ClickException" for cls in type(exc).__mro__)


# Typer's and Click's wording of a numeric range, turned into `must be >= 1` and friends.
_RANGE_WORDS = (
    (re.compile(r"should be greater than or equal to (\S+?)\.?$"), ">="),
    (re.compile(r"should be greater than (\S+?)\.?$"), ">"),
    (re.compile(r"should be less than or equal to (\S+?)\.?$"), "<="),
    (re.compile(r"should be less than (\S+?)\.?$"), "<"),
)
_CLICK_RANGE = re.compile(r"^(\S+) is not in the range (.+?)\.?$")  # Click < 8.2 / Typer < 0.26


def _range_phrase(message: str) -> str | None:
    for pattern, op in _RANGE_WORDS:
        match = pattern.search(message)
        if match:
            return f"must be {op} {match.group(1)}"
    match = _CLICK_RANGE.search(message)
    if match is None:
        return None
    got, text = match.groups()
    one_side = re.fullmatch(r"x(>=|>|<=|<)(\S+)", text)
    both = re.fullmatch(r"(\S+?)<=?x<=?(\S+)", text)
    if one_side:
        return f"must be {one_side.group(1)} {one_side.group(2)} (got {got})"
    if both:
        return f"must be between {both.group(1)} and {both.group(2)} (got {got})"
    return f"must be in the range {text} (got {got})"


def _param_name(param: Any) -> str:
    """`--num` for an option (its first long name), `INPUT` for an argument."""
    opts = [o for o in getattr(param, "opts", []) if o.startswith("--")] or list(getattr(param, "opts", []))
    if getattr(param, "param_type_name", "") == "argument" or not opts:
        metavar = getattr(param, "metavar", None) or getattr(param, "name", "") or "argument"
        return str(metavar).upper()
    return opts[0]


def _sentence(text: str) -> str:
    """A message as a clause after `error: `: first letter lower case, no final period."""
    text = one_line(text).rstrip(".")
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def parser_error_message(exc: BaseException) -> str:
    """One line for Typer's own errors: `--num must be >= 1`, `no such option: --nmu (see 'titok encode -h')`."""
    name = type(exc).__name__
    param = getattr(exc, "param", None)
    raw = one_line(getattr(exc, "message", "") or str(exc))
    if param is not None and name == "BadParameter":
        flag = _param_name(param)
        phrase = _range_phrase(raw)
        return f"{flag} {phrase}" if phrase else f"{flag}: {_sentence(raw)}"
    format_message = getattr(exc, "format_message", None)
    message = _sentence(format_message() if callable(format_message) else raw)
    message = message.replace("'", "") if name == "MissingParameter" else message
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and getattr(exc, "exit_code", 1) == EXIT_USAGE:
        helps = getattr(ctx, "help_option_names", None) or ["--help"]
        message += f" (see '{ctx.command_path} {helps[0]}')"
    return message


def print_error(message: str) -> None:
    """`error: MESSAGE` on stderr, on one line (our message is made one line first)."""
    from rich.text import Text

    err_console().print(Text.assemble(("error: ", "bold red"), one_line(message)), soft_wrap=True)


def interrupted_message(resumable: bool) -> str:
    return "interrupted; rerun the same command to resume" if resumable else "interrupted"


F = TypeVar("F", bound=Callable[..., Any])


def guarded(command: F) -> F:
    """Wrap a command body: library errors become `error: ...` on stderr and an exit code.

    Exit 1 for failures, 2 for usage errors, 130 for Ctrl-C (a one-line message, saying whether
    the command resumes when repeated; the jobs' commit points keep their scratch usable).
    Typer's own exits and usage errors pass through to `run_app`. With TITOK_DEBUG=1 the
    exception propagates and Python prints the traceback.
    """

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except KeyboardInterrupt:
            if _debug():
                raise
            resumable = RESUMABLE.get(getattr(command, "__name__", ""), lambda kw: False)(kwargs)
            print_error(interrupted_message(resumable))
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:  # noqa: BLE001 - this is the single mapping point
            if _debug() or is_parser_error(exc):
                raise
            code, message = describe_error(exc)
            print_error(message)
            raise typer.Exit(code) from None

    return run  # type: ignore[return-value]


def run_app(app: typer.Typer, args: list[str] | None = None, prog_name: str = "titok") -> None:
    """Run the app as the `titok` command and exit; Typer's parser errors become one line, exit 2.

    Typer's standalone mode would print its boxed usage panel; with `standalone_mode=False` its
    exceptions come here instead (public API only). Exits with the command's code: 0, 1, 2 or 130.
    """
    try:
        code = app(args=args, prog_name=prog_name, standalone_mode=False)
    except KeyboardInterrupt:  # outside any command body (while parsing): nothing to resume
        print_error(interrupted_message(False))
        sys.exit(EXIT_INTERRUPTED)
    except typer.Abort:
        print_error("aborted")
        sys.exit(EXIT_FAILURE)
    except Exception as exc:
        if not is_parser_error(exc):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `titok`: Typer has shown the help
            text = getattr(exc, "message", "") or ""
            if text.strip():
                sys.stderr.write(text.rstrip("\n") + "\n")
            sys.exit(int(getattr(exc, "exit_code", EXIT_USAGE)))
        if _debug():
            raise
        exit_code, message = describe_error(exc)
        print_error(message)
        sys.exit(exit_code)
    sys.exit(code if isinstance(code, int) and not isinstance(code, bool) else 0)


def usage_error(message: str) -> Exception:
    """A UsageError (exit 2) for a command body to raise: `raise usage_error("--num must be >= 1")`."""
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


# -- output names ----------------------------------------------------------------------------


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
