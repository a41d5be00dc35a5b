"""`titok models` at 80 columns: every name whole, the cached column kept, "-" for architecture-only rows."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from titok_cli import registry
from titok_cli.cli.app import app

from .conftest import make_hub_cache


def _table(columns: int) -> list[str]:
    result = CliRunner().invoke(app, ["models"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def _row(lines: list[str], name: str) -> list[str]:
    line = next(x for x in lines if x.startswith("│ " + name + " "))
    return [cell.strip() for cell in line.strip("│").split("│")]


def test_models_fit_80_columns_and_say_what_is_cached(hub_cache, golden):
    make_hub_cache(hub_cache, "yucornetto/tokenizer_titok_b64_imagenet", golden / "tok_vq_legacy_tiny",
                   ("config.json", "model.safetensors"))  # fmt: skip
    lines = _table(80)
    assert max(len(x) for x in lines) <= 80
    header = [c.strip() for c in next(x for x in lines if "name" in x).strip("┃").split("┃")]
    assert header == ["name", "kind", "res", "tokens", "codes", "params", "cached"]
    for entry in registry.all_entries():
        cells = _row(lines, entry.name)  # every name appears whole on one row
        assert len(cells) == len(header)
        expected = "-" if entry.architecture_only else ("yes" if entry.name == "titok-b64" else "no")
        assert cells[-1] == expected, (entry.name, cells)
    assert _row(lines, "titok-bl64-vae")[1:5] == ["tok VAE", "256", "64", "-"]  # no codebook
    assert _row(lines, "titok-s128-gen")[1] == "gen UViT"


def test_wide_terminals_and_json_show_the_hub_repo():
    wide = _table(140)
    assert "Hub repo" in wide[1] and "yucornetto/tokenizer_titok_l32_imagenet" in _row(wide, "titok-l32")
    assert _row(wide, "titok-l64-512")[-2:] == ["-", "architecture only (no weights)"]
    rows = json.loads(CliRunner().invoke(app, ["models", "--json"]).stdout)
    assert [r["name"] for r in rows] == registry.available_models()
    assert rows[0]["repo"] == "yucornetto/tokenizer_titok_l32_imagenet"
