"""Token files as other software uses them: one manifest per file, any integer dtype, torch recipes.

Real golden tokenizers and real photos throughout. `tok_vq_tiny` has 512 codes, so its files are
uint16, the dtype of the official 4096/8192-code models that torch cannot compute with.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import titok_cli
from titok_cli.cli.app import app
from titok_cli.errors import TokenFileError
from titok_cli.preprocess import load_image, to_tensor
from titok_cli.token_file import legacy_manifest_path, manifest_path

VQ = "golden/tok_vq_legacy_tiny"
VQ16 = "golden/tok_vq_tiny"


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("TITOK_DEBUG", raising=False)


def pngs(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))


def photos(images_dir: Path, *names: str) -> list[Path]:
    return [images_dir / n for n in names]


# -- issue 15.1: two token files, two manifests ---------------------------------------------------


def test_two_outputs_with_one_stem_keep_their_own_names(hub_cache, images_dir, tmp_path):
    a, b = tmp_path / "t.npy", tmp_path / "t.npz"
    assert run("encode", *photos(images_dir, "chelsea.png", "coffee.png"), "-o", a, "--model", VQ, "--device", "cpu").exit_code == 0
    assert run("encode", *photos(images_dir, "rocket.jpg", "camera.png"), "-o", b, "--model", VQ, "--device", "cpu").exit_code == 0
    assert manifest_path(a).name == "t.npy.manifest.jsonl" and manifest_path(a).is_file()
    assert manifest_path(b).name == "t.npz.manifest.jsonl" and manifest_path(b).is_file()
    assert not legacy_manifest_path(a).exists()
    dec = run("decode", a, "-o", tmp_path / "out_a", "--device", "cpu")
    assert dec.exit_code == 0, dec.output
    assert pngs(tmp_path / "out_a") == ["chelsea.png", "coffee.png"]
    dec = run("decode", b, "-o", tmp_path / "out_b", "--device", "cpu")
    assert pngs(tmp_path / "out_b") == ["camera.png", "rocket.png"]


def test_old_shared_manifest_is_refused_when_it_describes_the_other_file(hub_cache, images_dir, tmp_path):
    """The old layout: t.manifest.jsonl last written for t.npz (B), then t.npy (A) is decoded."""
    a, b = tmp_path / "t.npy", tmp_path / "t.npz"
    assert run("encode", *photos(images_dir, "chelsea.png", "coffee.png"), "-o", a, "--model", VQ, "--device", "cpu").exit_code == 0
    assert run("encode", *photos(images_dir, "rocket.jpg", "camera.png"), "-o", b, "--model", VQ, "--device", "cpu").exit_code == 0
    manifest_path(a).unlink()
    manifest_path(b).rename(legacy_manifest_path(a))  # same row count, dtype and shape as A's
    result = run("decode", a, "-o", tmp_path / "out", "--device", "cpu", "--model", VQ)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {legacy_manifest_path(a)} does not belong to t.npy")
    assert "sha256" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_old_manifest_name_is_read_when_it_belongs(hub_cache, images_dir, tmp_path):
    a = tmp_path / "t.npy"
    assert run("encode", *photos(images_dir, "chelsea.png", "coffee.png"), "-o", a, "--model", VQ, "--device", "cpu").exit_code == 0
    lines = manifest_path(a).read_text().splitlines()
    header = json.loads(lines[0])
    del header["array"]["sha256"], header["fingerprint"]  # as releases before the hash wrote it
    manifest_path(a).unlink()
    legacy_manifest_path(a).write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    dec = run("decode", a, "-o", tmp_path / "out", "--device", "cpu")  # model from the old manifest
    assert dec.exit_code == 0, dec.output
    assert pngs(tmp_path / "out") == ["chelsea.png", "coffee.png"]
    # without a hash the old name cannot tell t.npy from a t.npz beside it: refused, not guessed
    np.savez(tmp_path / "t.npz", tokens=np.load(a))
    result = run("decode", a, "-o", tmp_path / "out2", "--device", "cpu")
    assert result.exit_code == 1 and "may describe t.npz rather than t.npy" in result.stderr
    assert not (tmp_path / "out2").exists()


def test_tampered_array_is_refused(hub_cache, images_dir, tmp_path):
    a = tmp_path / "t.npy"
    assert run("encode", *photos(images_dir, "chelsea.png", "coffee.png"), "-o", a, "--model", VQ, "--device", "cpu").exit_code == 0
    ids = np.load(a)
    ids[1, 3] = (int(ids[1, 3]) + 1) % 256  # still a valid id: only the hash can tell
    np.save(a, ids)
    result = run("decode", a, "-o", tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert f"{manifest_path(a)} does not belong to t.npy" in result.stderr and "sha256" in result.stderr
    assert not (tmp_path / "out").exists()


# -- issue 9.1: every integer dtype, numpy or torch ---------------------------------------------


@pytest.fixture(scope="module")
def tok16(golden):
    return titok_cli.load_tokenizer(golden / "tok_vq_tiny")


@pytest.fixture(scope="module")
def real_ids(tok16, golden):
    images = sorted((golden.parent / "images").iterdir())[:4]
    return tok16.encode(to_tensor([load_image(p, tok16.image_size) for p in images]))  # (4, 16) int64


def test_torch_recipe_on_a_uint16_token_file(hub_cache, images_dir, tmp_path, tok16):
    out = tmp_path / "tokens.npy"
    assert run("encode", images_dir, "-o", out, "--model", VQ16, "--device", "cpu", "-q").exit_code == 0
    stored = np.load(out)
    assert stored.dtype == np.uint16  # 512 codes do not fit a byte
    pixels = tok16.decode(torch.from_numpy(stored))  # failed inside the library before (min_all on UInt16)
    tf = titok_cli.load_tokens(out)  # the README recipe
    assert tf.tokens.dtype == np.int64 and tf.stored_dtype == np.uint16
    assert tf.names == sorted(p.name for p in images_dir.iterdir()) and tf.header["model"]["repo"] == VQ16
    assert torch.equal(pixels, tok16.decode(torch.from_numpy(tf.tokens)))
    assert torch.equal(pixels, tok16.decode(stored))  # numpy arrays directly, memory-mapped too
    assert torch.equal(pixels, tok16.decode(np.load(out, mmap_mode="r")))


DTYPES = [np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32, np.int64]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_decode_accepts_every_integer_dtype(tok16, real_ids, dtype):
    ids = real_ids.numpy() % min(512, int(np.iinfo(dtype).max) + 1)  # what the dtype can hold
    expected = tok16.decode(torch.from_numpy(ids.astype(np.int64)))
    as_np = ids.astype(dtype)
    assert torch.equal(tok16.decode(as_np), expected)
    assert torch.equal(tok16.decode(torch.from_numpy(as_np)), expected)


@pytest.mark.parametrize("bad, span", [
    (np.full((1, 16), 512, np.uint16), "512..512"),
    (np.full((1, 16), -1, np.int32), "-1..-1"),
    (np.full((1, 16), 2**63 + 5, np.uint64), "outside the codebook"),  # wraps negative: still refused
])  # fmt: skip
def test_ids_out_of_range_are_refused_first(tok16, bad, span):
    for tokens in (bad, torch.from_numpy(bad)):
        with pytest.raises(TokenFileError, match="outside the codebook 0..511") as err:
            tok16.decode(tokens)
        assert span in str(err.value)


def test_float_or_bool_ids_are_refused(tok16):
    for bad in (np.zeros((1, 16), np.float16), torch.zeros((1, 16), dtype=torch.bool)):
        with pytest.raises(TokenFileError, match="integer token ids"):
            tok16.decode(bad)


def test_load_tokens_reads_every_format_alike(hub_cache, images_dir, tmp_path):
    tfs = {}
    for suffix in (".npy", ".npz", ".tar"):
        out = tmp_path / f"tokens{suffix}"
        assert run("encode", images_dir, "-o", out, "--model", VQ16, "--device", "cpu", "-q").exit_code == 0
        tfs[suffix] = titok_cli.load_tokens(out)
    for tf in tfs.values():
        assert tf.tokens.dtype == np.int64 and isinstance(tf, titok_cli.TokenFile)
        np.testing.assert_array_equal(tf.tokens, tfs[".npy"].tokens)
        assert tf.names == tfs[".npy"].names and tf.header["array"]["sha256"] == tfs[".npy"].header["array"]["sha256"]


# -- issue 9.8: the official decode_tokens ------------------------------------------------------


def test_decode_tokens_takes_the_official_shapes(tok16, real_ids, golden):
    expected = tok16.decode(real_ids)
    assert torch.equal(tok16.decode_tokens(real_ids[:, None, :]), expected)  # official [B,1,K]
    assert torch.equal(tok16.decode_tokens(real_ids), expected)
    vae = titok_cli.load_tokenizer(golden / "tok_vae_tiny")
    images = sorted((golden.parent / "images").iterdir())[:2]
    latents = vae.encode(to_tensor([load_image(p, vae.image_size) for p in images]))  # (2, C, K)
    assert torch.equal(vae.decode_tokens(latents.unsqueeze(2)), vae.decode(latents))  # official [B,C,1,K]


# -- issue 9.6: chunks that fit memory, same pixels ---------------------------------------------


def test_chunked_decode_gives_the_same_images(golden, images_dir, monkeypatch):
    """Without memory pressure the batch is one call (bit-identical to before). Chunks change only
    float rounding (the two-stage decoder is not batch-invariant on CPU: the same holds between
    `-b 3` and `-b 7` before chunking existed), so 8-bit pixels differ by at most one level."""
    tok = titok_cli.load_tokenizer(golden / "tok_vq_legacy_tiny")  # two-stage: the conv pixel decoder
    files = sorted(images_dir.iterdir())
    ids = tok.encode(to_tensor([load_image(p, tok.image_size) for p in files]))  # (7, 8)
    whole = tok.decode(ids, max_batch=len(files))
    assert torch.equal(tok.decode(ids), whole)  # the budget fits 7 tiny images: one call, as before
    for step in (1, 2, 3):
        chunked = tok.decode(ids, max_batch=step)
        assert (chunked - whole).abs().max() < 1e-4, step
        levels = titok_cli.to_uint8(chunked).int() - titok_cli.to_uint8(whole).int()
        assert levels.abs().max() <= 1 and (levels != 0).float().mean() < 1e-3, step
    # the default path: a budget for 2 images at a time, as a small machine would give
    from titok_cli.models import decode_memory

    per_image = decode_memory.decode_bytes_per_image(tok.config)
    monkeypatch.setattr(decode_memory, "available_memory", lambda device: 2 * per_image + 1)
    calls = []
    original = tok.decode_latents
    monkeypatch.setattr(tok, "decode_latents", lambda z: calls.append(len(z)) or original(z))
    assert torch.equal(tok.decode(ids), tok.decode(ids, max_batch=2))
    assert calls == [2, 2, 2, 1] * 2


def test_memory_estimate_follows_the_decoder_shape():
    from dataclasses import replace

    from titok_cli import registry
    from titok_cli.models.decode_memory import decode_bytes_per_image

    from titok_cli.config import tokenizer_config_from_dict

    cfg = tokenizer_config_from_dict(registry.get("titok-l32").config)
    at256 = decode_bytes_per_image(cfg)
    assert 150e6 < at256 < 400e6  # measured peak growth: about 205 MB per 256x256 image (float32)
    assert decode_bytes_per_image(replace(cfg, pixel_hidden_channels=64)) < at256
    assert decode_bytes_per_image(cfg, torch.bfloat16) < at256
