"""The README tells the truth: its transcripts come from examples/make_demo.py, its snippets run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DEMO = re.compile(r"<!-- demo: (?P<name>[^>]+?) -->\n(?P<body>.*?)<!-- /demo -->", re.S)


def _transcript_sections() -> dict[str, str]:
    text = (ROOT / "examples" / "transcripts.md").read_text(encoding="utf-8")
    parts = re.split(r"^### (.+)\n\n", text, flags=re.M)
    return {parts[i]: parts[i + 1].rstrip("\n") + "\n" for i in range(1, len(parts), 2)}


def test_readme_transcripts_are_the_scripts_output():
    sections = _transcript_sections()
    blocks = {m["name"]: m["body"] for m in DEMO.finditer(README)}
    assert set(blocks) == set(sections), "every demo section appears once in README, and only those"
    for name, body in blocks.items():
        assert body == sections[name], f"README block {name!r} differs from examples/transcripts.md: rerun make_demo.py"
        assert body.startswith("```\n$ ") and body.endswith("```\n")


def test_readme_has_no_unfilled_placeholders():
    assert not re.findall(r"\b[A-Z]{4,}_[A-Z_]{3,}\b(?<!HF_HUB_OFFLINE)", re.sub(r"`[^`]*`", "", README))


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, re.S)


def test_library_snippets_run_as_written(golden, images_dir, tmp_path, monkeypatch):
    """The README's Python blocks, with the golden checkpoints standing in for the registry names."""
    import titok_cli

    first, second = _python_blocks()[:2]
    swaps = {'load_tokenizer("titok-l32")': f'load_tokenizer("{golden / "tok_vq_legacy_tiny"}")',
             'load_generator("titok-l32")': f'load_generator("{golden / "gen_vit_tiny"}")',
             '"cat.jpg"': f'"{images_dir / "chelsea.png"}"',
             "torch.tensor([207])": "torch.tensor([3])"}  # fmt: skip (the tiny generator has 10 classes)
    for old, new in swaps.items():
        assert old in first, old
        first = first.replace(old, new)
    scope: dict = {}
    exec(compile(first, "README.md", "exec"), scope)
    assert tuple(scope["ids"].shape) == (1, 8) and scope["images"].shape == (1, 64, 64, 3)
    tok = scope["tok"]

    monkeypatch.chdir(tmp_path)
    titok_cli.encode_files([images_dir], "tokens.npy", tok)
    out = {}
    exec(compile(second.replace("print(", "out['printed'] = ("), "README.md", "exec"), {**scope, "out": out})
    names, labels, model = out["printed"]
    assert names == ["ILSVRC2012_val_00008636.png", "ILSVRC2012_val_00010240.png", "astronaut.png"]
    assert labels is None and model == "tok_vq_legacy_tiny" or model.endswith("tok_vq_legacy_tiny")


@pytest.mark.parametrize("command", ['pip install -e ".[test]"', "python -m pytest -q"])
def test_setup_commands_are_the_ones_ci_runs(command):
    setup = README.split("## Set-up", 1)[1].split("##", 1)[0]
    assert command in setup
    assert command in (ROOT / ".ci" / "run").read_text()
