"""The one place where exceptions become `error: ...` lines and exit codes.

`guarded` wraps every command body (library errors, Ctrl-C); `run_app` runs the `titok` group
and turns Typer's own parser errors into the same one-line form. Exit 1 for failures, 2 for
usage errors, 130 for Ctrl-C.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from .common import err_console, one_line

EXIT_FAILURE = 1  # a library error: bad file, missing weights, out of memory
EXIT_USAGE = 2  # a flag, name or combination the user can fix (ours and Typer's parser errors)
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report a SIGINT death (128 + 2)

# Commands whose interrupted run picks up where it stopped when repeated (their jobs commit
# scratch state as they go), keyed by command function name, given the command's arguments.
RESUMABLE: dict[str, Callable[[dict[str, Any]], bool]] = {
    "encode": lambda kwargs: True,
    "sample": lambda kwargs: kwargs.get("npz") is not None,
    "train": lambda kwargs: True,
    "finetune": lambda kwargs: True,
    "recon": lambda kwargs: True,  # titok eval recon
    "eval_sweep": lambda kwargs: True,  # finished grid points are recorded, an unfinished one resumes
}


def _debug() -> bool:
    """TITOK_DEBUG, read live (titok_cli/runtime.py); a value it cannot parse counts as asked for."""
    from titok_cli import runtime
    from titok_cli.errors import UsageError

    try:
        return runtime.debug()
    except UsageError:
        return True


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
    return EXIT_FAILURE, one_line(f"unexpected {type(exc).__name__}{detail} (set TITOK_DEBUG=1 to see the traceback)")


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
        phrase = raw if raw.startswith("must be ") else _range_phrase(raw)
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
