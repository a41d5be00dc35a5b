"""`titok info`: token files made by `titok encode`, and the golden checkpoints."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from titok_cli.cli.app import app

from .conftest import GENERATOR_CASES, TOKENIZER_CASES

TOK = "tok_vq_legacy_tiny"


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "80"})


def info_json(path) -> dict:
    result = run("info", path, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, golden, images_dir):
    """A token file written by `titok encode` of the photos plus one bad file."""
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(images_dir, src / "photos")
    (src / "photos" / "zz_empty.png").write_bytes(b"")
    out = tmp_path_factory.mktemp("out") / "tokens.npz"
    result = run("encode", src / "photos", "-o", out, "--model", golden / TOK, "--device", "cpu", "-j", "0", "-q")
    assert result.exit_code == 1  # the empty file failed, the photos were written
    return out, sorted(p.name for p in images_dir.iterdir() if p.is_file())


def test_token_file_json_matches_the_file(encoded, golden):
    out, names = encoded
    desc = info_json(out)
    arr = np.load(out)["tokens"]
    assert desc["kind"] == "tokens" and desc["rows"] == len(names) == len(arr)
    assert desc["shape"] == list(arr.shape) and desc["dtype"] == str(arr.dtype)
    assert desc["id_range"] == [int(arr.min()), int(arr.max())]
    config = json.loads((golden / TOK / "config.json").read_text())["model"]["vq_model"]
    assert desc["model"]["num_tokens"] == config["num_latent_tokens"] == arr.shape[1]
    assert desc["model"]["codebook_size"] == config["codebook_size"]
    assert desc["model"]["local_path"] == str((golden / TOK).resolve())
    assert desc["names"] == {"count": len(names), "first": names[0], "last": names[-1]}
    assert desc["labels"] is None
    assert [f["path"] for f in desc["failures"]] == ["zz_empty.png"]


def test_token_file_text_at_80_columns(encoded):
    out, names = encoded
    result = run("info", out)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    text = result.stdout
    assert f"rows        {len(names)}" in text and "zz_empty.png: empty file" in text
    assert "failed      1" in text and names[0] in text


def test_labels_from_wnid_folders(tmp_path, golden, images_dir):
    photos = sorted(p for p in images_dir.iterdir() if p.is_file())[:3]
    for wnid, photo in zip(("n01440764", "n01440764", "n01443537"), photos):
        (tmp_path / "in" / wnid).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, tmp_path / "in" / wnid / photo.name)
    out = tmp_path / "labelled.npz"
    assert run("encode", tmp_path / "in", "-o", out, "--model", golden / TOK, "--device", "cpu", "-q").exit_code == 0
    labels = np.load(out)["labels"]
    desc = info_json(out)
    assert desc["labels"]["labelled_rows"] == len(labels) == 3
    assert desc["labels"]["classes"] == len(set(labels.tolist())) == 2
    assert desc["labels"]["most_common"][0] == [int(np.bincount(labels).argmax()), 2]


@pytest.mark.parametrize("case", TOKENIZER_CASES + GENERATOR_CASES)
def test_golden_checkpoints(golden, case):
    import titok_cli

    folder = golden / case
    desc = info_json(folder)
    state = load_file(str(folder / "model.safetensors"))
    assert desc["weights"]["parameters"] == sum(t.numel() for t in state.values())
    assert desc["weights"]["tensors"] == len(state)
    kind = "generator" if case.startswith("gen") else "tokenizer"
    assert desc["kind"] == kind
    if kind == "tokenizer":
        model = titok_cli.load_tokenizer(folder)
        assert desc["architecture"]["tokens"] == model.num_tokens
        assert desc["architecture"]["quantize_mode"] == model.config.quantize_mode
        assert "sampling" not in desc
    else:
        model = titok_cli.load_generator(folder)
        assert desc["architecture"]["tokens"] == model.num_tokens
        sampling = {k: v for k, v in desc["sampling"].items() if k != "source"}
        assert sampling == model.config.sampling_defaults()  # what `titok sample` would use
        assert "no official sampling settings" in desc["sampling"]["source"]
    assert desc["provenance"]["registry_name"] is None


def test_pickled_weights_count_like_safetensors(golden):
    bin_desc = info_json(golden / TOK / "pytorch_model.bin")
    st_desc = info_json(golden / TOK)
    assert bin_desc["weights"]["parameters"] == st_desc["weights"]["parameters"]
    assert bin_desc["architecture"] == st_desc["architecture"]  # config.json beside the file


def test_hub_cache_snapshot_names_repo_and_revision(hub_cache):
    snapshots = hub_cache / "models--golden--gen_vit_tiny" / "snapshots"
    (snapshot,) = list(snapshots.iterdir())
    desc = info_json(snapshot)
    assert desc["provenance"]["repo"] == "golden/gen_vit_tiny"
    assert desc["provenance"]["revision"] == snapshot.name
    assert (hub_cache / "models--golden--gen_vit_tiny" / "refs" / "main").read_text() == snapshot.name


def test_hub_ids_and_repo_folders_resolve_to_the_cached_snapshot(hub_cache):
    repo_dir = hub_cache / "models--golden--tok_vq_tiny"
    snapshot = repo_dir / "snapshots" / (repo_dir / "refs" / "main").read_text()
    by_id, by_folder = info_json("golden/tok_vq_tiny"), info_json(repo_dir)
    assert by_id["path"] == by_folder["path"] == str(snapshot)
    assert by_id["provenance"]["repo"] == "golden/tok_vq_tiny" and by_id["kind"] == "tokenizer"


def test_registry_name_without_cached_weights():
    from titok_cli import registry

    entry = registry.get("titok-l32-gen")
    desc = info_json("titok-l32-gen")  # the test cache is empty and offline
    assert desc["weights"] is None and desc["parameters_from_registry"] == entry.num_parameters
    assert desc["architecture"]["tokens"] == entry.generator_config.image_seq_len
    assert {k: desc["sampling"][k] for k in entry.sampling} == entry.sampling
    assert desc["provenance"]["repo"] == entry.repo
    unknown = run("info", "no-such-model")
    assert unknown.exit_code == 2 and "no-such-model" in unknown.stderr


def test_registry_config_gets_the_official_sampling_settings(tmp_path):
    from titok_cli import registry

    entry = registry.get("titok-b64-gen")
    (tmp_path / "config.json").write_text(json.dumps(entry.config))
    desc = info_json(tmp_path)
    assert desc["kind"] == "generator" and desc["weights"] is None
    assert desc["provenance"]["registry_name"] == "titok-b64-gen"
    assert {k: desc["sampling"][k] for k in entry.sampling} == entry.sampling
    assert "titok-b64-gen" in desc["sampling"]["source"]


def test_bad_inputs_are_one_line_errors(tmp_path, golden):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    result = run("info", text)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "notes.txt" in result.stderr
    missing = run("info", tmp_path / "nope.npy")
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    broken = tmp_path / "ckpt"
    broken.mkdir()
    shutil.copy(golden / TOK / "config.json", broken / "config.json")
    (broken / "model.safetensors").write_bytes((golden / TOK / "model.safetensors").read_bytes()[:6])
    result = run("info", broken)
    assert result.exit_code == 1 and "model.safetensors" in result.stderr and "Traceback" not in result.output
    bad_tokens = tmp_path / "bad.npy"
    np.save(bad_tokens, np.zeros((2, 3, 4, 5), dtype=np.uint8))
    result = run("info", bad_tokens)
    assert result.exit_code == 1 and "bad.npy" in result.stderr


def test_library_needs_neither_typer_nor_rich_nor_torch(golden):
    code = (
        "import sys, titok_cli.describe as d, titok_cli.describe_text as t; "
        f"lines = t.summary(d.describe({str(golden / 'gen_vit_tiny')!r})); "
        "print(len(lines), sorted(m for m in ('typer', 'rich', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    count, loaded = out.stdout.split(" ", 1)
    assert int(count) >= 5 and loaded.strip() == "[]"


def test_demo_cache_and_broken_folder_of_make_demo(tmp_path, monkeypatch, golden):
    import importlib.util

    from PIL import Image

    from .conftest import ROOT, SHARED

    spec = importlib.util.spec_from_file_location("make_demo", ROOT / "examples" / "make_demo.py")
    make_demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_demo)  # type: ignore[union-attr]
    demo = tmp_path / "demo"
    snapshots = make_demo.build(demo, SHARED)
    with pytest.raises(SystemExit):  # a folder it did not make is never deleted
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "keep.txt").write_text("x")
        make_demo.build(tmp_path / "mine", SHARED)

    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(demo / "hf-cache"), raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(demo / "hf-cache"))
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache("golden/gen_vit_tiny", "model.safetensors")
    assert cached == str(snapshots["gen_vit_tiny"] / "model.safetensors")
    assert open(cached, "rb").read() == (golden / "gen_vit_tiny" / "model.safetensors").read_bytes()
    assert info_json("golden/gen_vit_tiny")["provenance"]["revision"] == snapshots["gen_vit_tiny"].name

    broken = demo / "broken"
    assert (broken / "empty.jpg").stat().st_size == 0
    with Image.open(broken / "camera16.png") as im:
        assert im.mode.startswith("I;16") or im.mode == "I"
        assert np.asarray(im).max() > 255
    with Image.open(broken / "cmyk.jpg") as im:
        assert im.mode == "CMYK"
    with pytest.raises(OSError), Image.open(broken / "truncated.jpg") as im:
        im.load()
    with pytest.raises(OSError):
        Image.open(broken / "notes.png")
