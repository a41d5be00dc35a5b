"""`--help` of every command at 80 columns: no raw Typer markers, one long spelling per option,
the same defaults for shared options, and working shell completion."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from titok_cli.cli.app import app

COMMANDS = ("models", "download", "encode", "decode", "sample", "bench", "info", "train", "finetune")
# What Typer prints when a parameter has no clean metavar: `<bool>`, `<list[str]>`, `<int range>`,
# `<path>`, `[x>=1]` ranges, and `{INPUT}` for a required argument in the usage line.
RAW_MARKERS = re.compile(r"<[a-z][\w\[\], |.]*>|\[x?[<>]=|<=x|\{[A-Z_]+\}")


def help_text(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert result.exit_code == 0, result.output
    return result.stdout


def command_params(name: str | None) -> list:
    group = typer.main.get_command(app)
    cmd = group if name is None else group.commands[name]  # type: ignore[attr-defined]
    return [p for p in cmd.params if getattr(p, "param_type_name", "") == "option"]


def test_the_marker_pattern_catches_what_typer_prints_by_default():
    plain = typer.Typer()

    @plain.command()
    def f(items: list[str], flag: bool = False, n: int = typer.Option(1, min=1)) -> None:  # noqa: B008
        pass

    raw = CliRunner().invoke(plain, ["--help"], env={"COLUMNS": "80"}).stdout
    assert RAW_MARKERS.search(raw), raw  # so the assertions below can fail


# What Typer (0.29) prints whatever public options are given, so the tests below tolerate it in
# exactly these places: the `{NAME}` of a required argument on the usage line, the type label of
# an argument in its panel (an argument has no metavar for its type), and `<bool>` beside the two
# completion options that Typer itself adds to the root.
ARGUMENT_LABELS = re.compile(r"^(│\s+\*?\s+[A-Z_]+\s+)(<list\[str\]>|<path>)")
COMPLETION_FLAGS = re.compile(r"^(│ --(install|show)-completion\s+)<bool>")


def without_typer_labels(text: str, name: str | None) -> str:
    """The help text less the markers listed above (and only those)."""
    group = typer.main.get_command(app)
    cmd = group if name is None else group.commands[name]  # type: ignore[attr-defined]
    required = {p.metavar or p.name.upper() for p in cmd.params if p.param_type_name == "argument" and p.required}
    lines = []
    for line in text.splitlines():
        if line.lstrip().startswith("Usage: titok"):
            for arg in required:
                line = line.replace("{" + arg + "}", arg)
        line = ARGUMENT_LABELS.sub(r"\1", line)
        lines.append(COMPLETION_FLAGS.sub(r"\1", line) if name is None else line)
    return "\n".join(lines)


@pytest.mark.parametrize("name", (None,) + COMMANDS)
def test_help_has_no_raw_markers_and_fits_80_columns(name):
    text = help_text(*([name] if name else []))
    found = RAW_MARKERS.findall(without_typer_labels(text, name))
    assert not found, f"raw markers {found} in:\n{text}"
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "Usage: titok" in text


@pytest.mark.parametrize("name", (None,) + COMMANDS)
def test_every_option_has_a_metavar(name):
    """A value shows a word (`-b N`), a flag shows nothing: Typer's own labels never appear."""
    group = typer.main.get_command(app)
    cmd = group if name is None else group.commands[name]  # type: ignore[attr-defined]
    typer_own = {"--install-completion", "--show-completion"}
    for param in command_params(name):
        if typer_own.isdisjoint(param.opts):
            assert param.metavar is not None, f"{name} {param.opts} has no metavar"
            if param.is_flag:
                assert param.metavar == "", f"{name} {param.opts}: a flag shows no value"
    assert cmd.get_help_option(typer.Context(cmd)) is None, "Typer's --help shows <bool>"


def test_tolerated_labels_are_only_typers_own():
    """The filter above removes nothing from a clean line and everything it names."""
    usage = " Usage: titok encode [OPTIONS] {INPUT}..."
    assert without_typer_labels(usage, "encode") == " Usage: titok encode [OPTIONS] INPUT..."
    assert "{OUTPUT}" in without_typer_labels(" Usage: titok encode {OUTPUT}", "encode")
    assert "<bool>" in without_typer_labels("│ --strict      <bool>  Stop", "encode")
    assert "<bool>" in without_typer_labels("│ --install-completion   <bool>  x", "encode")


@pytest.mark.parametrize("name", (None,) + COMMANDS)
def test_each_option_has_one_long_spelling(name):
    for param in command_params(name):
        longs = [o for o in param.opts if o.startswith("--")]
        shorts = [o for o in param.opts if not o.startswith("--")]
        assert len(longs) == 1, f"{name} {param.opts}: more than one long name"
        assert len(shorts) <= 1, f"{name} {param.opts}: more than one short name"
        assert len(param.secondary_opts) <= 1  # --annealing/--no-annealing is one option


def test_short_names_mean_the_same_everywhere():
    meaning: dict[str, set[str]] = {}
    for name in COMMANDS:
        for param in command_params(name):
            for short in (o for o in param.opts if not o.startswith("--")):
                meaning.setdefault(short, set()).add(next(o for o in param.opts if o.startswith("--")))
    ambiguous = {s: longs for s, longs in meaning.items() if len(longs) > 1}
    assert not ambiguous, ambiguous


def test_shared_options_have_one_default():
    """--device and --dtype default alike everywhere; -b is 16 wherever it is one number, and a
    command whose batch depends on the device (bench: CPU and GPU differ, issue 9.5) uses the
    shared per-device alias, whose help says so."""
    from titok_cli.cli.common import DeviceBatchOpt

    per_device_help = DeviceBatchOpt.__metadata__[0].help
    defaults: dict[str, set] = {}
    for name in COMMANDS:
        for param in command_params(name):
            if name in ("train", "finetune") and param.opts[0] == "--batch-size":
                assert "Global batch per step" in param.help  # an optimizer batch, not images per forward
                continue
            if param.opts[0] in ("--batch-size", "--device", "--dtype"):
                defaults.setdefault(param.opts[0], set()).add(param.default)
            if param.opts[0] == "--batch-size" and param.default is None:
                assert param.help == per_device_help, f"{name}: -b has no default and no per-device help"
    assert defaults["--batch-size"] <= {16, None} and 16 in defaults["--batch-size"]
    assert "per device" in per_device_help
    assert defaults["--device"] == {"auto"} and defaults["--dtype"] == {"float32"}


def test_workers_default_follows_the_cpus():
    (workers,) = [p for p in command_params("encode") if "--workers" in p.opts]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert workers.default == min(4, cpus)
    flat = " ".join(re.sub("[│╭╮╰╯─]", " ", help_text("encode")).split())
    assert "[default: min(4, CPUs)]" in flat


def test_dropped_alias_is_refused():
    result = CliRunner().invoke(app, ["sample", "--n-per-class", "2", "-c", "1"])
    assert result.exit_code == 2


def test_completion_is_installed_and_completes_commands_and_options():
    root = help_text()
    assert "--install-completion" in root and "--show-completion" in root
    env = {**os.environ, "_TITOK_COMPLETE": "complete_bash", "COMP_WORDS": "titok enc", "COMP_CWORD": "1"}
    code = "from titok_cli.cli.app import app; app(prog_name='titok')"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["encode"], out
    env.update(COMP_WORDS="titok encode --wor", COMP_CWORD="2")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["--workers"], out
    script = CliRunner().invoke(app, ["--show-completion", "bash"])
    assert script.exit_code == 0 and "_TITOK_COMPLETE" in script.stdout
