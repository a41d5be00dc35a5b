"""encode_files + token files: real photos, bad files, atomic output, malformed token files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import titok_cli
from titok_cli.encode_job import encode_files
from titok_cli.errors import ImageError, TokenFileError
from titok_cli.preprocess import load_image, to_tensor
from titok_cli.decode_job import check_tokens_fit
from titok_cli.token_file import load_tokens, manifest_path


@pytest.fixture(scope="module")
def tok(golden):
    return titok_cli.load_tokenizer(golden / "tok_vq_legacy_tiny")


@pytest.fixture()
def photos(tmp_path, images_dir):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for p in sorted(images_dir.iterdir()):
        shutil.copy(p, folder / ("sub" if p.name.startswith("c") else "") / p.name)
    return folder


def _expected(tok, folder, names):
    return tok.encode(to_tensor([load_image(folder / n, tok.image_size) for n in names])).numpy()


@pytest.mark.parametrize("workers", [0, 2])
def test_encode_folder_matches_library(tok, photos, tmp_path, workers):
    out = tmp_path / "out" / "tokens.npy"
    res = encode_files([photos], out, tok, batch_size=3, workers=workers)
    assert res.count == 7 and not res.failures
    tf = load_tokens(out)
    assert tf.stored_dtype == np.uint8 and tf.tokens.dtype == np.int64  # stored in a byte, read back as int64
    assert tf.names == sorted(tf.names, key=lambda n: ("/" in n, n)) or tf.names[0] == "ILSVRC2012_val_00008636.png"
    assert set(tf.names) >= {"sub/camera.png", "sub/chelsea.png", "sub/coffee.png", "rocket.jpg"}
    np.testing.assert_array_equal(tf.tokens, _expected(tok, photos, tf.names))
    assert tf.header["model"]["num_tokens"] == 8 and tf.header["preprocessing"]["image_size"] == 64
    check_tokens_fit(tf, tok)


def test_npz_output_and_vae(golden, photos, tmp_path):
    vae = titok_cli.load_tokenizer(golden / "tok_vae_tiny")
    out = tmp_path / "lat.npz"
    encode_files([photos], out, vae)
    tf = load_tokens(out)
    assert tf.tokens.dtype == np.float32 and tf.tokens.shape == (7, 16, 16)
    np.testing.assert_allclose(tf.tokens, _expected(vae, photos, tf.names), atol=0)


def test_bad_files_are_reported_and_skipped(tok, photos, tmp_path):
    (photos / "empty.png").write_bytes(b"")
    (photos / "text.png").write_text("not an image")
    res = encode_files([photos], tmp_path / "t.npy", tok)
    assert res.count == 7
    assert dict(res.failures) == {"empty.png": "empty file", "text.png": "not an image (cannot identify format)"}
    tf = load_tokens(tmp_path / "t.npy")
    assert {f["path"] for f in tf.failures} == {"empty.png", "text.png"}


def test_strict_leaves_no_output(tok, photos, tmp_path):
    (photos / "zzz.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    out = tmp_path / "strict" / "t.npy"
    with pytest.raises(ImageError, match="zzz.png"):
        encode_files([photos], out, tok, strict=True)
    assert not out.exists() and not manifest_path(out).exists()
    assert list(out.parent.iterdir()) == []


def test_malformed_token_files_are_refused(tok, tmp_path, golden):
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((2, 8), np.uint16))
    check_tokens_fit(load_tokens(good), tok)
    cases = {
        "wrong_k.npy": (np.zeros((2, 7), np.uint16), "needs 8"),
        "range.npy": (np.full((2, 8), 300, np.uint16), "outside the codebook"),
        "floats.npy": (np.zeros((2, 8), np.float32), "latents must be a 3-D"),
        "three_d.npy": (np.zeros((2, 16, 16), np.float32), "needs integer token ids"),
    }
    for name, (arr, msg) in cases.items():
        np.save(tmp_path / name, arr)
        with pytest.raises(TokenFileError, match=msg):
            check_tokens_fit(load_tokens(tmp_path / name), tok)
    (tmp_path / "garbage.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(TokenFileError, match="garbage.npy"):
        load_tokens(tmp_path / "garbage.npy")
    # a manifest made with another model (different token count) is caught even if the array fits
    np.save(tmp_path / "other.npy", np.zeros((1, 8), np.uint8))
    header = {"format": "titok-tokens", "version": 1, "model": {"name": "titok-l32", "num_tokens": 32}}
    manifest_path(tmp_path / "other.npy").write_text(json.dumps(header) + "\n" + json.dumps({"row": 0, "path": "a.png"}) + "\n")
    with pytest.raises(TokenFileError, match="titok-l32"):
        check_tokens_fit(load_tokens(tmp_path / "other.npy"), tok)
    # manifest row count must match
    manifest_path(tmp_path / "good.npy").write_text(json.dumps({"format": "titok-tokens"}) + "\n")
    with pytest.raises(TokenFileError, match="0 rows"):
        load_tokens(good)


def test_tree_is_walked_once_without_progress_and_twice_with(tok, photos, tmp_path, monkeypatch):
    from titok_cli import inputs

    listed = []  # every file the walks yield
    original = inputs.iter_image_files

    def counting(inputs):
        for item in original(inputs):
            listed.append(item)
            yield item

    monkeypatch.setattr(inputs, "iter_image_files", counting)
    quiet = encode_files([photos], tmp_path / "a.npy", tok)
    assert len(listed) == 7 + 1  # the encoding walk, plus one file to know the input is not empty
    listed.clear()
    seen = []
    shown = encode_files([photos], tmp_path / "b.npy", tok, progress=lambda done, total: seen.append((done, total)))
    assert len(listed) == 2 * 7  # a progress display gets its total from a counting walk
    assert quiet.count == shown.count == 7 and seen[-1] == (7, 7)
    np.testing.assert_array_equal(load_tokens(tmp_path / "a.npy").tokens, load_tokens(tmp_path / "b.npy").tokens)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(titok_cli.errors.TitokError, match="no image files"):
        encode_files([empty], tmp_path / "c.npy", tok)
    assert not (tmp_path / "c.npy.partial").exists()
