"""The `titok` command as a whole: help, version, exit codes, error messages, import cost, models."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from titok_cli.cli.app import app

COMMANDS = ("models", "download", "encode", "decode", "sample", "bench")


def run(*args, **kwargs):
    return CliRunner().invoke(app, [str(a) for a in args], **kwargs)


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("TITOK_DEBUG", raising=False)


def test_help_does_not_import_torch():
    code = "import sys, titok_cli.cli.app; print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_lists_every_command_with_an_example():
    result = run("--help")
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.stdout
    for name in COMMANDS:
        sub = run(name, "--help")
        assert sub.exit_code == 0, sub.output
        assert "Example:" in sub.stdout and f"titok {name}" in sub.stdout


def test_version():
    from titok_cli import __version__

    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"titok-cli {__version__}"


def test_usage_errors_exit_2():
    assert run("encode", "--no-such-flag").exit_code == 2
    assert run("nonsense").exit_code == 2
    # our own usage checks (bad suffix, bad dtype) are exit 2 as well, one line, no traceback
    bad_suffix = run("encode", "x.png", "-o", "tokens.txt")
    assert bad_suffix.exit_code == 2
    assert bad_suffix.stderr.strip() == "error: output tokens.txt must end with .npy, .npz or .tar"
    bad_dtype = run("decode", "t.npy", "-o", "out", "--dtype", "float8")
    assert bad_dtype.exit_code == 2 and "unknown dtype" in bad_dtype.stderr


def test_failure_is_one_line_without_traceback(tmp_path):
    result = run("decode", tmp_path / "missing.npy", "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_debug_env_shows_the_exception(tmp_path):
    result = run("decode", tmp_path / "missing.npy", "-o", tmp_path / "out", env={"TITOK_DEBUG": "1"})
    assert result.exit_code == 1
    assert type(result.exception).__name__ == "TokenFileError"


def test_unexpected_errors_are_mapped_too(monkeypatch):
    import titok_cli.cli.models as models_cmd

    def boom():
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(models_cmd, "model_rows", boom)
    result = run("models")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: unexpected ZeroDivisionError: division by zero (set TITOK_DEBUG=1 to see the traceback)"
    )


def test_no_color_is_honoured(tmp_path):
    colour = re.compile(r"\x1b\[[0-9;]*3[0-9]m")  # any foreground colour escape
    args = ("decode", tmp_path / "missing.npy", "-o", tmp_path / "out")
    forced = run(*args, env={"FORCE_COLOR": "1", "NO_COLOR": None})
    assert colour.search(forced.stderr)
    plain = run(*args, env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert not colour.search(plain.stderr) and "error:" in plain.stderr


def test_models_table_and_json(hub_cache):
    from titok_cli import registry

    table = run("models")
    assert table.exit_code == 0
    for name in registry.available_models():
        assert name in table.stdout
    assert "architecture only" in table.stdout

    result = run("models", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    by_name = {r["name"]: r for r in rows}
    assert list(by_name) == registry.available_models()
    l32 = by_name["titok-l32"]
    assert (l32["kind"], l32["tokens"], l32["codebook"], l32["repo"]) == (
        "tokenizer", 32, 4096, "yucornetto/tokenizer_titok_l32_imagenet")  # fmt: skip
    assert l32["parameters"] == 641054735 and l32["cached"] is False and l32["architecture_only"] is False
    assert by_name["titok-l64-512"]["architecture_only"] is True and by_name["titok-l64-512"]["resolution"] == 512
    assert by_name["titok-ll32-vae"]["codebook"] is None


def test_models_sees_the_local_cache(hub_cache, golden):
    from tests.conftest import make_hub_cache

    make_hub_cache(hub_cache, "yucornetto/tokenizer_titok_s128_imagenet", golden / "tok_vq_tiny",
                   ("config.json", "model.safetensors"))  # fmt: skip
    rows = {r["name"]: r for r in json.loads(run("models", "--json").stdout)}
    assert rows["titok-s128"]["cached"] is True
    assert rows["titok-l32"]["cached"] is False


def test_ctrl_c_in_a_command_is_one_line_exit_130(monkeypatch):
    import titok_cli.cli.models as models_cmd

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(models_cmd, "model_rows", interrupted)
    result = run("models")
    assert result.exit_code == 130
    assert result.stderr.strip() == "error: interrupted"  # `models` has nothing to resume


def test_unknown_model_is_a_usage_error(tmp_path):
    result = run("encode", tmp_path / "x.png", "-o", tmp_path / "t.npy", "-m", "titok-nonexistent", "--device", "cpu")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "titok-nonexistent" in result.stderr
