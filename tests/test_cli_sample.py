"""`titok sample` on the tiny golden generators (10 classes) through an offline Hub cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from titok_cli.cli.app import app

PAIR = ("--model", "golden/gen_vit_tiny", "--tokenizer", "golden/tok_vq_legacy_tiny", "--device", "cpu")


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("TITOK_DEBUG", raising=False)


def test_same_seed_same_png_bytes(hub_cache, tmp_path):
    a = run("sample", "--class", "3", "-n", "3", "--seed", "7", "-o", tmp_path / "a", *PAIR)
    b = run("sample", "--class", "3", "-n", "3", "--seed", "7", "-o", tmp_path / "b", *PAIR)
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["class3_000.png", "class3_001.png", "class3_002.png"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert a.stdout.strip() == f"3 images (1 class x 3, seed 7) -> {tmp_path / 'a'}/"


def test_matches_the_library(hub_cache, tmp_path):
    """Same seed and device: the CLI's tokens are the library's `generate` output under the seed rule."""
    import torch

    import titok_cli
    from titok_cli.seeds import image_seeds

    tokens = tmp_path / "tokens.npy"
    result = run("sample", "-c", "3", "-c", "5", "-n", "2", "--seed", "1", "-o", tmp_path / "s", "--save-tokens",
                 tokens, "--grid", tmp_path / "grid.png", *PAIR)  # fmt: skip
    assert result.exit_code == 0, result.output
    gen = titok_cli.load_generator("golden/gen_vit_tiny")
    expected = gen.generate(torch.tensor([3, 3, 5, 5]), seeds=image_seeds(1, [3, 3, 5, 5]))
    saved = np.load(tokens)
    assert saved.dtype == np.uint8 and np.array_equal(saved, expected.numpy())

    # the saved tokens carry a manifest naming the tokenizer, so decode needs no --model and
    # reproduces exactly the sampled PNGs, under the same names (sample decodes one image at a
    # time on the CPU, so that a picture does not depend on its batch: decode -b 1 does the same)
    dec = run("decode", tokens, "-o", tmp_path / "d", "--device", "cpu", "-b", "1")
    assert dec.exit_code == 0, dec.output
    for name in ["class3_000", "class3_001", "class5_000", "class5_001"]:
        with Image.open(tmp_path / "s" / f"{name}.png") as x, Image.open(tmp_path / "d" / f"{name}.png") as y:
            assert np.array_equal(np.asarray(x), np.asarray(y))
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size[0] > 2 * 64 and grid.size[1] > 2 * 64


def test_sampling_flags_and_json(hub_cache, tmp_path):
    result = run("sample", "-c", "0", "-n", "1", "-o", tmp_path, "--steps", "4", "--guidance-scale", "2",
                 "--guidance-decay", "power-cosine", "--temperature", "0", "--annealing", "--json",
                 "--model", "golden/gen_uvit_tiny", "--tokenizer", "golden/tok_vq_legacy_tiny",
                 "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["sampling"] == {"num_steps": 4, "guidance_scale": 2.0, "guidance_decay": "power-cosine",
                                "guidance_scale_pow": 3.0, "randomize_temperature": 0.0,
                                "softmax_temperature_annealing": True}  # fmt: skip
    assert info["images"] == [str(tmp_path / "class0_000.png")]
    defaults = json.loads(run("sample", "-c", "0", "-n", "1", "-o", tmp_path / "d", "--json", "--model",
                              "golden/gen_uvit_tiny", "--tokenizer", "golden/tok_vq_legacy_tiny",
                              "--device", "cpu").stdout)["sampling"]  # fmt: skip
    assert defaults["num_steps"] == 12  # the generator's own config.json


def test_class_errors(hub_cache, tmp_path):
    by_name = run("sample", "--class", "golden retriever", "-o", tmp_path / "x", *PAIR)
    assert by_name.exit_code == 2
    assert by_name.stderr.strip() == (
        "error: class 'golden retriever': names are ImageNet-1k class names, but this generator has 10 "
        "classes; give a class id 0..9"
    )
    too_big = run("sample", "--class", "10", "-o", tmp_path / "x", *PAIR)
    assert too_big.exit_code == 2 and "out of range" in too_big.stderr and "0..9" in too_big.stderr
    assert not (tmp_path / "x").exists()
    assert run("sample", "-o", tmp_path / "x", *PAIR).exit_code == 2  # --class is required


def test_tokenizer_pairing_errors(hub_cache, tmp_path):
    unknown = run("sample", "-c", "1", "-o", tmp_path, "--model", "golden/gen_vit_tiny", "--device", "cpu")
    assert unknown.exit_code == 2 and "pass --tokenizer" in unknown.stderr
    mismatch = run("sample", "-c", "1", "-o", tmp_path, "--model", "golden/gen_vit_tiny", "--tokenizer",
                   "golden/tok_vq_tiny", "--device", "cpu")  # fmt: skip
    assert mismatch.exit_code == 1 and "codebook" in mismatch.stderr
    offline = run("sample", "-c", "207", "-o", tmp_path, "--device", "cpu")  # titok-l32, not cached
    assert offline.exit_code == 1 and "yucornetto/generator_titok_l32_imagenet" in offline.stderr


def test_imagenet_names_in_file_names():
    from titok_cli.sample_images import file_stem, resolve_classes

    assert resolve_classes(["golden retriever", "207", "tabby cat"], 1000) == [207, 207, 281]
    assert file_stem(207, 0, 1000) == "class207_golden_retriever_000"
    assert file_stem(3, 12, 10) == "class3_012"


def test_fid_archive(hub_cache, tmp_path):
    out = tmp_path / "fid.npz"
    result = run("sample", "--all-classes", "--num", "2", "--npz", out, "-b", "8", "--seed", "3", *PAIR)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"20 images (10 classes x 2, seed 3) -> {out}"
    with np.load(out) as archive:
        assert archive["arr_0"].shape == (20, 64, 64, 3) and archive["arr_0"].dtype == np.uint8
        assert archive["labels"].tolist() == [c for c in range(10) for _ in range(2)]
    both = run("sample", "-c", "1", "--all-classes", "-o", tmp_path / "x", *PAIR)
    assert both.exit_code == 2 and "--all-classes" in both.stderr


def test_generator_without_sampling_settings_gets_the_defaults_and_a_note(hub_cache, golden, tmp_path):
    """Issue 15.2: a config with no sampling settings samples with the documented defaults (the
    GeneratorConfig field defaults) and says so in one line on stderr; -q silences it, and the
    --json document on stdout stays pure."""
    import dataclasses
    import shutil

    from titok_cli.config import GeneratorConfig

    folder = tmp_path / "my-gen"
    shutil.copytree(golden / "gen_vit_tiny", folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["model"]["generator"].pop("num_steps") == 8  # its only sampling setting
    assert not set(GeneratorConfig.SAMPLING_KEYS) & set(config["model"]["generator"])
    (folder / "config.json").write_text(json.dumps(config))
    args = ("-c", "1", "-n", "1", "--model", folder, "--tokenizer", "golden/tok_vq_legacy_tiny", "--device", "cpu")

    plain = run("sample", *args, "-o", tmp_path / "a")
    assert plain.exit_code == 0, plain.output
    lines = plain.stderr.strip().splitlines()
    assert len(lines) == 1, plain.stderr
    assert lines[0].startswith(f"{folder}: no official sampling settings are known")
    assert "documented defaults" in lines[0] and "error" not in lines[0]
    assert "no official" not in plain.stdout

    as_json = run("sample", *args, "-o", tmp_path / "b", "--json")
    assert as_json.exit_code == 0, as_json.output
    documented = {f.name: f.default for f in dataclasses.fields(GeneratorConfig) if f.name in GeneratorConfig.SAMPLING_KEYS}
    assert json.loads(as_json.stdout)["sampling"] == documented  # stdout is the JSON document alone
    assert as_json.stderr.strip() == lines[0]

    quiet = run("sample", *args, "-o", tmp_path / "c", "-q")
    assert quiet.exit_code == 0 and quiet.stderr == "", quiet.stderr
