"""`titok encode --hflip`: mirrored crops kept row for row, and `titok train` reading them.

The official pre-tokenization encodes each centre crop and its left-right mirror
(`torch.flip(x, dims=[-1])` on the crop); we keep the mirror's ids beside the original's so the
generator's training can pick one per row and epoch, as a random flip would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import titok_cli
from titok_cli.describe import describe_token_file
from titok_cli.encode_job import encode_files
from titok_cli.errors import TitokError, TokenFileError
from titok_cli.preprocess import load_image, to_tensor
from titok_cli.token_file import load_tokens, manifest_path
from titok_cli.token_writers import save_tokens
from titok_cli.training.data import EpochSampler, TokenDataset

from .test_dataset_scale import make_images
from .training_helpers import titok

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tok(golden):
    return titok_cli.load_tokenizer(golden / "tok_vq_legacy_tiny")


@pytest.fixture(scope="module")
def photos(images_dir):
    return sorted(p for p in images_dir.iterdir() if p.suffix.lower() in (".png", ".jpg"))


@pytest.mark.parametrize("suffix", [".npz", ".tar"])
def test_mirrored_rows_are_the_ids_of_the_mirrored_crops(tok, photos, images_dir, tmp_path, suffix):
    plain = encode_files([images_dir], tmp_path / "plain.npz", tok, batch_size=3)
    flipped = encode_files([images_dir], tmp_path / f"both{suffix}", tok, batch_size=3, hflip=True)
    a, b = load_tokens(plain.output), load_tokens(flipped.output)
    assert a.tokens_hflip is None
    assert np.array_equal(a.tokens, b.tokens) and a.names == b.names  # the originals are untouched
    crops = to_tensor([load_image(p, tok.config.image_size) for p in photos])  # (N, 3, S, S) in [0, 1]
    expected = np.concatenate([tok.encode(crops[i : i + 3].flip(-1)).numpy() for i in range(0, len(crops), 3)])
    assert np.array_equal(b.tokens_hflip, expected)
    assert (b.tokens_hflip != b.tokens).mean() > 0.3  # a photo and its mirror tokenize differently
    header = json.loads(manifest_path(flipped.output).read_text().splitlines()[0])
    assert "hflip" in header["preprocessing"] and len(header["array"]["hflip_sha256"]) == 64
    assert "mirrored crops' ids" in describe_token_file(flipped.output)["content"]  # titok info says so
    assert "mirrored" not in describe_token_file(plain.output)["content"]
    stored = load_tokens(flipped.output, as_stored=True)
    assert stored.tokens_hflip.dtype == stored.tokens.dtype == np.uint8  # codebook of 256


def test_a_npy_output_or_vae_latents_refuse_hflip(golden, photos, tmp_path):
    res = titok("encode", str(photos[0]), "-o", str(tmp_path / "t.npy"), "--hflip", "-m", str(golden / "tok_vq_tiny"))
    assert res.returncode == 2 and "--hflip" in res.stderr and ".npz or .tar" in res.stderr
    assert list(tmp_path.iterdir()) == []
    vae = titok_cli.load_tokenizer(golden / "tok_vae_tiny")
    with pytest.raises(TitokError, match="VAE latents have no ids"):
        encode_files([photos[0]], tmp_path / "t.npz", vae, hflip=True)
    assert list(tmp_path.iterdir()) == []


def test_the_manifest_proves_the_mirrored_array(tok, images_dir, tmp_path):
    out = encode_files([images_dir], tmp_path / "t.npz", tok, hflip=True).output
    tf = load_tokens(out, as_stored=True)
    # the same rows without their mirrors, under the old manifest: refused, the manifest records mirrors
    with zipfile.ZipFile(out) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            if name != "tokens_hflip.npy":
                zf.writestr(name, data)
    with pytest.raises(TokenFileError, match="records mirrored copies"):
        load_tokens(out)
    # changed mirrored ids under the old manifest: refused by their hash
    bad = tf.tokens_hflip.copy()
    bad[0, 0] ^= 1
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            if name == "tokens_hflip.npy":
                with zf.open(name, "w") as dst:
                    np.lib.format.write_array(dst, bad)
            else:
                zf.writestr(name, data)
    with pytest.raises(TokenFileError, match="mirrored copies' sha256"):
        load_tokens(out)


def test_save_tokens_round_trips_mirrors_and_checks_their_shape(tmp_path):
    ids = np.arange(12, dtype=np.uint16).reshape(3, 4)
    header = {"model": {"name": "x"}}
    for suffix in (".npz", ".tar"):
        path, _ = save_tokens(tmp_path / f"t{suffix}", ids, header, ["a", "b", "c"], tokens_hflip=ids[:, ::-1])
        back = load_tokens(path)
        assert np.array_equal(back.tokens_hflip, ids[:, ::-1]) and back.tokens_hflip.dtype == np.int64
    with pytest.raises(ValueError, match="do not match"):
        save_tokens(tmp_path / "u.npz", ids, header, ["a", "b", "c"], tokens_hflip=ids[:2])
    with pytest.raises(TokenFileError, match="holds one array"):
        save_tokens(tmp_path / "u.npy", ids, header, ["a", "b", "c"], tokens_hflip=ids)
    assert not (tmp_path / "u.npz").exists() and not (tmp_path / "u.npy").exists()


# -- training reads the mirrors --------------------------------------------------------------------


def test_sampler_flips_each_row_by_a_seeded_coin_per_epoch():
    s = EpochSampler(num_rows=400, global_batch=100, seed=3)
    epochs = [np.concatenate([s.step_rows(4 * e + k)[1] for k in range(4)]) for e in range(3)]
    rows = [np.concatenate([s.step_rows(4 * e + k)[0] for k in range(4)]) for e in range(3)]
    for e, (flips, order) in enumerate(zip(epochs, rows)):
        assert sorted(order) == list(range(400))
        assert 0.4 < flips.mean() < 0.6
        assert np.array_equal(flips, s.mirrored(e)[order])  # the coin belongs to the row, not the position
    assert not np.array_equal(s.mirrored(0), s.mirrored(1))  # a new coin per epoch
    fresh = EpochSampler(num_rows=400, global_batch=100, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(fresh.step_rows(6), s.step_rows(6)))  # resumable
    assert not np.array_equal(EpochSampler(400, 100, 4).mirrored(0), s.mirrored(0))


def test_dataset_reads_the_mirror_of_the_rows_asked_for(tok, images_dir, tmp_path):
    both = encode_files([images_dir], tmp_path / "both.npz", tok, hflip=True).output
    plain = encode_files([images_dir], tmp_path / "plain.npz", tok).output
    tf = load_tokens(both)
    data = TokenDataset([both, both], need_labels=False)
    assert data.hflip and data.identity()[0]["hflip_sha256"]
    n = len(tf.tokens)
    rows = np.array([0, n + 1, 2, n + 3])  # rows of both files
    ids, _ = data.rows(rows, np.array([True, False, False, True]))
    assert np.array_equal(ids, np.stack([tf.tokens_hflip[0], tf.tokens[1], tf.tokens[2], tf.tokens_hflip[3]]))
    assert not TokenDataset([both], need_labels=False, hflip=False).hflip  # --no-hflip
    with pytest.raises(TokenFileError, match="plain.npz: has no mirrored copies but .*both.npz has"):
        TokenDataset([both, plain], need_labels=False)
    assert not TokenDataset([both, plain], need_labels=False, hflip=False).hflip


@pytest.mark.slow
def test_killed_hflip_encode_resumes_to_identical_files(golden, tmp_path):
    script = ("import sys, titok_cli\nfrom titok_cli.encode_job import encode_files\n"
              "encode_files([sys.argv[2]], sys.argv[3], titok_cli.load_tokenizer(sys.argv[1]), batch_size=2, hflip=True)")  # fmt: skip
    env = {**os.environ, "TITOK_COMMIT_SECONDS": "0", "PYTHONPATH": str(ROOT)}
    model, src = golden / "tok_vq_legacy_tiny", tmp_path / "imgs"
    make_images(src, 120)

    def run(out: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", script, str(model), str(src), str(out)], env=env)

    ref = tmp_path / "ref" / "t.npz"
    assert run(ref).wait() == 0
    out = tmp_path / "run" / "t.npz"
    proc = run(out)
    state = out.parent / "t.npz.partial" / "rank-00000-of-00001" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (state.exists() and json.loads(state.read_text())["rows"] >= 20):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < json.loads(state.read_text())["rows"] < 120
    with open(state.parent / "tokens_hflip.bin", "ab") as fh:  # half a batch after the commit point
        fh.write(b"\xff" * 5)
    assert run(out).wait() == 0
    assert out.read_bytes() == ref.read_bytes()
    assert manifest_path(out).read_bytes() == manifest_path(ref).read_bytes()
