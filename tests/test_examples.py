"""The example scripts run as the README shows (on the golden tiny checkpoints)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> str:
    res = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


@pytest.mark.slow
def test_example_scripts(golden, tmp_path):
    tok, gen = str(golden / "tok_vq_legacy_tiny"), str(golden / "gen_vit_tiny")
    out = run("examples/roundtrip.py", "examples/images/chelsea.png", "--model", tok, "-o", str(tmp_path / "r.png"))
    assert "8 tokens" in out and Image.open(tmp_path / "r.png").size == (128, 64)  # original | reconstruction
    out = run("examples/encode_folder.py", "examples/images", "-o", str(tmp_path / "t.npz"), "--model", tok)
    with np.load(tmp_path / "t.npz") as f:
        assert f["tokens"].shape == (3, 8) and list(f["names"]) == ["chelsea.png", "coffee.png", "rocket.jpg"]
    run("examples/sample_class.py", "--class", "3", "-n", "4", "--model", gen, "--tokenizer", tok,
        "-o", str(tmp_path / "s.png"))  # fmt: skip
    assert (tmp_path / "s.png").stat().st_size > 0
    out = run("examples/finetune_compare.py", "examples/images", "--before", tok, "--after", tok,
              "-o", str(tmp_path / "c.png"))  # fmt: skip
    assert Image.open(tmp_path / "c.png").size == (3 * 64 + 4, 3 * 64 + 4)  # 3 images x (original | before | after)
    assert "chelsea.png: PSNR" in out and "mean gain +0.00 dB" in out  # the same model twice: no gain


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "examples").glob("*.py") if p.name != "make_demo.py"))
def test_examples_use_only_the_public_api(script):
    """Example scripts are what users copy: they reach titok_cli only through its public names."""
    import ast

    import titok_cli

    tree = ast.parse((ROOT / "examples" / script).read_text())
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("titok_cli"):
            assert node.module == "titok_cli", f"{script} imports from {node.module}"
            used |= {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            assert all(a.name == "titok_cli" or not a.name.startswith("titok_cli") for a in node.names), script
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "titok_cli":
            used.add(node.attr)
    assert used, f"{script} does not use titok_cli"
    assert used <= set(titok_cli.__all__), f"{script} uses non-public names {sorted(used - set(titok_cli.__all__))}"
    for name in used:
        getattr(titok_cli, name)  # every public name really resolves
