"""Broken and hostile checkpoints through the CLI: one line naming the file, exit 1 or 2, nothing written."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from titok_cli.cli.app import app

CASE = "tok_vq_tiny"


class _Evil:
    """Unpickling this would create a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _folder(golden: Path, tmp: Path) -> Path:
    folder = tmp / "bad_model"
    folder.mkdir()
    shutil.copy(golden / CASE / "config.json", folder)
    return folder


def _raw_safetensors(golden: Path) -> tuple[dict, bytes]:
    data = (golden / CASE / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _write_safetensors(path: Path, header: dict, body: bytes, length: int | None = None) -> None:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + body)


def _tamper_tensor(golden: Path, folder: Path, **changes) -> None:
    header, body = _raw_safetensors(golden)
    key = next(k for k in header if k != "__metadata__")
    header[key] = {**header[key], **changes}
    _write_safetensors(folder / "model.safetensors", header, body)


def _config(golden: Path, folder: Path, **vq) -> None:
    doc = json.loads((golden / CASE / "config.json").read_text())
    doc["model"]["vq_model"].update(vq)
    (folder / "config.json").write_text(json.dumps(doc))
    shutil.copy(golden / CASE / "model.safetensors", folder)


def pickle_payload(golden, folder):
    state = dict(load_file(golden / CASE / "model.safetensors"))
    state["payload"] = _Evil(str(folder.parent / "pwned"))
    torch.save(state, folder / "pytorch_model.bin")
    return folder, "pytorch_model.bin", "refused to unpickle"


def pickle_not_tensors(golden, folder):
    torch.save({"weights": "not a tensor"}, folder / "pytorch_model.bin")
    return folder, "pytorch_model.bin", "mapping of parameter names to tensors"


def truncated_bin(golden, folder):
    data = (golden / "tok_vq_legacy_tiny" / "pytorch_model.bin").read_bytes()
    (folder / "pytorch_model.bin").write_bytes(data[: len(data) // 3])
    return folder, "pytorch_model.bin", "truncated or not a PyTorch checkpoint"


def offsets_beyond_file(golden, folder):
    _tamper_tensor(golden, folder, data_offsets=[0, 10**12])
    return folder, "model.safetensors", "not a readable safetensors file"


def shape_lie(golden, folder):
    _tamper_tensor(golden, folder, shape=[10**6, 10**6])
    return folder, "model.safetensors", "not a readable safetensors file"


def unknown_dtype(golden, folder):
    _tamper_tensor(golden, folder, dtype="Q9")
    return folder, "model.safetensors", "not a readable safetensors file"


def dtype_size_lie(golden, folder):
    _tamper_tensor(golden, folder, dtype="F64")
    return folder, "model.safetensors", "not a readable safetensors file"


def header_length_absurd(golden, folder):
    header, body = _raw_safetensors(golden)
    _write_safetensors(folder / "model.safetensors", header, body, length=2**62)
    return folder, "model.safetensors", "header too large"


def truncated_safetensors(golden, folder):
    data = (golden / CASE / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) - 100])
    return folder, "model.safetensors", "not a readable safetensors file"


def garbage_safetensors(golden, folder):
    (folder / "model.safetensors").write_bytes(b"\x00" * 4096)
    return folder, "model.safetensors", "not a readable safetensors file"


def empty_weights(golden, folder):
    (folder / "model.safetensors").write_bytes(b"")
    return folder, "model.safetensors", "empty file"


def integer_weights(golden, folder):
    state = load_file(golden / CASE / "model.safetensors")
    state["latent_tokens"] = state["latent_tokens"].to(torch.int32)
    save_file(state, str(folder / "model.safetensors"))
    return folder, "model.safetensors", "wrong dtype: latent_tokens int32"


def wrong_keys(golden, folder):
    state = load_file(golden / CASE / "model.safetensors")
    state["surprise"] = state.pop("latent_tokens")
    save_file(state, str(folder / "model.safetensors"))
    return folder, "model.safetensors", "1 missing: latent_tokens; 1 unexpected: surprise"


def wrong_shape(golden, folder):
    state = load_file(golden / CASE / "model.safetensors")
    state["quantize.embedding.weight"] = torch.zeros(7, 3)
    save_file(state, str(folder / "model.safetensors"))
    return folder, "model.safetensors", "wrong shape: quantize.embedding.weight [7, 3]"


def missing_weights(golden, folder):
    return folder, "bad_model", "no model.safetensors or pytorch_model.bin"


def huge_hidden(golden, folder):
    _config(golden, folder, token_size=10**9)
    return folder, "config.json", "token_size = 1000000000 is out of range"


def negative_tokens(golden, folder):
    _config(golden, folder, num_latent_tokens=-32)
    return folder, "config.json", "num_latent_tokens = -32 is out of range"


def zero_codebook(golden, folder):
    _config(golden, folder, codebook_size=0)
    return folder, "config.json", "codebook_size = 0 is out of range"


def patch_not_dividing(golden, folder):
    _config(golden, folder, vit_enc_patch_size=24)
    return folder, "config.json", "not a multiple of vit_enc_patch_size"


def non_json_config(golden, folder):
    (folder / "config.json").write_text("model:\n  vq_model: {}\n")
    shutil.copy(golden / CASE / "model.safetensors", folder)
    return folder, "config.json", "not valid JSON"


def config_not_object(golden, folder):
    (folder / "config.json").write_text("[1, 2, 3]")
    shutil.copy(golden / CASE / "model.safetensors", folder)
    return folder, "config.json", "expected a JSON object"


def generator_as_tokenizer(golden, folder):
    shutil.copy(golden / "gen_vit_tiny" / "config.json", folder)
    shutil.copy(golden / "gen_vit_tiny" / "model.safetensors", folder)
    return folder, "bad_model", "describes no tokenizer"


def yaml_config(golden, folder):
    (folder / "titok_l32.yaml").write_text("model: {}\n")
    return folder / "titok_l32.yaml", "titok_l32.yaml", "YAML training config"


def lone_file_without_preset(golden, folder):
    (folder / "config.json").unlink()
    shutil.copy(golden / CASE / "model.safetensors", folder / "weights.safetensors")
    return folder / "weights.safetensors", "weights.safetensors", "needs a preset"


CASES = [pickle_payload, pickle_not_tensors, truncated_bin, offsets_beyond_file, shape_lie, unknown_dtype,
         dtype_size_lie, header_length_absurd, truncated_safetensors, garbage_safetensors, empty_weights,
         integer_weights, wrong_keys, wrong_shape, missing_weights, huge_hidden, negative_tokens, zero_codebook,
         patch_not_dividing, non_json_config, config_not_object, generator_as_tokenizer, yaml_config,
         lone_file_without_preset]  # fmt: skip


@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__)
def test_bad_checkpoint_is_one_clear_line(make, golden, images_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("TITOK_DEBUG", raising=False)
    model, named, says = make(golden, _folder(golden, tmp_path))
    out = tmp_path / "out" / "tokens.npy"
    out.parent.mkdir()
    result = CliRunner().invoke(app, ["encode", str(images_dir), "-o", str(out), "--model", str(model), "--device", "cpu"])
    assert result.exit_code in (1, 2), result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert str(model) in lines[0] and named in lines[0] and says in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert list(out.parent.iterdir()) == []  # nothing written, not even a manifest
    assert not (tmp_path / "pwned").exists()  # no pickle code ran


def test_a_missing_folder_inside_a_local_folder_is_not_taken_for_a_hub_repo(tmp_path, monkeypatch, hub_cache):
    """`--model run/final` before the run wrote it: a local path, not the Hub repo `run/final`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    for args in (["sample", "--model", "run/final", "-c", "1", "-o", "out"],
                 ["encode", "run", "--model", "run/final", "-o", "out.npy"]):  # fmt: skip
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 1, res.output
        assert "run/final: no such file or folder (not read as a Hub repo id: run/ is a local folder)" in res.output
        assert "Hugging Face cache" not in res.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.npy").exists()
