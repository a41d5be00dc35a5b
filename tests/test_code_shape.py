"""The layout rules of the architecture issue, kept by a test: small library modules, thin commands."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "titok_cli"
MAX_MODULE_LINES = 350
MAX_COMMAND_BODY = 60  # lines of a command's body, after its signature and docstring


def test_no_library_module_is_longer_than_350_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}  # fmt: skip
    assert not long, f"split these modules: {long}"


def test_command_bodies_stay_thin():
    from titok_cli.cli.app import app

    commands = {c.callback.__name__ for c in app.registered_commands}
    for group in app.registered_groups:
        commands |= {c.callback.__name__ for c in group.typer_instance.registered_commands}
    assert {"encode", "train", "finetune"} <= commands
    bodies = {}
    for path in (PACKAGE / "cli").glob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef) and node.name in commands:
                first = node.body[1] if isinstance(node.body[0], ast.Expr) else node.body[0]  # after the docstring
                bodies[f"{path.name}:{node.name}"] = node.end_lineno - first.lineno + 1
    assert len(bodies) == len(commands), (sorted(commands), bodies)  # every command found
    too_long = {k: v for k, v in bodies.items() if v > MAX_COMMAND_BODY}
    assert not too_long, f"move the work into the library: {too_long}"
