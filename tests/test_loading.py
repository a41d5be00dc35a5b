"""load_tokenizer / load_generator from folders, files, an offline Hub cache; strict and safe loading."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import titok_cli
from titok_cli.errors import CheckpointError, ConfigError, HubError, UnknownModelError

from .conftest import make_hub_cache


def golden_tokens(golden: Path, case: str) -> tuple[torch.Tensor, torch.Tensor]:
    io_ = load_file(golden / case / "io.safetensors")
    return io_["images"], io_["tokens"].squeeze(1)


@pytest.mark.parametrize("case", ["tok_vq_legacy_tiny", "tok_vq_tiny", "tok_vae_tiny"])
def test_tokenizer_loads_from_plain_folder(golden, case):
    tok = titok_cli.load_tokenizer(golden / case)
    io_ = load_file(golden / case / "io.safetensors")
    out = tok.encode(io_["images"])
    if tok.is_vae:
        assert (out - io_["mean"].squeeze(2)).abs().max() <= 1e-5
    else:
        assert torch.equal(out, io_["tokens"].squeeze(1))
    assert tok.source.local_path == str((golden / case).resolve())


def test_legacy_bin_loads_with_weights_only(golden):
    images, tokens = golden_tokens(golden, "tok_vq_legacy_tiny")
    tok = titok_cli.load_tokenizer(golden / "tok_vq_legacy_tiny" / "pytorch_model.bin")  # config.json beside it
    assert torch.equal(tok.encode(images), tokens)


def test_bin_only_folder_and_file_plus_preset(golden, tmp_path, monkeypatch):
    folder = tmp_path / "bin_only"
    folder.mkdir()
    shutil.copy(golden / "tok_vq_legacy_tiny" / "config.json", folder)
    shutil.copy(golden / "tok_vq_legacy_tiny" / "pytorch_model.bin", folder)
    images, tokens = golden_tokens(golden, "tok_vq_legacy_tiny")
    assert torch.equal(titok_cli.load_tokenizer(folder).encode(images), tokens)

    lone = tmp_path / "lone" / "weights.bin"
    lone.parent.mkdir()
    shutil.copy(golden / "tok_vq_legacy_tiny" / "pytorch_model.bin", lone)
    with pytest.raises(ConfigError, match="preset"):
        titok_cli.load_tokenizer(lone)
    # a real preset has the full-size architecture, so the tiny weights must be refused, key by key
    with pytest.raises(CheckpointError, match="wrong shape"):
        titok_cli.load_tokenizer(lone, preset="titok-l32")


def test_generators_load_from_folder(golden):
    for case in ("gen_vit_tiny", "gen_uvit_tiny"):
        gen = titok_cli.load_generator(golden / case)
        io_ = load_file(golden / case / "io.safetensors")
        logits = gen.logits(io_["input_ids"], io_["condition"])
        assert (logits - io_["logits_cond"]).abs().max() <= 1e-4


def test_offline_hub_cache(golden, hub_cache):
    images, tokens = golden_tokens(golden, "tok_vq_legacy_tiny")
    tok = titok_cli.load_tokenizer("golden/tok_vq_legacy_tiny")
    assert torch.equal(tok.encode(images), tokens)
    assert tok.source.repo == "golden/tok_vq_legacy_tiny"
    assert Path(tok.source.weights).is_relative_to(hub_cache)
    gen = titok_cli.load_generator("golden/gen_uvit_tiny")
    io_ = load_file(golden / "gen_uvit_tiny" / "io.safetensors")
    assert (gen.logits(io_["input_ids"], io_["condition"]) - io_["logits_cond"]).abs().max() <= 1e-4
    # the image_seq_len interpolation in the ViT config resolves through the cache path as well
    assert titok_cli.load_generator("golden/gen_vit_tiny").num_tokens == 8


def test_offline_hub_revision_and_missing_repo(golden, hub_cache):
    commit = make_hub_cache(hub_cache, "golden/tok_vq_tiny", golden / "tok_vq_tiny", ("config.json", "model.safetensors"))
    tok = titok_cli.load_tokenizer(f"golden/tok_vq_tiny@{commit}")
    assert tok.source.revision == commit
    with pytest.raises(HubError, match="not in the local Hugging Face cache"):
        titok_cli.load_tokenizer("nobody/no_such_repo")
    with pytest.raises(HubError, match="--model /path/to/folder"):
        titok_cli.load_tokenizer("titok-l32")  # real preset, not cached, Hub unreachable


def test_unknown_name_lists_known_models():
    with pytest.raises(UnknownModelError, match="titok-l32"):
        titok_cli.load_tokenizer("titok-nonexistent")


def test_architecture_only_preset_is_refused():
    with pytest.raises(UnknownModelError, match="architecture only"):
        titok_cli.load_tokenizer("titok-l64-512")


# -- broken checkpoints -----------------------------------------------------------------


def _folder_with(tmp_path: Path, golden: Path, state: dict) -> Path:
    folder = tmp_path / "ckpt"
    folder.mkdir(exist_ok=True)
    shutil.copy(golden / "tok_vq_tiny" / "config.json", folder)
    save_file(state, str(folder / "model.safetensors"))
    return folder


def test_missing_key_is_named(golden, tmp_path):
    state = load_file(golden / "tok_vq_tiny" / "model.safetensors")
    del state["decoder.conv_out.bias"]
    with pytest.raises(CheckpointError, match=r"1 missing: decoder\.conv_out\.bias"):
        titok_cli.load_tokenizer(_folder_with(tmp_path, golden, state))


def test_extra_key_is_named(golden, tmp_path):
    state = load_file(golden / "tok_vq_tiny" / "model.safetensors")
    state["decoder.surprise"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"1 unexpected: decoder\.surprise"):
        titok_cli.load_tokenizer(_folder_with(tmp_path, golden, state))


def test_wrong_shape_is_named(golden, tmp_path):
    state = load_file(golden / "tok_vq_tiny" / "model.safetensors")
    state["quantize.embedding.weight"] = torch.zeros(100, 16)
    with pytest.raises(CheckpointError, match=r"quantize\.embedding\.weight \[100, 16\] \(expected \[512, 16\]\)"):
        titok_cli.load_tokenizer(_folder_with(tmp_path, golden, state))


def test_problems_are_reported_together(golden, tmp_path):
    state = load_file(golden / "tok_vq_tiny" / "model.safetensors")
    del state["latent_tokens"]
    state["extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        titok_cli.load_tokenizer(_folder_with(tmp_path, golden, state))
    assert "missing: latent_tokens" in str(info.value) and "unexpected: extra" in str(info.value)


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin"])
def test_truncated_file(golden, tmp_path, name):
    src = golden / "tok_vq_legacy_tiny" / name
    folder = tmp_path / "trunc"
    folder.mkdir()
    shutil.copy(golden / "tok_vq_legacy_tiny" / "config.json", folder)
    data = src.read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=name):
        titok_cli.load_tokenizer(folder)


def test_empty_weights_file(golden, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    shutil.copy(golden / "tok_vq_tiny" / "config.json", folder)
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty file"):
        titok_cli.load_tokenizer(folder)


class _Evil:
    """Unpickling this would create a marker file: the loader must refuse before that."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_malicious_pickle_runs_nothing(golden, tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "evil"
    folder.mkdir()
    shutil.copy(golden / "tok_vq_tiny" / "config.json", folder)
    state = dict(load_file(golden / "tok_vq_tiny" / "model.safetensors"))
    state["payload"] = _Evil(str(marker))
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        titok_cli.load_tokenizer(folder)
    assert not marker.exists()


def test_not_a_config(golden, tmp_path):
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    shutil.copy(golden / "tok_vq_tiny" / "model.safetensors", folder)
    with pytest.raises(ConfigError, match="not valid JSON"):
        titok_cli.load_tokenizer(folder)
    (folder / "config.json").write_text(json.dumps({"model": {"generator": {"hidden_size": 64}}}))
    with pytest.raises(ConfigError, match="no tokenizer"):
        titok_cli.load_tokenizer(folder)


def test_generator_name_of_tokenizer_preset_selects_pair():
    from titok_cli.hub import resolve

    with pytest.raises(HubError) as info:
        resolve("titok-l32", "generator")
    assert "generator_titok_l32_imagenet" in str(info.value)


def test_offline_local_dir_copies_from_cache(golden, hub_cache, tmp_path):
    from titok_cli.hub import hub_file

    path = hub_file("golden/tok_vq_tiny", "model.safetensors", local_dir=str(tmp_path / "dl"))
    assert path == tmp_path / "dl" / "model.safetensors"
    assert path.read_bytes() == (golden / "tok_vq_tiny" / "model.safetensors").read_bytes()


def test_bert_position_ids_buffer_is_ignored(golden):
    """Older transformers saved model.embeddings.position_ids; strict loads must accept it."""
    from titok_cli.config import read_config_file

    state = dict(load_file(golden / "gen_vit_tiny" / "model.safetensors"))
    state["model.embeddings.position_ids"] = torch.arange(9).unsqueeze(0)
    gen = titok_cli.TiTokGenerator.from_config(read_config_file(golden / "gen_vit_tiny" / "config.json"))
    gen.load_state_dict(state, strict=True)
    assert "model.embeddings.position_ids" not in gen.state_dict()


def test_import_does_not_pull_cli_libraries():
    import subprocess
    import sys

    code = "import sys, titok_cli; print(any(m in sys.modules for m in ('typer', 'rich', 'click')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
