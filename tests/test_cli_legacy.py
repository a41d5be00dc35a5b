"""`--model FILE.bin` and `--preset NAME` on the command line (issue 9.2): the official single-file
checkpoints are plain pickled state dicts; the registry knows their file names, and `--preset`
names the architecture of one whose name it does not know."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from titok_cli.cli.app import app

from .conftest import legacy_copy

CPU = ("--device", "cpu")


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("TITOK_DEBUG", raising=False)


@pytest.fixture()
def photos(tmp_path, images_dir):
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in sorted(p for p in images_dir.iterdir() if p.is_file())[:3]:
        shutil.copy(photo, folder / photo.name)
    return folder


def test_renamed_file_with_preset_encodes_and_decodes_like_the_folder(golden, tmp_path, photos, tiny_preset):
    renamed = legacy_copy(golden / "tok_vq_legacy_tiny", tmp_path / "w", "my_tokenizer.bin")
    ref = run("encode", photos, "-o", tmp_path / "ref.npz", "-m", golden / "tok_vq_legacy_tiny", *CPU, "-q")
    assert ref.exit_code == 0, ref.output

    without = run("encode", photos, "-o", tmp_path / "x.npz", "-m", renamed, *CPU)
    assert without.exit_code == 1 and "needs a preset" in without.stderr, without.output
    assert not (tmp_path / "x.npz").exists()

    out = tmp_path / "t.npz"
    done = run("encode", photos, "-o", out, "-m", renamed, "--preset", "titok-tiny-test", *CPU, "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["model"]["preset"] == "titok-tiny-test"
    assert np.array_equal(np.load(out)["tokens"], np.load(tmp_path / "ref.npz")["tokens"])

    # the manifest records the file and its preset: decode needs neither --model nor --preset
    assert run("decode", out, "-o", tmp_path / "d", *CPU, "-q").exit_code == 0
    assert run("decode", tmp_path / "ref.npz", "-o", tmp_path / "r", *CPU, "-q").exit_code == 0
    names = sorted(p.name for p in (tmp_path / "r").iterdir())
    assert names and names == sorted(p.name for p in (tmp_path / "d").iterdir())
    for name in names:
        assert (tmp_path / "d" / name).read_bytes() == (tmp_path / "r" / name).read_bytes()


def test_official_file_name_needs_no_preset(golden, tmp_path, photos, tiny_preset):
    lone = legacy_copy(golden / "tok_vq_legacy_tiny", tmp_path / "w", "tokenizer_titok_tiny.bin")
    done = run("encode", photos, "-o", tmp_path / "t.npy", "-m", lone, *CPU, "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["model"]["preset"] == "titok-tiny-test"


def test_sample_from_a_generator_file_with_preset(golden, tmp_path, tiny_preset):
    gen = legacy_copy(golden / "gen_vit_tiny", tmp_path / "w", "weights.bin")
    args = ("sample", "-c", "2", "-n", "2", "--tokenizer", golden / "tok_vq_legacy_tiny", *CPU)
    ref = run(*args, "-m", golden / "gen_vit_tiny", "-o", tmp_path / "ref")
    lone = run(*args, "-m", gen, "--preset", "titok-tiny-test-gen", "-o", tmp_path / "lone")
    assert ref.exit_code == 0 and lone.exit_code == 0, ref.output + lone.output
    names = sorted(p.name for p in (tmp_path / "ref").iterdir())
    assert len(names) == 2
    for name in names:
        assert (tmp_path / "lone" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()


@pytest.mark.parametrize(
    ("preset", "words"),
    [
        ("titok-tiny-tset", "preset 'titok-tiny-tset' is not a known model; did you mean titok-tiny-test"),
        ("nothing-like-it", "presets: "),
    ],
)
def test_unknown_preset_is_a_usage_error_with_suggestions(golden, tmp_path, photos, tiny_preset, preset, words):
    renamed = legacy_copy(golden / "tok_vq_legacy_tiny", tmp_path / "w", "renamed.bin")
    result = run("encode", photos, "-o", tmp_path / "t.npy", "-m", renamed, "--preset", preset, *CPU)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.stderr
    assert "titok-tiny-test" in lines[0] and not (tmp_path / "t.npy").exists()


def test_preset_with_something_that_is_not_a_lone_file(golden, tmp_path, photos, tiny_preset):
    folder = run("encode", photos, "-o", tmp_path / "t.npy", "-m", golden / "tok_vq_legacy_tiny",
                 "--preset", "titok-tiny-test", *CPU)  # fmt: skip
    assert folder.exit_code == 2 and "has its own config.json" in folder.stderr, folder.output
    hub = run("sample", "-c", "1", "-m", "titok-l32", "--preset", "titok-l32", "-o", tmp_path / "s", *CPU)
    assert hub.exit_code == 2 and "a preset is only for a single weights file" in hub.stderr, hub.output
    repo = run("sample", "-c", "1", "-m", "yucornetto/generator_titok_l32_imagenet", "--preset", "titok-l32",
               "-o", tmp_path / "s", *CPU)  # fmt: skip
    assert repo.exit_code == 2 and "a preset is only for a single weights file" in repo.stderr, repo.output
    assert not (tmp_path / "t.npy").exists() and not (tmp_path / "s").exists()
