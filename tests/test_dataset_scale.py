"""Dataset-scale encoding: resume after kill -9, torchrun with gloo, webdataset shards, labels, shards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import titok_cli
from titok_cli.encode_job import encode_files
from titok_cli.token_file import load_tokens, manifest_path

ROOT = Path(__file__).resolve().parents[1]


def make_images(folder: Path, n: int, size: int = 72, classes: tuple[str, ...] = ()) -> list[Path]:
    """n small, distinct synthetic photos (optionally in ImageNet wnid class folders)."""
    rng = np.random.default_rng(0)
    paths = []
    for k in range(n):
        sub = folder / classes[k % len(classes)] if classes else folder
        sub.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((size + k % 5, size), Image.BILINEAR)
        path = sub / f"img_{k:05d}.png"
        img.save(path)
        paths.append(path)
    return paths


SCRIPT = """
import sys, titok_cli
from titok_cli.encode_job import encode_files
tok = titok_cli.load_tokenizer(sys.argv[1])
encode_files([sys.argv[2]], sys.argv[3], tok, batch_size=int(sys.argv[4]), workers=int(sys.argv[5]))
"""


def run_encode(model: Path, src: Path, out: Path, batch: int = 4, workers: int = 0, **popen) -> subprocess.Popen:
    env = {**os.environ, "TITOK_COMMIT_SECONDS": "0", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(model), str(src), str(out), str(batch), str(workers)],
                            env=env, **popen)  # fmt: skip


@pytest.mark.slow
def test_killed_encode_resumes_to_identical_output(golden, tmp_path):
    model = golden / "tok_vq_legacy_tiny"
    src = tmp_path / "imgs"
    make_images(src, 300)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n junk")
    ref = tmp_path / "ref" / "tokens.npy"
    assert run_encode(model, src, ref).wait() == 0

    out = tmp_path / "run" / "tokens.npy"
    proc = run_encode(model, src, out, batch=2)
    state = out.parent / "tokens.npy.partial" / "rank-00000-of-00001" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline:
        if state.exists() and json.loads(state.read_text())["rows"] >= 40:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed = json.loads(state.read_text())
    assert not out.exists(), "killed run must not leave a final output"
    assert 0 < committed["rows"] < 300, committed
    # garbage after the commit point (a half-written batch) must be dropped on resume
    with open(state.parent / "tokens.bin", "ab") as fh:
        fh.write(b"\xff" * 5)

    assert run_encode(model, src, out).wait() == 0
    assert out.read_bytes() == ref.read_bytes()
    assert manifest_path(out).read_bytes() == manifest_path(ref).read_bytes()
    assert not (out.parent / "tokens.npy.partial").exists()
    tf = load_tokens(out)
    assert len(tf.tokens) == 300 and tf.failures == [{"path": "broken.png", "reason": "not an image (cannot identify format)"}]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--hflip"]], ids=["plain", "hflip"])
def test_torchrun_two_ranks_match_single_process(golden, tmp_path, extra):
    pytest.importorskip("torch.distributed")
    model = golden / "tok_vq_legacy_tiny"
    src = tmp_path / "imgs"
    make_images(src, 37, classes=("n01440764", "n02099601"))
    (src / "n01440764" / "zero.png").write_bytes(b"")
    single = tmp_path / "single" / "tokens.npz"
    multi = tmp_path / "multi" / "tokens.npz"
    # one thread per process in both runs, so float rounding is the same everywhere
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TITOK_DIST_BACKEND": "gloo", "OMP_NUM_THREADS": "1"}
    # the command users run: `titok encode` (python -m titok_cli), alone and under torchrun
    args = ["encode", str(src), "--model", str(model), "--device", "cpu", "-b", "5", "-q", *extra, "-o"]
    one = [sys.executable, "-m", "titok_cli", *args, str(single)]
    assert subprocess.run(one, env=env, timeout=300).returncode == 1  # one bad file: exit 1, as documented
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29577",
           "-m", "titok_cli", *args, str(multi)]  # fmt: skip
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "zero.png: empty file" in res.stderr, res.stderr[-3000:]
    assert multi.read_bytes() == single.read_bytes()
    assert manifest_path(multi).read_bytes() == manifest_path(single).read_bytes()
    tf = load_tokens(multi)
    assert tf.labels is not None and set(tf.labels.tolist()) == {0, 207}
    assert (tf.tokens_hflip is not None) == bool(extra)
    assert tf.names[0].startswith("n01440764/") and len(tf.failures) == 1


def test_webdataset_shards_match_folder(golden, tmp_path, images_dir):
    pytest.importorskip("webdataset")
    model = golden / "tok_vq_tiny"
    tok = titok_cli.load_tokenizer(model)
    photos = sorted(images_dir.iterdir())
    shards = tmp_path / "shards"
    shards.mkdir()
    for s in range(2):
        with tarfile.open(shards / f"train-{s:06d}.tar", "w") as tar:
            for k, p in enumerate(photos[s::2]):
                key = f"sample{s}{k:03d}"
                tar.add(p, arcname=f"{key}{p.suffix}")
                cls = tmp_path / "cls"
                cls.write_text(str(10 * s + k))
                tar.add(cls, arcname=f"{key}.cls")
    out = tmp_path / "wds.npy"
    res = encode_files([str(shards / "train-{000000..000001}.tar")], out, tok)
    assert res.count == len(photos) and not res.failures
    tf = load_tokens(out)
    order = photos[0::2] + photos[1::2]
    folder_out = tmp_path / "folder.npy"
    encode_files([str(p) for p in order], folder_out, tok)
    np.testing.assert_array_equal(tf.tokens, load_tokens(folder_out).tokens)
    assert tf.names[0] == "sample0000.png" and tf.labels.tolist() == [0, 1, 2, 3, 10, 11, 12]


def test_shards_split_rows(golden, tmp_path):
    tok = titok_cli.load_tokenizer(golden / "tok_vq_tiny")
    src = tmp_path / "imgs"
    make_images(src, 11)
    whole = tmp_path / "whole.npy"
    encode_files([src], whole, tok)
    res = encode_files([src], tmp_path / "sharded" / "tok.npy", tok, shard_size=4)
    assert [p.name for p in res.outputs] == ["tok-000000.npy", "tok-000001.npy", "tok-000002.npy"]
    parts = [load_tokens(p) for p in res.outputs]
    np.testing.assert_array_equal(np.concatenate([p.tokens for p in parts]), load_tokens(whole).tokens)
    assert [p.header["first_row"] for p in parts] == [0, 4, 8]
    assert sum(len(p.names) for p in parts) == 11


def test_changed_inputs_refuse_to_resume(golden, tmp_path):
    from titok_cli.errors import TitokError

    tok = titok_cli.load_tokenizer(golden / "tok_vq_tiny")
    src = tmp_path / "imgs"
    make_images(src, 3)
    stale = tmp_path / "t.npy.partial" / "rank-00000-of-00001"
    stale.mkdir(parents=True)
    (stale / "state.json").write_text(json.dumps({"fingerprint": "other", "next_index": 1}))
    with pytest.raises(TitokError, match="unfinished run"):
        encode_files([src], tmp_path / "t.npy", tok)


def test_webdataset_output_shards(golden, tmp_path):
    wds = pytest.importorskip("webdataset")
    tok = titok_cli.load_tokenizer(golden / "tok_vq_tiny")
    src = tmp_path / "imgs"
    make_images(src, 7, classes=("n01440764", "n02099601"))
    ref = tmp_path / "ref.npy"
    encode_files([src], ref, tok)
    res = encode_files([src], tmp_path / "wds" / "train.tar", tok, shard_size=4)
    assert [p.name for p in res.outputs] == ["train-000000.tar", "train-000001.tar"]
    samples = list(wds.WebDataset([str(p) for p in res.outputs], shardshuffle=False, empty_check=False))
    assert len(samples) == 7
    import io as _io
    import json as _json

    tokens = np.stack([np.load(_io.BytesIO(s["tokens.npy"])) for s in samples])
    np.testing.assert_array_equal(tokens, load_tokens(ref).tokens)
    meta = [_json.loads(s["json"]) for s in samples]
    assert [m["path"] for m in meta] == load_tokens(ref).names
    assert meta[0]["label"] == 0 and samples[0]["__key__"] == "n01440764/img_00000"
    assert manifest_path(res.outputs[0]).exists()
