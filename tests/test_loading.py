"""load_tokenizer / load_generator from folders, files, an offline Hub cache; strict and safe loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import titok_cli
import titok_cli.source
from titok_cli.errors import CheckpointError, ConfigError, HubError, UnknownModelError

from .conftest import legacy_copy, make_hub_cache


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
    assert isinstance(tok.source, titok_cli.source.Source) and tok.source.kind == "tokenizer"
    assert titok_cli.TiTokTokenizer.from_config(tok.config).source is None  # an attribute of every model


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


# -- the same weights give the same samples, however they are named (issue 15.2) ---------------

B64_GEN_REPO = "yucornetto/generator_titok_b64_imagenet"


def _b64_stand_in(hub_cache: Path, golden: Path) -> None:
    """The golden tiny ViT generator's files, cached under the official titok-b64-gen repo id."""
    make_hub_cache(hub_cache, B64_GEN_REPO, golden / "gen_vit_tiny", ("config.json", "model.safetensors"))


def _tokens(gen, seed: int = 7) -> torch.Tensor:
    return gen.generate(torch.tensor([0, 3, 9]), randomize_temperature=2.0, generator=torch.Generator().manual_seed(seed))


def test_downloaded_folder_samples_like_the_registry_name(golden, hub_cache, tmp_path):
    from typer.testing import CliRunner

    from titok_cli import registry
    from titok_cli.cli.app import app

    _b64_stand_in(hub_cache, golden)
    by_name = titok_cli.load_generator("titok-b64-gen")
    folder = tmp_path / "D"
    result = CliRunner().invoke(app, ["download", "titok-b64-gen", "--local-dir", str(folder), "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads((folder / "titok.json").read_text())["name"] == "titok-b64-gen"
    by_folder = titok_cli.load_generator(folder)
    official = registry.get("titok-b64-gen").sampling
    assert by_name.config.sampling_defaults() == by_folder.config.sampling_defaults() == official
    assert official["softmax_temperature_annealing"]  # the setting that used to differ
    assert by_folder.source.sampling_origin == by_name.source.sampling_origin == "registry"
    assert by_folder.source.recognised_by == "provenance" and by_folder.source.sampling_note is None
    assert by_folder.source.entry.tokenizer == "titok-b64"  # so `titok sample -m D` finds its tokenizer
    assert torch.equal(_tokens(by_name), _tokens(by_folder))
    # the Hub-cache snapshot folder itself is recognised too
    snapshot = Path(by_name.source.weights).parent
    assert titok_cli.load_generator(snapshot).source.recognised_by == "hub-cache"


def test_unknown_generator_folder_uses_its_config_and_says_so(golden, tmp_path):
    gen = titok_cli.load_generator(golden / "gen_vit_tiny")
    assert gen.source.entry is None and gen.source.sampling_origin == "config"
    assert "no official sampling settings" in gen.source.sampling_note
    assert not gen.config.softmax_temperature_annealing  # the documented default
    # a provenance file that does not describe these weights (other size) is ignored
    folder = tmp_path / "copy"
    shutil.copytree(golden / "gen_vit_tiny", folder)
    (folder / "titok.json").write_text(json.dumps({"name": "titok-b64-gen", "files": {"model.safetensors": {"size": 1}}}))
    assert titok_cli.load_generator(folder).source.sampling_origin == "config"


def test_registry_recognises_an_official_architecture():
    from titok_cli import registry
    from titok_cli.source import recognise

    cfg = json.loads(json.dumps(registry.get("titok-b64-gen").config))
    cfg["model"]["generator"]["randomize_temperature"] = 1.0  # training values differ from sampling ones
    assert recognise(cfg, "generator").name == "titok-b64-gen"
    cfg["model"]["generator"]["hidden_size"] = 512
    assert recognise(cfg, "generator") is None
    assert recognise(registry.get("titok-s128").config, "tokenizer").name == "titok-s128"


# -- legacy single-file checkpoints and repo:file (issue 9.2) -----------------------------------


def _legacy_copy(golden: Path, folder: Path, name: str) -> Path:
    return legacy_copy(golden / "tok_vq_legacy_tiny", folder, name)


def test_legacy_file_name_infers_the_preset(golden, tmp_path):
    lone = _legacy_copy(golden, tmp_path, "tokenizer_titok_l32.bin")
    with pytest.raises(CheckpointError, match=r"tokenizer_titok_l32\.bin \(read as preset titok-l32\).*wrong shape"):
        titok_cli.load_tokenizer(lone)  # full-size preset inferred; the tiny weights do not fit it
    gen_file = _legacy_copy(golden, tmp_path, "generator_titok_l32.bin")
    with pytest.raises(ConfigError, match="generator titok-l32-gen, not a tokenizer"):
        titok_cli.load_tokenizer(gen_file)


def test_legacy_file_loads_with_inferred_or_explicit_preset(golden, tmp_path, tiny_preset):
    images, tokens = golden_tokens(golden, "tok_vq_legacy_tiny")
    inferred = titok_cli.load_tokenizer(_legacy_copy(golden, tmp_path, "tokenizer_titok_tiny.bin"))
    assert torch.equal(inferred.encode(images), tokens)
    assert inferred.source.preset == "titok-tiny-test" and inferred.source.recognised_by == "legacy-file"
    explicit = titok_cli.load_tokenizer(_legacy_copy(golden, tmp_path / "x", "renamed.bin"), preset="titok-tiny-test")
    assert torch.equal(explicit.encode(images), tokens) and explicit.source.recognised_by == "preset"


def test_repo_colon_file_through_the_hub_cache(golden, hub_cache, tmp_path, tiny_preset):
    from titok_cli.registry import LEGACY_REPO

    images, tokens = golden_tokens(golden, "tok_vq_legacy_tiny")
    _legacy_copy(golden, tmp_path / "legacy", "tokenizer_titok_tiny.bin")
    make_hub_cache(hub_cache, LEGACY_REPO, tmp_path / "legacy")
    tok = titok_cli.load_tokenizer(f"{LEGACY_REPO}:tokenizer_titok_tiny.bin")
    assert torch.equal(tok.encode(images), tokens)
    assert (tok.source.repo, tok.source.filename) == (LEGACY_REPO, "tokenizer_titok_tiny.bin")
    with pytest.raises(HubError, match=r"fun-research/TiTok/tokenizer_titok_l32\.bin is not in the local"):
        titok_cli.load_tokenizer(f"{LEGACY_REPO}:tokenizer_titok_l32.bin")  # names the file asked for


def test_yaml_config_gets_a_hint(tmp_path):
    cfg = tmp_path / "titok_l32.yaml"
    cfg.write_text("model: {}\n")
    with pytest.raises(ConfigError, match="YAML training config.*holds no weights.*preset"):
        titok_cli.load_tokenizer(cfg)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownModelError, match=r"did you mean titok-l32"):
        titok_cli.load_tokenizer("titok-l33")
    with pytest.raises(CheckpointError, match="no such file or folder"):
        titok_cli.load_tokenizer("./nowhere/model.safetensors")


def test_unreachable_hub_fails_fast_with_a_hint(tmp_path):
    """HF_HUB_OFFLINE unset and the Hub down: one short probe, then the cache only."""
    import os
    import socket
    import subprocess
    import sys
    import time

    from .conftest import ROOT

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{port}",
           "HF_HUB_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}  # fmt: skip
    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        env.pop(key, None)
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "titok_cli", "encode", str(tmp_path), "-o", str(tmp_path / "t.npy")],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    elapsed = time.monotonic() - start
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # no retry warnings from huggingface_hub
    assert "HF_HUB_OFFLINE=1" in lines[0] and str(tmp_path / "cache") in lines[0]
    assert "yucornetto/tokenizer_titok_l32_imagenet/config.json" in lines[0]
    assert elapsed < 15, elapsed  # was 23-34 s of retries
    assert not (tmp_path / "t.npy").exists()
