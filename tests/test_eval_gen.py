"""`titok eval gen`: gFID, IS and precision/recall of golden-generator samples against real photos.

The FID Inception runs on seeded random weights (tests/eval_data.py); every number is checked
against an independent computation on the same images: one forward of the whole set through the
network, the statistics in numpy, the Inception Score written out in numpy, and the quality
module's precision/recall.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import titok_cli
from titok_cli.eval_gen import evaluate_gen
from titok_cli.quality.fid import frechet_distance, precision_recall
from titok_cli.quality.inception import FIDInceptionV3
from titok_cli.sample_job import sample_to_npz

from .eval_data import photo_images, write_photo_reference, write_random_inception
from .test_bad_inputs import titok

ROOT = Path(__file__).resolve().parents[1]
SPLIT = 4  # Inception Score chunk size in these tests: two chunks (4 + 2) of the 6 samples


@pytest.fixture(scope="module")
def data(golden, images_dir, tmp_path_factory):
    """Random Inception weights, the photo reference (7 images) and 6 samples of the golden generator."""
    root = tmp_path_factory.mktemp("eval_gen")
    gen = titok_cli.load_generator(golden / "gen_vit_tiny")
    tok = titok_cli.load_tokenizer(golden / "tok_vq_legacy_tiny")
    samples = root / "samples.npz"
    sample_to_npz(gen, tok, samples, range(3), 2, gen.sampling_params(), batch_size=4, seed=3)
    return {"weights": write_random_inception(root / "inception.pth"),
            "ref": write_photo_reference(images_dir, root / "ref.npz"), "samples": samples, "root": root}  # fmt: skip


def _softmax_is(logits: np.ndarray) -> float:
    """exp(mean KL(p(y|x) || p(y))) of one chunk, in float64 numpy."""
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    marginal = p.mean(axis=0, keepdims=True)
    return float(np.exp((p * (np.log(p) - np.log(marginal))).sum(axis=1).mean()))


@pytest.fixture(scope="module")
def independent(data, images_dir):
    """The metrics computed without titok_cli.eval_gen: whole sets through the network at once."""
    net = FIDInceptionV3()
    net.load_state_dict(torch.load(data["weights"], weights_only=True))
    net.eval()
    with np.load(data["samples"]) as f:
        samples = f["arr_0"]
    photos = photo_images(images_dir)
    with torch.inference_mode():
        s = net(torch.from_numpy(samples).permute(0, 3, 1, 2).float() / 255)
        r = net(torch.from_numpy(photos).permute(0, 3, 1, 2).float() / 255)
    sf, rf = s.features.double().numpy(), r.features.double().numpy()
    fid = frechet_distance(sf.mean(0), np.cov(sf, rowvar=False), rf.mean(0), np.cov(rf, rowvar=False))
    chunks = [_softmax_is(s.logits.numpy()[i : i + SPLIT]) for i in range(0, len(samples), SPLIT)]
    precision, recall = precision_recall(r.features, s.features)
    return {"fid": fid, "is": (np.mean(chunks), np.std(chunks)), "is_whole": _softmax_is(s.logits.numpy()), "precision": precision, "recall": recall,
            "ref_features": rf, "sample_features": sf, "n_samples": len(samples), "n_ref": len(photos)}  # fmt: skip


@pytest.fixture(scope="module")
def library_result(data):
    return evaluate_gen(data["samples"], data["ref"], inception=data["weights"], batch_size=4, device="cpu",
                        is_split_size=SPLIT)  # fmt: skip


def test_metrics_equal_an_independent_computation(library_result, independent):
    r = library_result
    assert r.sample_count == independent["n_samples"] == 6 and r.reference_count == independent["n_ref"] == 7
    assert r.fid == pytest.approx(independent["fid"], rel=1e-6) and r.fid > 1e-3
    assert (r.inception_score, r.inception_score_std) == pytest.approx(independent["is"], rel=1e-6)
    assert r.inception_score_std > 0  # two chunks that differ
    assert (r.precision, r.recall) == (independent["precision"], independent["recall"])
    assert r.reference_holds == "images" and r.reference_stats_from == "images" and r.notes == ()
    assert r.protocol["resize"].startswith("299x299 bilinear") and r.protocol["dtype"].startswith("float32")


def test_stats_reference_gives_the_same_fid_as_its_images(data, independent, library_result, capsys):
    feats = independent["ref_features"]
    stats_ref = data["root"] / "ref_stats.npz"
    np.savez(stats_ref, mu=feats.mean(0), sigma=np.cov(feats, rowvar=False))
    out = data["root"] / "stats_results.json"
    res = titok(capsys, "eval", "gen", data["samples"], "--ref", stats_ref, "--inception", data["weights"], "-b", 4,
                "--device", "cpu", "-o", out)  # fmt: skip
    assert res.code == 0, res.err
    doc = json.loads(out.read_text())
    assert doc["fid"] == pytest.approx(library_result.fid, rel=1e-9)
    assert doc["precision"] is None and doc["recall"] is None
    assert doc["reference_holds"] == "statistics" and doc["reference_count"] is None
    assert doc["notes"] == ["precision/recall need reference images: ref_stats.npz holds only mu/sigma"]
    # the table on stdout, the note on stderr
    assert f"{doc['fid']:.4f}" in res.out and "Inception Score" in res.out and f"results -> {out}" in res.out
    assert "precision/recall need reference images" in res.err


@pytest.mark.slow
def test_reference_with_images_and_stats_uses_stats_for_fid(data, independent, library_result):
    """As ADM: FID from the stored mu/sigma, precision/recall from the images."""
    from titok_cli.eval_gen import FeatureExtractor, evaluate_samples, load_reference

    feats = independent["ref_features"]
    both = data["root"] / "ref_both.npz"
    with np.load(data["ref"]) as f:
        np.savez(both, arr_0=f["arr_0"], mu=feats.mean(0) + 0.5, sigma=np.cov(feats, rowvar=False))
    extractor = FeatureExtractor.load(data["weights"], batch_size=4)
    shifted = evaluate_samples(data["samples"], load_reference(both, extractor), extractor, is_split_size=SPLIT)
    assert shifted.reference_holds == "images and statistics" and shifted.reference_stats_from == "file"
    sf = independent["sample_features"]
    expected = frechet_distance(sf.mean(0), np.cov(sf, rowvar=False), feats.mean(0) + 0.5, np.cov(feats, rowvar=False))
    assert shifted.fid == pytest.approx(expected, rel=1e-6) and abs(shifted.fid - library_result.fid) > 1
    assert (shifted.precision, shifted.recall) == (library_result.precision, library_result.recall)


def test_expect_mismatch_is_refused_before_any_work(data, capsys):
    res = titok(capsys, "eval", "gen", data["samples"], "--ref", data["ref"], "--expect", 50000,
                "--inception", data["root"] / "absent.pth")  # fmt: skip
    assert res.code == 1 and len(res.err_lines) == 1
    assert res.err_lines[0] == (f"error: {data['samples']} holds 6 images, but --expect says 50,000: "
                                "the archive is incomplete or from another run")  # fmt: skip


def _npy(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=False)
    return buf.getvalue()


def _pickled_npy() -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.array([None, 1], dtype=object), allow_pickle=True)
    return buf.getvalue()


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return path


def test_malformed_archives_give_one_line_and_exit_1(data, tmp_path, capsys):
    good = np.zeros((5, 8, 8, 3), np.uint8)
    cases = {
        "not_a_zip.npz": (lambda p: p.write_bytes(b"this is no zip archive"), "not an .npz archive"),
        "floats.npz": (lambda p: _zip(p, {"arr_0.npy": _npy(good.astype(np.float32))}), "must hold uint8 pixels"),
        "gray.npz": (lambda p: _zip(p, {"arr_0.npy": _npy(good[..., 0])}), "must have shape (N, H, W, 3)"),
        "truncated.npz": (lambda p: _zip(p, {"arr_0.npy": _npy(good)[:-50]}), "arr_0 is truncated"),
        "stats_only.npz": (lambda p: _zip(p, {"mu.npy": _npy(np.zeros(4)), "sigma.npy": _npy(np.eye(4))}),
                           "holds no images (arr_0), only mu/sigma"),  # fmt: skip
        "other.npz": (lambda p: _zip(p, {"images.npy": _npy(good)}), "holds neither arr_0"),
        "objects.npz": (lambda p: _zip(p, {"arr_0.npy": _pickled_npy()}), "found object"),
        "missing.npz": (lambda p: None, "no such file"),
    }
    for name, (make, expected) in cases.items():
        path = tmp_path / name
        make(path)
        res = titok(capsys, "eval", "gen", path, "--ref", data["ref"], "--inception", data["weights"])
        assert res.code == 1 and len(res.err_lines) == 1, (name, res.err)
        assert res.err_lines[0].startswith(f"error: {path}") and expected in res.err_lines[0], (name, res.err)
    # a malformed reference is named the same way
    res = titok(capsys, "eval", "gen", data["samples"], "--ref", tmp_path / "floats.npz", "--inception", data["weights"])
    assert res.code == 1 and res.err_lines == [f"error: {tmp_path / 'floats.npz'}: arr_0 must hold uint8 pixels, "
                                               "found float32"]  # fmt: skip


def test_missing_inception_weights_offline(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    res = titok(capsys, "eval", "gen", data["samples"], "--ref", data["ref"])
    assert res.code == 1 and len(res.err_lines) == 1
    assert "pt_inception-2015-12-05-6726825d.pth" in res.err and "--inception" in res.err


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process(data, library_result, independent, tmp_path):
    pytest.importorskip("torch.distributed")
    out = tmp_path / "results.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TITOK_DIST_BACKEND": "gloo", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29583", "-m",
           "titok_cli", "eval", "gen", str(data["samples"]), "--ref", str(data["ref"]), "--inception",
           str(data["weights"]), "-b", "4", "--device", "cpu", "--json", "-o", str(out)]  # fmt: skip
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert json.loads(res.stdout) == doc  # rank 0 alone printed
    one = library_result.as_json()
    assert doc["fid"] == pytest.approx(one["fid"], rel=1e-6)
    assert doc["inception_score"] == pytest.approx(independent["is_whole"], rel=1e-6)  # one chunk of 5000
    assert doc["inception_score_std"] == 0
    assert (doc["precision"], doc["recall"], doc["sample_count"]) == (one["precision"], one["recall"], 6)
